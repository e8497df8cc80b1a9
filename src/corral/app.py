"""corral's library API: what the CLI calls, and what scripts and tests can call directly.

Each function takes the spec path and returns plain values; nothing here prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.build import BuildResult, build_fleet
from corral.build.bake import LABEL
from corral.deploy import gc as fleet_gc
from corral.deploy import orchestrate, service
from corral.deploy import reconcile as fleet_reconcile
from corral.deploy import status as fleet_status
from corral.deploy import volumes as fleet_volumes
from corral.deploy.context import FLEET_EDGE_KEY
from corral.deploy.desired import Desired
from corral.deploy.gc import Collected
from corral.deploy.orchestrate import Approve, DeployResult, Hook, refuse
from corral.deploy.outcome import ReleaseFailed
from corral.deploy.reconcile import Reconciled as Reconciled
from corral.deploy.scope import Scope
from corral.deploy.service import Context, PlanResult
from corral.deploy.status import FleetStatus, HistoryEntry
from corral.deploy.volumes import Deletion as Deletion
from corral.deploy.volumes import VolumeList, check_deletion
from corral.edge.container import adopt_runtime_folder
from corral.engines import Engine, get_engine
from corral.errors import CorralError, Diagnostic, GateError, LockedError, UsageError
from corral.progress import NullProgress, Progress
from corral.scrub import Scrubber
from corral.spec import LoadedSpec, load_spec
from corral.spec.model import Role
from corral.state import AuditEntry, ImageRecord, State
from corral.state.location import take_over_legacy
from corral.testing import suite


@dataclass(frozen=True)
class Validation:
    spec: LoadedSpec
    warnings: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class Sbom:
    fleet: str
    role: str
    version: str
    image_id: str
    packages: tuple[tuple[str, str], ...]  # (name, version)


def validate(path: Path) -> Validation:
    """Load and check the spec at ``path``; warnings are advice, not errors.

    Raises:
        SpecError: with every problem found, each located by file:line:column.
    """
    spec = load_spec(path)
    warnings = [
        Diagnostic(str(spec.path), 0, 0, f"roles.{name}.tests", "this role has no tests of its own")
        for name, role in spec.fleet.roles.items()
        if not role.tests
    ]
    warnings += [
        Diagnostic(str(spec.path), 0, 0, f"roles.{name}.replicas", _lone_replica(role))
        for name, role in spec.fleet.roles.items()
        if role.replicas == 1 and role.volumes
    ]
    return Validation(spec, tuple(warnings))


def _lone_replica(role: Role) -> str:
    """Why one replica with data is worth a word: there is no redundancy."""
    if not role.single_writer:
        return "one replica with data on volumes: no redundancy if it fails"
    return (
        f"one replica with data on single-writer volume(s) {', '.join(role.single_writer)}: "
        "no redundancy, and it is replaced stop-first, so nothing serves while it is "
        "replaced (`corral plan` says for how long)"
    )


def scrubber(spec: LoadedSpec) -> Scrubber:
    """What removes the fleet's secrets from everything corral stores or prints: the
    values the names in its roles' ``run.secrets`` have in corral's environment."""
    names = {name for role in spec.fleet.roles.values() for name in role.run.secrets}
    return Scrubber.from_environ(names)


def output_scrubber(path: Path) -> Scrubber:
    """:func:`scrubber` of the spec at ``path``; one that knows no values if the spec
    cannot be loaded (its problems are reported by the command itself)."""
    try:
        return scrubber(load_spec(path))
    except CorralError:
        return Scrubber()


@contextmanager
def open_state(spec: LoadedSpec, progress: Progress | None = None) -> Iterator[State]:
    """The fleet's state (see :mod:`corral.state.location`), open until the block ends.

    A ``.corral/state.db`` an earlier corral kept beside the spec is taken over first,
    once: the message goes to ``progress``, or to stderr for a command without one (it
    is the one thing corral says only once), and to the audit trail.

    Raises:
        StateError: the state cannot be opened, or two histories would have to merge.
    """
    location = spec.state_location
    moved = take_over_legacy(location)
    state = State.open(location.target, scrubber=scrubber(spec))
    try:
        if moved is not None:
            # The edge an earlier corral started keeps its sockets in a folder named after
            # that state's path: it becomes the fleet's folder, and the edge stays reachable.
            adopt_runtime_folder(
                Scope(spec.fleet.fleet).prefix, str(location.legacy), FLEET_EDGE_KEY
            )
            _tell(progress, moved)
            details = {"from": str(location.legacy), "to": location.display}
            state.record_audit(spec.fleet.fleet, "state-take-over", "state", "ok", details)
        yield state
    finally:
        state.close()


def _tell(progress: Progress | None, message: str) -> None:
    if progress is None:
        print(f"corral: {message}", file=sys.stderr)
    else:
        progress.step("state", message)


def build(
    path: Path,
    roles: Sequence[str] = (),
    force: bool = False,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> list[BuildResult]:
    """Bake the images of ``roles`` (default: all) of the spec at ``path``."""
    spec = load_spec(path)
    engine = engine or get_engine()
    with open_state(spec, progress) as state, state.lock("build", wait=600, purpose="build"):
        return build_fleet(spec, engine, state, roles, progress, force)


def images(path: Path, role: str | None = None) -> list[ImageRecord]:
    """Every image built for the fleet (or one role), oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.images(spec.fleet.fleet, role)


def sbom(path: Path, role: str, version: str | None = None) -> Sbom:
    """The Debian packages (name, version) in a role's latest (or given) image.

    Raises:
        UsageError: the role has no image yet, or no image with that version.
    """
    records = images(path, role)
    if version is not None:
        records = [r for r in records if r.version == version]
    if not records:
        what = f"version {version} of role {role}" if version else f"role {role}"
        raise UsageError(f"no image of {what} has been built; run: corral build {role}")
    record = records[-1]
    listed = record.labels.get(LABEL + "packages", "")
    packages = tuple(tuple(p.split("=", 1)) for p in listed.split(",") if "=" in p)
    return Sbom(
        record.fleet,
        role,
        record.version,
        record.image_id,
        tuple((name, ver) for name, ver in packages),
    )


def audit(path: Path, limit: int = 100) -> list[AuditEntry]:
    """The newest ``limit`` audit entries of the fleet, oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.audit_log(spec.fleet.fleet, limit=limit)


# -- deploy -------------------------------------------------------------------------------


@contextmanager
def _audited(ctx: Context, action: str, target: str = "fleet") -> Iterator[None]:
    """Audit ``action`` as refused or failed when it raises a CorralError; releases that
    failed are audited where they are recorded (``service``), not twice."""
    try:
        yield
    except ReleaseFailed:
        raise
    except CorralError as exc:
        refused = isinstance(exc, GateError | UsageError | LockedError)  # nothing changed
        outcome = "refused" if refused else "failed"
        details = {"error": exc.message, "error_kind": exc.kind}
        ctx.state.record_audit(ctx.scope.fleet, action, target, outcome, details)
        raise


@contextmanager
def _deploying(path: Path, progress: Progress | None, engine: Engine | None) -> Iterator[Context]:
    spec = load_spec(path)
    with open_state(spec, progress) as state:
        yield Context(spec, engine or get_engine(), state, progress or NullProgress())


def plan(path: Path, roles: Sequence[str] = (), engine: Engine | None = None) -> PlanResult:
    """What ``deploy`` would change; builds nothing and changes nothing."""
    with _deploying(path, None, engine) as ctx:
        return service.plan(ctx, roles)


def _checks(
    ctx: Context, skip_tests: str | None, roles: Sequence[str] | None, smoke_test: bool = True
) -> orchestrate.Checks:
    """The test gate before a deploy and the smoke test after it.

    ``roles`` are the roles a deploy builds from the spec (empty: all of them); the others
    come from a release record (None: a rollback, where all do) and are gated as recorded.
    """
    smoke = smoke_test and not skip_tests

    def recorded(desired: Desired) -> set[str]:
        if roles is None:
            return set(desired)
        return set(desired) - set(roles) if roles else set()

    return orchestrate.Checks(
        before=lambda desired: suite.gate(ctx, desired, skip_tests, smoke, recorded(desired)),
        after=(lambda desired: suite.smoke(ctx, desired)) if smoke else orchestrate.no_check,
    )


def deploy(
    path: Path,
    roles: Sequence[str] = (),
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
    skip_tests: str | None = None,
    hooks: Sequence[Hook] = (),
    approve: Approve = refuse,
) -> DeployResult:
    """Build what changed, check the test gate, then replace instances until the fleet runs
    the spec, and smoke-test the live edge.

    Args:
        skip_tests: deploy untested images anyway; the reason goes to the audit log.
        hooks: called with the plan after the gate, before anything changes (see
            ``orchestrate.Planned``); one that raises refuses the deploy.
        approve: asked whether the plan's data concerns (a role with data shrunk to 0 or
            removed, a volume going to another role) may go ahead; refuses by default.

    Raises:
        LockedError: another deploy holds the lock (after ``wait`` seconds).
        GateError: an image has no passing test record; nothing was changed.
        DeployError: a role failed; the fleet was taken back to the previous release.
    """
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "deploy"),
        ctx.state.lock("deploy", wait=wait, purpose=f"deploy {' '.join(roles) or 'all'}"),
    ):
        suite.sweep_dead_tests(ctx)
        checks = _checks(ctx, skip_tests, roles)
        return orchestrate.deploy(ctx, roles, checks=checks, hooks=hooks, approve=approve)


def rollback(
    path: Path,
    to: int | None = None,
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
    skip_tests: str | None = None,
    hooks: Sequence[Hook] = (),
    approve: Approve = refuse,
) -> DeployResult:
    """Deploy an earlier release again (default: the one before the active one).

    The gate still applies (an earlier release's images passed their tests when they went
    live); the smoke test does not, since today's tests may test what came later.
    """
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "rollback"),
        ctx.state.lock("deploy", wait=wait, purpose=f"rollback to {to or 'previous'}"),
    ):
        checks = _checks(ctx, skip_tests, None, smoke_test=False)
        return orchestrate.rollback(ctx, to, checks=checks, hooks=hooks, approve=approve)


def status(path: Path, engine: Engine | None = None) -> FleetStatus:
    """The fleet as it runs, and what killed deploys left; changes nothing (see ``gc``)."""
    with _deploying(path, None, engine) as ctx:
        return fleet_status.status(ctx)


def gc(path: Path, wait: float = 0, engine: Engine | None = None) -> Collected:
    """Remove what killed deploys and test runs left, under the deploy lock: mark their
    releases aborted, remove their stopped instances, probe containers, orphan stored
    secrets and dead test environments. Never a volume, never a backup.

    Raises:
        LockedError: a deploy holds the lock (after ``wait`` seconds).
    """
    with (
        _deploying(path, None, engine) as ctx,
        _audited(ctx, "gc"),
        ctx.state.lock("deploy", wait=wait, purpose="gc"),
    ):
        tests = suite.sweep_dead_tests(ctx, orphans=True)
        return fleet_gc.collect(ctx, tests)


def run_tests(
    path: Path,
    roles: Sequence[str] = (),
    again: bool = False,
    progress: Progress | None = None,
    timeouts: suite.Timeouts | None = None,
) -> list[suite.RoleTestResult]:
    """Test the images that would be deployed, in a throwaway environment, and record it."""
    with _deploying(path, progress, None) as ctx, _audited(ctx, "test", ",".join(roles) or "all"):
        return suite.run_tests(ctx, roles, again, timeouts or suite.Timeouts())


def coverage_report(path: Path, engine: Engine | None = None) -> list[suite.CoverageRow]:
    """Roles x checks: the last test result of each role's current image, and its age."""
    with _deploying(path, None, engine) as ctx:
        return suite.coverage(ctx)


def history(
    path: Path, limit: int = 50, release: int | None = None, engine: Engine | None = None
) -> list[HistoryEntry]:
    """The newest ``limit`` releases, oldest first, or only ``release`` with its reason;
    changes nothing.

    Raises:
        UsageError: there is no release ``release``.
    """
    with _deploying(path, None, engine) as ctx:
        return fleet_status.history(ctx, limit, release)


def destroy(
    path: Path, engine: Engine | None = None, deletion: Deletion | None = None
) -> list[str]:
    """Remove the fleet's instances, edge and network, and what dead test runs left;
    never a live volume, except those ``deletion`` names, confirms and has a verified
    backup of (see ``deploy/volumes.py``), deleted last.

    Raises:
        DataGuardError: a volume named may not be deleted; nothing was removed.
    """
    with _deploying(path, None, engine) as ctx:
        if deletion and deletion.names:  # refuse before the sweep removes anything
            check_deletion(ctx, deletion)
        suite.sweep_dead_tests(ctx, orphans=True)
        return fleet_status.destroy(ctx, deletion)


def volumes(path: Path, engine: Engine | None = None) -> VolumeList:
    """The fleet's data volumes with size, users, last backup and verified restore, and
    what is wrong with them (``problems()``); changes nothing."""
    with _deploying(path, None, engine) as ctx:
        return fleet_volumes.list_volumes(ctx)


def replace_edge(
    path: Path, progress: Progress | None = None, wait: float = 0
) -> service.EdgeReplaced:
    with (
        _deploying(path, progress, None) as ctx,
        _audited(ctx, "edge-replace", "edge"),
        ctx.state.lock("deploy", wait=wait, purpose="replace the edge"),
    ):
        return service.replace_edge(ctx)


def reconcile(
    path: Path, progress: Progress | None = None, engine: Engine | None = None
) -> Reconciled:
    """One pass of ``corral watch``: replace what died, drifted or was burned, remove
    orphans, towards the active release; skipped when a deploy holds the lock."""
    with _deploying(path, progress, engine) as ctx:
        return fleet_reconcile.reconcile(ctx)


def watch(
    path: Path,
    interval: float = 2.0,
    passes: int | None = None,
    diff_interval: float = 30.0,
    progress: Progress | None = None,
    on_pass: Callable[[Reconciled], None] = lambda r: None,
    on_failure: Callable[[Exception, float], None] = lambda e, s: None,
    engine: Engine | None = None,
) -> None:
    """Reconcile every ``interval`` seconds (``passes`` times; None: until interrupted),
    backing off exponentially while passes fail."""
    with _deploying(path, progress, engine) as ctx:
        watcher = fleet_reconcile.Watcher(ctx, interval, on_pass=on_pass, on_failure=on_failure)
        watcher.run(passes)
