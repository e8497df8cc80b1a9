"""Deploy and rollback: build what changed, plan, apply, record the release, undo on failure.

Rollback is a deploy of an earlier release's recorded images and configuration through the
same ``converge`` path; the automatic undo after a failed deploy is the same again.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from corral.deploy.apply import Executor, Journal

# Re-exported: callers imported them from here before the stages had modules of their own.
from corral.deploy.context import GOOD as GOOD
from corral.deploy.context import Context as Context
from corral.deploy.desired import Desired, RoleRelease, desired_from_record
from corral.deploy.fleet import look
from corral.deploy.fleet import observe_fleet as observe_fleet
from corral.deploy.gc import sweep_killed
from corral.deploy.health import network_check, probe_once
from corral.deploy.instances import resolve_secrets
from corral.deploy.observe import Instance, list_scope
from corral.deploy.outcome import Failed, as_deploy_error, fail
from corral.deploy.plan import Plan, plan_deploy, single_writer_conflicts
from corral.deploy.resolve import (
    Resolved,
    bake_edge,
    bake_images,
    edge_image,
    resolve_desired,
    resolve_release,
)
from corral.deploy.secrets import (
    changed_secrets,
    check_unchanged,
    live_values,
    secret_names,
    stamped,
)
from corral.deploy.settle import Watch, settle, settle_time
from corral.errors import CorralError, EngineError, GateError, UsageError
from corral.spec.model import TcpHealth
from corral.state import ReleaseRecord

VERIFY_TRIES, VERIFY_PAUSE = 3, 0.2  # an instance's check before an edge is replaced


@dataclass(frozen=True)
class DeployResult:
    fleet: str
    kind: str  # deploy | rollback
    status: str  # active | failed | unchanged
    release: int | None
    plan: Plan
    message: str = ""
    rolled_back_to: int | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # what the operator should know (a rollback's new secrets)


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    unbuilt: tuple[str, ...]  # roles whose current inputs have no image yet
    unbuilt_volumes: tuple[str, ...] = ()  # volumes a deploy of those roles would create

    @property
    def has_changes(self) -> bool:
        return self.plan.has_changes or bool(self.unbuilt)

    @property
    def volumes_touched(self) -> int:
        """Volumes a deploy would create, the unbuilt roles' included; none is deleted."""
        return self.plan.volumes_touched + len(self.unbuilt_volumes)


def plan(ctx: Context, roles: Sequence[str] = ()) -> PlanResult:
    """What ``deploy`` would change, without building or changing anything."""
    resolved = resolve_desired(ctx, roles)
    values = resolve_secrets(resolved.desired, advice="export them before planning")
    desired = stamped(resolved.desired, set(resolved.desired), values, ctx.secret_key)
    observed = observe_fleet(ctx, desired, edge_image(ctx, desired))
    new_volumes = (
        ctx.scope.volume_name(name, volume)
        for name in resolved.unbuilt
        for volume in sorted(ctx.spec.fleet.roles[name].volumes)
    )
    return PlanResult(
        plan_deploy(ctx.scope, desired, observed, resolved.untouched),
        resolved.unbuilt,
        tuple(v for v in new_volumes if v not in observed.volumes),
    )


def no_check(desired: Desired) -> None:
    pass


@dataclass(frozen=True)
class Checks:
    """What a deploy asks of the test gate; ``corral.testing`` provides the real ones.

    ``before`` runs once the desired images are known and before anything changes (it
    may refuse with GateError); ``after`` runs once the new release serves (a smoke test:
    a DeployError there takes the fleet back like a failed health check).
    """

    before: Callable[[Desired], None] = no_check
    after: Callable[[Desired], None] = no_check


def deploy(
    ctx: Context,
    roles: Sequence[str] = (),
    kind: str = "deploy",
    source: ReleaseRecord | None = None,
    checks: Checks = Checks(),
) -> DeployResult:
    """Bring the fleet to the spec (or, for a rollback, to ``source``'s recorded state)."""
    started = time.monotonic()
    _sweep(ctx)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Reading the fleet and finding (or baking) the images are independent: side by side.
        seeing = pool.submit(look, ctx)
        resolved, edge, built = _wanted(ctx, roles, source)
    desired, untouched = resolved.desired, resolved.untouched
    conflicts = single_writer_conflicts(desired)
    if conflicts:  # only an older corral's release can hold one: the spec refuses them
        raise UsageError(
            "; ".join(conflicts) + ": two instances must never mount a single-writer volume; "
            "deploy a spec that runs one replica or declares the volume shareable"
        )
    # A build takes a while: the fleet is read again after one, so the plan sees it as it is.
    seen = None if built else seeing.result()
    # The roles this deploy is about (a rollback: all) use today's values of their secrets.
    fresh = set(desired) if source is not None or not roles else set(roles) & set(desired)
    secrets = resolve_secrets(desired, fresh)
    desired = stamped(desired, fresh, secrets, ctx.secret_key)
    notes = _rotation_notes(ctx, source, desired)
    plan = plan_deploy(ctx.scope, desired, observe_fleet(ctx, desired, edge, seen), untouched)
    if not plan.has_changes and _same_as_active(ctx, desired):
        return DeployResult(
            ctx.scope.fleet,
            kind,
            "unchanged",
            None,
            plan,
            "nothing to change",
            seconds=time.monotonic() - started,
            notes=notes,
        )
    secrets = {**secrets, **_kept_roles_values(ctx, plan, desired, fresh)}
    checks.before(desired)
    result = converge(ctx, plan, desired, secrets, edge, kind, source, checks.after)
    return dataclasses.replace(result, seconds=time.monotonic() - started, notes=notes)


def _kept_roles_values(
    ctx: Context, plan: Plan, desired: Desired, fresh: set[str]
) -> dict[str, str]:
    """The values a partial deploy needs for the other roles: only those of roles it must
    start an instance of (one died), and only if they are still the recorded ones."""
    starting = [rp.role for rp in plan.roles if rp.start and rp.role not in fresh]
    values = resolve_secrets(desired, starting)
    check_unchanged(desired, starting, values, ctx.secret_key)
    return values


def _rotation_notes(
    ctx: Context, source: ReleaseRecord | None, desired: Desired
) -> tuple[str, ...]:
    """For a rollback: the secrets whose value changed since ``source`` (its instances get
    today's value: old values are never kept), each also said as progress."""
    if source is None:
        return ()
    recorded = desired_from_record(source.roles)
    notes = []
    for name, rr in sorted(desired.items()):
        for secret in changed_secrets(recorded[name], rr) if name in recorded else ():
            note = (
                f"secret {secret} changed since release r{source.number}: {name}'s instances "
                "get today's value (old values are not kept)"
            )
            ctx.progress.step(name, note)
            notes.append(f"{name}: {note}")
    return tuple(notes)


def _wanted(
    ctx: Context, roles: Sequence[str], source: ReleaseRecord | None
) -> tuple[Resolved, str | None, bool]:
    """The bake stage, then the desired state: (what to run, the edge image, whether
    anything was baked). A rollback bakes no role: its images are recorded."""
    if source is None:
        baked = bake_images(ctx, roles)
        resolved = resolve_desired(ctx, roles, baked=baked, keep_released=True)
    else:
        baked, resolved = {}, resolve_release(source)
    edge = bake_edge(ctx, resolved.desired)
    results = [*baked.values(), *([edge] if edge else [])]
    return resolved, edge.image_id if edge else None, any(r.status == "built" for r in results)


def _same_as_active(ctx: Context, desired: Desired) -> bool:
    active = ctx.state.active_release(ctx.scope.fleet)
    if active is None:
        return False
    recorded = desired_from_record(active.roles)
    return {k: v.to_record() for k, v in recorded.items()} == {
        k: v.to_record() for k, v in desired.items()
    }


def converge(
    ctx: Context,
    plan: Plan,
    desired: Desired,
    secrets: Mapping[str, str],
    edge: str | None,
    kind: str,
    source: ReleaseRecord | None,
    after: Callable[[Desired], None] = no_check,
) -> DeployResult:
    """Record a release, apply the plan, and undo everything if any role fails."""
    fleet = ctx.scope.fleet
    previous = ctx.state.active_release(fleet)
    release = ctx.state.start_release(
        fleet,
        kind,
        {k: v.to_record() for k, v in desired.items()},
        source.number if source else None,
    )
    journal = Journal(ctx.state, fleet)
    executor = Executor(
        ctx.engine,
        ctx.scope,
        release.number,
        journal,
        ctx.progress,
        ctx.edge if edge else None,
        secrets,
        key=ctx.secret_key,
    )
    details = {"release": release.number, "kind": kind}
    try:
        executor.apply(plan, desired, edge)
        verify(ctx, desired, 0.0, edge)  # every role at its replicas before the smoke test
        after(desired)
        verify(ctx, desired, settle_time(desired, _changed(plan)), edge)
    except CorralError as exc:
        undo = functools.partial(_undo, ctx, previous, secrets, edge)
        fail(ctx.state, Failed(release, previous, as_deploy_error(exc), kind, undo))
    except BaseException as exc:  # Ctrl-C, or a bug: nothing was decided, nothing undone
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}"
        ctx.state.finish_release(release.id, "aborted", why)
        journal.audit(kind, "fleet", "aborted", {**details, "error": why})
        raise
    ctx.state.finish_release(release.id, "active")
    journal.audit(kind, "fleet", "ok", {**details, "source": source.number if source else None})
    return DeployResult(fleet, kind, "active", release.number, plan)


def _changed(plan: Plan) -> list[str]:
    return [name for wave in plan.waves for name in wave if plan.role(name).changed]


def verify(ctx: Context, desired: Desired, seconds: float, edge: str | None) -> None:
    """Every role at its replicas, serving, for ``seconds`` (once when 0); see ``settle``.

    Raises:
        DeployError: a role fell below its replicas; names the instances and their logs.
    """
    public = sorted(rr.role for rr in desired.values() if rr.public is not None)
    if seconds > 0:
        ctx.progress.step("fleet", f"settling: watching the instances for {seconds:g}s")
    watch = Watch(
        listing=lambda: list_scope(ctx.engine, ctx.scope),
        edge_up=lambda: {role: _up_in_edge(ctx, role) for role in public} if edge else {},
        logs=ctx.engine.logs,
    )
    settle(desired, seconds, watch)


def _up_in_edge(ctx: Context, role: str) -> set[str]:
    return {s.name for s in ctx.edge.servers(role) if s.admin == "ready" and s.operational == "up"}


def _undo(
    ctx: Context, previous: ReleaseRecord | None, secrets: Mapping[str, str], edge: str | None
) -> int | None:
    """Converge back to ``previous`` (or to nothing), through the same planner and executor."""
    ctx.progress.step("fleet", "deploy failed: going back to the previous release")
    desired = desired_from_record(previous.roles) if previous else {}
    observed = observe_fleet(ctx, desired, edge)
    # The failed release is not "good": its instances are replaced by the previous ones.
    plan = plan_deploy(ctx.scope, desired, observed)
    number = previous.number if previous else 0
    first = _next_indexes(observed.instances, number)
    # Instances the undo starts get today's values (old ones are never kept); their
    # labels say so (the executor's key), so the next plan sees what they really hold.
    starting = secret_names(desired, (rp.role for rp in plan.roles if rp.start))
    advice = "export them: going back to the previous release needs them"
    values = {**secrets, **live_values((n for n in starting if n not in secrets), advice)}
    executor = Executor(
        ctx.engine,
        ctx.scope,
        number,
        Journal(ctx.state, ctx.scope.fleet),
        ctx.progress,
        ctx.edge if edge else None,
        values,
        key=ctx.secret_key,
        first_index=first,
    )
    executor.apply(plan, desired, edge)
    return previous.number if previous else None


def _next_indexes(instances: Sequence[Instance], release: int) -> dict[str, int]:
    """Per role, the first free instance index within ``release``."""
    first: dict[str, int] = {}
    for i in instances:
        if i.release == release:
            first[i.role] = max(first.get(i.role, 1), i.index + 1)
    return first


def _sweep(ctx: Context) -> None:
    for release in sweep_killed(ctx):
        ctx.progress.step(
            "fleet", f"release r{release.number} was left unfinished by a killed deploy; converging"
        )


def rollback(ctx: Context, to: int | None = None, checks: Checks = Checks()) -> DeployResult:
    """Deploy an earlier release's images and configuration again.

    Raises:
        UsageError: there is no such release, or no earlier good release.
    """
    fleet = ctx.scope.fleet
    _sweep(ctx)
    target = ctx.state.get_release(fleet, to) if to is not None else _previous_good(ctx)
    if target is None:
        raise UsageError(
            f"no release r{to} of fleet {fleet}"
            if to is not None
            else "no earlier good release to roll back to"
        )
    if target.status not in GOOD:
        raise UsageError(
            f"release r{target.number} is {target.status}; only releases that "
            "went live can be rolled back to"
        )
    missing = [
        rr.image_tag
        for rr in desired_from_record(target.roles).values()
        if ctx.engine.inspect_image(rr.image_id) is None
    ]
    if missing:
        raise UsageError(f"release r{target.number}'s images are gone: {', '.join(missing)}")
    return deploy(ctx, kind="rollback", source=target, checks=checks)


def _previous_good(ctx: Context) -> ReleaseRecord | None:
    releases = ctx.state.releases(ctx.scope.fleet, limit=100000)
    active = next((r for r in releases if r.status == "active"), None)
    earlier = [
        r
        for r in releases
        if r.status == "superseded"
        and (active is None or r.number < active.number)
        and (active is None or r.roles != active.roles)
    ]
    return earlier[-1] if earlier else None


@dataclass(frozen=True)
class EdgeReplaced:
    """What ``corral edge replace`` did: the edge's image, and whether it was reloaded in
    place (no connection refused) or started as a new container."""

    image: str
    reloaded: bool


def replace_edge(ctx: Context) -> EdgeReplaced:
    """Bring the edge to the active release's configuration and the current edge image.

    When only the configuration changed (or nothing did), the running edge reloads it in
    place and no connection is refused. A new image or new ports need a new container:
    before the old one goes, every instance the edge will send requests to must pass the
    check it will get there, from outside; if one does not, the old edge keeps serving.

    Raises:
        UsageError: no role of the active release is public.
        GateError: an instance fails its check; nothing was changed.
        EngineError: the edge refused; a failed reload leaves the old configuration.
    """
    active = ctx.state.active_release(ctx.scope.fleet)
    desired = desired_from_record(active.roles) if active else {}
    baked = bake_edge(ctx, desired)
    image = baked.image_id if baked else None
    if image is None:
        raise UsageError("no role of the active release is public: there is no edge to replace")
    try:
        replaced = _replace_edge(ctx, desired, image)
    except CorralError as exc:
        ctx.state.record_audit(
            ctx.scope.fleet,
            "edge-replace",
            "edge",
            "failed",
            {"image": image, "error": exc.message},
        )
        raise
    details = {"image": image, "reloaded": replaced.reloaded}
    ctx.state.record_audit(ctx.scope.fleet, "edge-replace", "edge", "ok", details)
    return replaced


def _replace_edge(ctx: Context, desired: Desired, image: str) -> EdgeReplaced:
    if ctx.edge.can_reload(desired, image):
        ctx.progress.step("edge", "reloading the edge's configuration in place")
        ctx.edge.reload(desired, image)
        return EdgeReplaced(image, reloaded=True)
    serving = _edge_instances(ctx, desired)
    verify_edge_checks(serving)
    ctx.progress.step("edge", "replacing the edge container (a short interruption)")
    ctx.engine.ensure_network(ctx.scope.network, ctx.scope.labels("network"))
    ctx.edge.start(desired, image)
    failed: list[str] = []
    for rr, instance, address in serving:
        try:
            ctx.edge.add(rr, instance.name, address, timeout=30)
        except CorralError as exc:
            failed.append(f"{instance.name}: {exc.message}")
    if failed:
        raise EngineError("the new edge does not see every instance healthy: " + "; ".join(failed))
    return EdgeReplaced(image, reloaded=False)


def _edge_instances(ctx: Context, desired: Desired) -> list[tuple[RoleRelease, Instance, str]]:
    """The running instances of good releases that run ``desired``'s configuration of a
    public role, with their addresses: those the edge sends requests to."""
    observed = observe_fleet(ctx, desired, None)
    found = []
    for instance in observed.instances:
        rr = desired.get(instance.role)
        if (
            rr is not None
            and rr.public is not None
            and instance.running
            and instance.release in observed.good_releases
            and instance.address is not None
            and instance.config_hash == rr.config_hash  # its health is this release's
        ):
            found.append((rr, instance, instance.address))
    return found


def verify_edge_checks(serving: Sequence[tuple[RoleRelease, Instance, str]]) -> None:
    """Every instance passes, from outside, the check the new edge will make of it.

    Raises:
        GateError: one does not; nothing was changed.
    """
    problems = []
    for rr, instance, address in serving:
        assert rr.run.port is not None
        # The edge checks a command role over TCP: that is what the new edge will see.
        health = network_check(rr.health) if rr.health else TcpHealth(tcp=True)
        problem = None
        for _ in range(VERIFY_TRIES):
            problem = probe_once(address, rr.run.port, health)
            if problem is None:
                break
            time.sleep(VERIFY_PAUSE)
        if problem is not None:
            problems.append(f"{instance.name}: {problem}")
    if problems:
        raise GateError(
            "not replacing the edge, the old one keeps serving: the new edge would see "
            + "; ".join(problems),
            failures=problems,
        )
