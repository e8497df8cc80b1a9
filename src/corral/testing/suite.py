"""``corral test``: bake, bring up a throwaway environment, check every role, record results.

Results are bound to the exact image digest and to the test key (a hash of the role's test
files and test settings, :mod:`corral.testing.key`), and the deploy gate reads them: the
newest result for that (digest, key) is the one that counts, so nothing untested, and
nothing whose latest run failed, reaches the fleet. A role under test is brought up with
every role it comes ``after`` (transitively), each with at least one instance; only the
roles asked for are tested. Roles are checked in parallel once the environment is up.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from corral.backup.restic import PASSWORD_FILES, PRUNE_PASSWORD_FILE, PRUNE_REPOSITORY
from corral.backup.targets import repository_folder
from corral.deploy.context import Context
from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.instances import live_values, secrets_for_test_run
from corral.deploy.plan import parse_time
from corral.deploy.resolve import bake_edge, bake_images, resolve_desired
from corral.deploy.scope import LABEL
from corral.engines.capabilities import Capability, supports
from corral.errors import DeployError, GateError
from corral.scrub import Scrubber
from corral.state import TestRunRecord
from corral.state.location import KEY_SUFFIX, LEGACY, SIDE_FILES, is_url
from corral.testing import reasons
from corral.testing.environment import TestEnvironment, environment, sweep
from corral.testing.key import changed_parts, key_data, key_parts, test_key
from corral.testing.lockdown import lockdown_checks
from corral.testing.runner import CHECK_KINDS, CheckResult, PytestOutcome, run_role_tests

SMOKE_TIMEOUT = 120.0
#: Instances whose lockdown is checked at once (each check waits on a command inside).
LOCKDOWN_WORKERS = 4


@dataclass(frozen=True)
class Timeouts:
    per_test: float = 60.0
    total: float = 600.0


@dataclass(frozen=True)
class RoleTestResult:
    role: str
    image_version: str
    image_digest: str
    outcome: str  # passed | failed | already-passed (this digest, these tests: not run again)
    checks: tuple[CheckResult, ...]
    seconds: float
    log_excerpt: str = ""


# A role whose digest passed under the same tests is not run again: its result says so.
# "skipped" read as if its tests had been skipped.
ALREADY_PASSED = "already-passed"


def owners_folder(ctx: Context) -> Path:
    return ctx.spec.state_location.files / "tests"


def sweep_dead_tests(ctx: Context, orphans: bool = False) -> list[str]:
    """Tear down what test runs killed before their clean-up left behind."""
    return sweep(ctx.engine, ctx.scope.fleet, owners_folder(ctx), orphans)


def run_tests(
    ctx: Context,
    roles: Sequence[str] = (),
    again: bool = False,
    timeouts: Timeouts = Timeouts(),
) -> list[RoleTestResult]:
    """Test the images that would be deployed for ``roles`` (default: all).

    The roles they come ``after`` are built and brought up too, but not tested.
    """
    sweep_dead_tests(ctx)
    needed = spec_dependencies(ctx, roles) if roles else []
    baked = bake_images(ctx, needed)  # the bake stage, then what would be deployed
    desired = resolve_desired(ctx, needed, baked=baked).desired
    wanted = [name for name in (roles or list(desired)) if name in desired]
    keys = {name: role_test_key(ctx, name) for name in wanted}
    done = {name: _already_passed(ctx, desired[name], keys[name]) for name in wanted}
    todo = [name for name in wanted if done[name] is None or again]
    results = [done[name] for name in wanted if name not in todo]
    if todo:
        results += _run_environment(ctx, desired, todo, timeouts, keys)
    return sorted((r for r in results if r is not None), key=lambda r: r.role)


def role_test_key(ctx: Context, name: str) -> str:
    """The test key of role ``name`` as the spec declares it (see corral.testing.key)."""
    fleet = ctx.spec.fleet
    return test_key(ctx.spec.root, name, fleet.roles[name], fleet.live_secrets_in_tests)


def role_key_parts(ctx: Context, name: str) -> dict[str, str]:
    """The parts of role ``name``'s test key, each hashed (see ``key_parts``)."""
    fleet = ctx.spec.fleet
    role = fleet.roles[name]
    return key_parts(key_data(ctx.spec.root, name, role, fleet.live_secrets_in_tests))


def spec_dependencies(ctx: Context, roles: Sequence[str]) -> list[str]:
    """``roles`` and every spec role they come ``after``, transitively, in the order found."""
    found: list[str] = []
    stack = list(roles)
    while stack:
        name = stack.pop(0)
        if name in found or name not in ctx.spec.fleet.roles:
            continue
        found.append(name)
        stack += list(ctx.spec.fleet.roles[name].after)
    return found


def _already_passed(ctx: Context, rr: RoleRelease, key: str) -> RoleTestResult | None:
    record = ctx.state.test_run_for_key(ctx.scope.fleet, rr.role, rr.image_digest, key)
    if record is None or verdict(record, rr.tests) is not None:
        return None  # never run, failed last, or an old "passed" that ran no test: run it
    return RoleTestResult(
        rr.role,
        rr.image_version,
        rr.image_digest,
        ALREADY_PASSED,
        (),
        0.0,
        f"already passed at {record.started_at}; use --again to re-run",
    )


def _with_dependencies(desired: Desired, roles: Sequence[str]) -> dict[str, RoleRelease]:
    """The roles to test plus every role they come ``after``, transitively, as a test
    environment runs them: a role with ``replicas: 0`` gets one instance, so it can be
    tested (and serve a role that needs it) like any other."""
    needed: set[str] = set()
    stack = list(roles)
    while stack:
        name = stack.pop()
        if name in needed or name not in desired:
            continue
        needed.add(name)
        stack += list(desired[name].after)
    return {name: _at_least_one(desired[name]) for name in needed}


def _at_least_one(rr: RoleRelease) -> RoleRelease:
    return rr if rr.replicas > 0 else rr.model_copy(update={"replicas": 1})


def _run_environment(
    ctx: Context,
    desired: Desired,
    roles: Sequence[str],
    timeouts: Timeouts,
    keys: Mapping[str, str],
) -> list[RoleTestResult]:
    subset = _with_dependencies(desired, roles)
    declared = [name for role in roles for name in _test_secrets(ctx, role)]
    secrets = secrets_for_test_run(subset, declared, ctx.spec.fleet.live_secrets_in_tests)
    baked = bake_edge(ctx, subset)
    image = baked.image_id if baked else None
    started = time.monotonic()
    with environment(
        ctx.engine, ctx.scope.fleet, owners_folder(ctx), ctx.spec.root, ctx.progress
    ) as env:
        ctx.progress.step("test", f"bringing up {env.scope.env} ({', '.join(sorted(subset))})")
        for name in sorted(set(subset) - set(roles)):
            ctx.progress.step(name, "brought up for the roles that come after it; not tested")
        failures = _bring_up(env, subset, secrets, image)
        bring_up = time.monotonic() - started
        with ThreadPoolExecutor(max_workers=max(1, len(roles))) as pool:
            futures = [
                pool.submit(
                    _check_role,
                    ctx,
                    env,
                    subset[name],
                    failures.get(name),
                    _Run(timeouts, bring_up, {k: secrets[k] for k in _test_secrets(ctx, name)}),
                )
                for name in roles
            ]
        results = [_scrubbed(f.result(), ctx.state.scrubber) for f in futures]
    for result in results:
        _record(ctx, desired[result.role], result, keys[result.role])
    return results


def _scrubbed(result: RoleTestResult, scrubber: Scrubber) -> RoleTestResult:
    """``result`` as it is stored and shown: its checks' messages and log without secrets
    (the tests may print what they were given)."""
    checks = tuple(dataclasses.replace(c, message=scrubber.text(c.message)) for c in result.checks)
    log = scrubber.text(result.log_excerpt)
    return dataclasses.replace(result, checks=checks, log_excerpt=log)


def _bring_up(
    env: TestEnvironment, desired: Desired, secrets: Mapping[str, str], image: str | None
) -> dict[str, DeployError]:
    """Start the environment; return the roles that failed to come up, with why."""
    try:
        env.up(desired, dict(secrets), image)
    except DeployError as exc:
        by_role = {f.role: f for f in exc.failures or (exc,) if f.role is not None}
        return by_role or {name: exc for name in desired}
    return {}


def _test_secrets(ctx: Context, role: str) -> tuple[str, ...]:
    """The secrets ``role``'s own tests receive (its ``test_secrets``): none by default."""
    spec = ctx.spec.fleet.roles.get(role)
    return spec.test_secrets if spec is not None else ()


@dataclass(frozen=True)
class _Run:
    """What every role's check in one test run shares."""

    timeouts: Timeouts
    bring_up: float  # seconds the environment took to come up
    variables: Mapping[str, str] = field(default_factory=dict, repr=False)  # for the tests


def _check_role(
    ctx: Context,
    env: TestEnvironment,
    rr: RoleRelease,
    failure: DeployError | None,
    run: _Run,
) -> RoleTestResult:
    timeouts, bring_up = run.timeouts, run.bring_up
    started = time.monotonic()
    if failure is not None or not env.describe(rr)["instances"]:
        reason = failure.message if failure else "no instance came up (a role it needs failed)"
        log = "\n".join(failure.log) if failure else ""
        check = CheckResult("health", "health", "failed", bring_up, reason)
        return RoleTestResult(
            rr.role, rr.image_version, rr.image_digest, "failed", (check,), bring_up, log
        )
    checks = [CheckResult("health", "health", "passed", bring_up, "healthy from outside")]
    names = [str(i["name"]) for i in env.describe(rr)["instances"]]
    # The lockdown checks wait on the engine (a command in each instance): they run
    # beside each other and beside the role's tests, a few at a time.
    with ThreadPoolExecutor(max_workers=LOCKDOWN_WORKERS) as pool:
        lockdowns = [pool.submit(lockdown_checks, ctx.engine, name, rr) for name in names]
        outcome = (
            _run_tests(ctx, env.describe(rr), rr, timeouts, "full", run.variables)
            if rr.tests
            else None
        )
        checks += [c for found in lockdowns for c in found.result()]
    log = ""
    if outcome is not None:
        checks += outcome.checks
        log = outcome.log_tail
        if not outcome.ok and not outcome.checks:
            checks.append(
                CheckResult("pytest", "pytest", "error", outcome.seconds, outcome.log_tail[-500:])
            )
        untested = untested_reason(rr.tests, [c.to_dict() for c in checks])
        if untested is not None:  # all skipped or none collected: that is not a pass
            checks.append(CheckResult("pytest", "pytest", "failed", outcome.seconds, untested))
    ok = all(c.outcome in ("passed", "skipped") for c in checks)
    return RoleTestResult(
        rr.role,
        rr.image_version,
        rr.image_digest,
        "passed" if ok else "failed",
        tuple(checks),
        time.monotonic() - started + bring_up,
        log,
    )


def _run_tests(
    ctx: Context,
    env: Mapping[str, object],
    rr: RoleRelease,
    timeouts: Timeouts,
    mode: str,
    variables: Mapping[str, str],
) -> PytestOutcome:
    paths = [ctx.spec.root / t for t in rr.tests]
    can_exec = supports(ctx.engine, Capability.EXEC)
    with tempfile.TemporaryDirectory(prefix="corral-tests-") as tmp:
        return run_role_tests(
            paths,
            env,
            per_test_timeout=timeouts.per_test,
            total_timeout=timeouts.total,
            mode=mode,
            workdir=Path(tmp),
            variables=variables,
            exec_in=ctx.engine.exec_in if can_exec else None,
            open_shell=ctx.engine.shell if can_exec else None,
            hidden=secret_paths(ctx),
        )


def secret_paths(ctx: Context, environ: Mapping[str, str] | None = None) -> list[Path]:
    """What a role's tests must not see even where it lies beside them: the fleet's state
    folder and, one by one (that folder may be the spec's own), the state database and
    its side files, the secret key and test owners, the legacy state folder, the backup
    repository, the prune side's repository and the password files ``environ`` names."""
    env = os.environ if environ is None else environ
    where = ctx.spec.state_location
    found = [where.files, where.files / f"{ctx.scope.fleet}{KEY_SUFFIX}", where.files / "tests"]
    if not where.is_url:
        found += [where.path, *(where.path.with_name(where.path.name + s) for s in SIDE_FILES)]
    found.append(ctx.spec.root / LEGACY.parent)
    repository = repository_folder(ctx)
    if repository is not None:
        found.append(repository)
    if env.get(PRUNE_REPOSITORY) and not is_url(env[PRUNE_REPOSITORY]):
        found.append(Path(env[PRUNE_REPOSITORY].removeprefix("local:")).expanduser())
    for variable in (*PASSWORD_FILES, PRUNE_PASSWORD_FILE):
        if env.get(variable):
            found.append(Path(env[variable]).expanduser())
    return found


def own_tests_ran(checks: Iterable[Mapping[str, object]]) -> bool:
    """Whether at least one of the role's own tests (not health, not lockdown) passed."""
    return any(c.get("kind") in CHECK_KINDS and c.get("outcome") == "passed" for c in checks)


def untested_reason(tests: Sequence[str], checks: Sequence[Mapping[str, object]]) -> str | None:
    """Why a role that lists tests is not tested by these checks, or None if it is.

    A role's tests that were all skipped, or files that collected nothing, prove nothing
    about its image: that is not a pass. A role that lists no tests is not judged here
    (``corral validate`` warns about it). A run where a test failed is failed already.

    Args:
        tests: the role's ``tests:`` entries.
        checks: the run's checks as mappings (``CheckResult.to_dict`` or a stored record).
    """
    own = [c for c in checks if c.get("kind") in CHECK_KINDS]
    if not tests or own_tests_ran(own) or any(c.get("outcome") != "skipped" for c in own):
        return None
    found = f"skipped all {len(own)} of their tests" if own else "collected no test"
    return (
        f"its tests ({', '.join(tests)}) {found}: a role whose tests do not run is not "
        "tested; make them run, or drop tests: from the role (deploying it with a warning)"
    )


def _record(ctx: Context, rr: RoleRelease, result: RoleTestResult, key: str) -> None:
    ctx.state.record_test_run(
        ctx.scope.fleet,
        rr.role,
        rr.image_id,
        rr.image_digest,
        rr.image_version,
        result.outcome,
        [c.__dict__ for c in result.checks],
        result.seconds,
        result.log_excerpt[-4000:],
        test_key=key,
        key_parts=role_key_parts(ctx, rr.role),
    )
    ctx.state.record_audit(
        ctx.scope.fleet,
        "test",
        rr.role,
        result.outcome,
        {
            "version": rr.image_version,
            "digest": rr.image_digest,
            "tests_hash": key[:16],  # the test key's start ("key" reads as a secret)
            **_failure_text(result),
        },
    )


def _failure_text(result: RoleTestResult) -> dict[str, str]:
    """What failed, for the audit entry of a failed run: each failing check and why."""
    failed = [c for c in result.checks if c.outcome in ("failed", "error")]
    if result.outcome != "failed":
        return {}
    why = "; ".join(f"{c.name}: {c.message}" for c in failed) or result.log_excerpt[-500:]
    return {"error": why[:2000]}


# -- the gate and the smoke test ----------------------------------------------------------


def gate(
    ctx: Context,
    desired: Desired,
    skip_reason: str | None,
    smoke: bool = False,
    recorded: Collection[str] = (),
) -> None:
    """Refuse images that are not tested; with ``smoke`` (a smoke test will follow), also
    refuse when a secret it needs is not set, before anything changes rather than after
    the release went live.

    A role built from the spec is tested when the newest run of its exact digest under its
    current test key passed (and ran its tests). A role in ``recorded`` comes from a
    release record (a rollback, or a role a partial deploy keeps as released), whose test
    key at the time is not known: it is tested when a pass of its digest still stands (no
    later run of the same digest and key failed).

    Raises:
        GateError: naming each untested role, why, and the command to run; or the secrets.
    """
    if smoke:
        smoke_variables(ctx, desired)
    why = {rr.role: _why_untested(ctx, rr, rr.role in recorded) for rr in desired.values()}
    untested = [rr for rr in desired.values() if why[rr.role] is not None]
    names = [rr.role for rr in sorted(untested, key=lambda r: r.role)]
    if skip_reason:
        # Recorded even when every image is tested: --skip-tests skips the smoke test too.
        ctx.state.record_audit(
            ctx.scope.fleet,
            "skip-tests",
            ",".join(names) or "smoke-test",
            "ok",
            {
                "reason": skip_reason,
                "versions": {rr.role: rr.image_version for rr in untested},
                "smoke_test": "skipped",
            },
        )
        return
    if not untested:
        return
    detail = "; ".join(f"{rr.role} {rr.image_version}: {why[rr.role]}" for rr in untested)
    raise GateError(
        f"not tested: {detail}; run: corral test "
        f'{" ".join(names)} (or deploy with --skip-tests --reason "...")',
        roles=names,
    )


def _why_untested(ctx: Context, rr: RoleRelease, recorded: bool) -> str | None:
    """Why the gate refuses this image, or None."""
    fleet = ctx.scope.fleet
    if recorded or rr.role not in ctx.spec.fleet.roles:  # no spec to take a key from
        standing = ctx.state.standing_test_pass(fleet, rr.role, rr.image_digest)
        return verdict(standing, rr.tests)
    key = role_test_key(ctx, rr.role)
    record = ctx.state.test_run_for_key(fleet, rr.role, rr.image_digest, key)
    latest = None if record else ctx.state.latest_test_run(fleet, rr.role, rr.image_digest)
    if latest is not None:
        changed = changed_parts(latest.key_parts, role_key_parts(ctx, rr.role))
        what = (
            f"changed since it was last tested: {', '.join(changed)}"
            if latest.key_parts and changed
            else "its test files or test settings changed since it was last tested"
        )
        return f"no passing test record for its current tests and settings ({what})"
    return verdict(record, rr.tests)


def verdict(record: TestRunRecord | None, tests: Sequence[str]) -> str | None:
    """Why ``record`` (the run that counts for an image) does not make it tested, or None.

    Args:
        record: the newest run of the image's digest and test key, or None.
        tests: the role's ``tests:`` entries.
    """
    if record is None:
        return "no passing test record"
    if record.outcome != "passed":
        return f"no passing test record: its newest test run ({record.started_at}) failed"
    # A run recorded as passed before all-skipped runs were failed still proves nothing.
    return untested_reason(tests, record.checks)


def smoke(ctx: Context, desired: Desired) -> None:
    """Run each public role's HTTP tests against the live edge, the roles side by side
    (each run is mostly pytest starting); DeployError on a failure."""
    variables = smoke_variables(ctx, desired)
    tested = [
        (rr, rr.public) for rr in desired.values() if rr.public is not None and rr.role in variables
    ]
    for rr, _ in tested:
        ctx.progress.step(rr.role, "smoke test against the live edge")
    with ThreadPoolExecutor(max_workers=max(1, len(tested))) as pool:
        found = list(pool.map(lambda t: _smoke_role(ctx, t[0], t[1], variables[t[0].role]), tested))
    failures = [failure for failure in found if failure is not None]
    if failures:
        raise DeployError.of_roles(failures)


def _smoke_role(
    ctx: Context, rr: RoleRelease, port: int, variables: Mapping[str, str]
) -> DeployError | None:
    """``rr``'s smoke test through the edge's ``port``: None if it passed, else why not."""
    env = {
        "fleet": ctx.scope.fleet,
        "role": rr.role,
        "mode": "smoke",
        "instances": [],
        "engine": ctx.engine.name,
        "edge_url": ctx.edge.url(port),
    }
    outcome = _run_tests(ctx, env, rr, Timeouts(total=SMOKE_TIMEOUT), "smoke", variables)
    failed = [c for c in outcome.checks if c.outcome in reasons.FAILED]
    if not failed and outcome.ok:
        return None
    logs = _instance_logs(ctx, rr)
    return reasons.smoke_failure(rr.role, outcome.checks, outcome.log_tail, logs)


def _instance_logs(ctx: Context, rr: RoleRelease) -> dict[str, str]:
    """The last lines of each running instance of the release's ``rr`` (one listing)."""
    labels = {**ctx.scope.labels("instance"), LABEL + "role": rr.role}
    found = ctx.engine.list_containers(labels)
    mine = [c.name for c in found if c.image_id == rr.image_id and c.state == "running"]
    return {name: ctx.engine.logs(name, tail=reasons.INSTANCE_LOG_LINES) for name in mine}


def smoke_variables(ctx: Context, desired: Desired) -> dict[str, dict[str, str]]:
    """The secrets each smoke-tested role's tests receive (by role; public roles with
    tests only). A smoke test runs against the live fleet, where a test value means
    nothing: it gets only those of the role's ``test_secrets`` that the spec lists in
    ``live_secrets_in_tests``, with their live values; no others.

    Raises:
        GateError: one of those is not set in corral's environment.
    """
    live = ctx.spec.fleet.live_secrets_in_tests
    advice = "export them before deploying: the smoke test needs them"
    return {
        rr.role: live_values([n for n in _test_secrets(ctx, rr.role) if n in live], advice)
        for rr in desired.values()
        if rr.public is not None and rr.tests
    }


# -- the coverage matrix ------------------------------------------------------------------

KINDS = ("health", "lockdown", "testinfra", "http", "pytest")


@dataclass(frozen=True)
class CoverageRow:
    role: str
    image_version: str | None  # the current image's version, None when not built yet
    has_own_tests: bool
    outcome: str  # passed | failed | untested: what the gate would say of the current image
    cells: Mapping[str, str]  # kind -> "3/3 passed", "1/2 failed", or "-"
    tested_at: str | None
    age_s: int | None
    reason: str | None = None  # why the gate would refuse it; None when it passed


def coverage(ctx: Context) -> list[CoverageRow]:
    """For each role: the run of its *current* image and test key that the gate reads
    (the newest), by kind of check, and the gate's verdict on it."""
    rows = []
    desired = resolve_desired(ctx).desired  # unbuilt roles are missing from it
    for name, role in ctx.spec.fleet.roles.items():
        rr = desired.get(name)
        run: TestRunRecord | None = None
        why: str | None = "not built yet"
        if rr is not None:
            run = ctx.state.test_run_for_key(
                ctx.scope.fleet, name, rr.image_digest, role_test_key(ctx, name)
            )
            why = verdict(run, role.tests)
        rows.append(
            CoverageRow(
                name,
                rr.image_version if rr else None,
                bool(role.tests),
                _outcome(run, why),
                {kind: _cell(run.checks if run else (), kind) for kind in KINDS},
                run.started_at if run else None,
                _age(run.started_at) if run else None,
                why,
            )
        )
    return rows


def _outcome(run: TestRunRecord | None, why: str | None) -> str:
    if run is None:
        return "untested"
    return "passed" if why is None else "failed"


def _cell(checks: Sequence[Mapping[str, object]], kind: str) -> str:
    mine = [c for c in checks if c.get("kind") == kind]
    if not mine:
        return "-"
    passed = sum(1 for c in mine if c.get("outcome") in ("passed", "skipped"))
    return f"{passed}/{len(mine)} " + ("passed" if passed == len(mine) else "failed")


def _age(when: str) -> int | None:
    stamp = parse_time(when)
    return int((datetime.now(UTC) - stamp).total_seconds()) if stamp else None
