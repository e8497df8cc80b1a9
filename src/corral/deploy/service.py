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
from dataclasses import dataclass, field
from datetime import UTC, datetime

from corral.build.bake import (
    BakeTarget,
    BuildResult,
    bake_target,
    build_fleet,
    find_current_image,
)
from corral.deploy.apply import Executor, Journal
from corral.deploy.desired import Desired, RoleRelease, desired_from_record
from corral.deploy.edge import EDGE_ROLE, Edge, edge_role, frontends
from corral.deploy.health import network_check, probe_once
from corral.deploy.instances import resolve_secrets
from corral.deploy.observe import Instance, list_scope, observe
from corral.deploy.outcome import Failed, as_deploy_error, fail
from corral.deploy.plan import Observed, Plan, plan_deploy, single_writer_conflicts
from corral.deploy.scope import Scope
from corral.deploy.secrets import (
    KeyFile,
    changed_secrets,
    check_unchanged,
    live_values,
    secret_names,
    stamped,
)
from corral.deploy.settle import Watch, settle, settle_time
from corral.engines.base import ContainerInfo, Engine
from corral.errors import CorralError, EngineError, GateError, UsageError
from corral.progress import NullProgress, Progress
from corral.spec.load import LoadedSpec
from corral.spec.model import TcpHealth
from corral.state import ImageRecord, ReleaseRecord, State

GOOD = ("active", "superseded")
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


@dataclass
class Context:
    """Everything one deploy needs, passed explicitly."""

    spec: LoadedSpec
    engine: Engine
    state: State
    progress: Progress = field(default_factory=NullProgress)
    scope: Scope = field(init=False)
    edge: Edge = field(init=False)
    secret_key: KeyFile = field(init=False, repr=False)  # read only if a secret is hashed

    def __post_init__(self) -> None:
        self.scope = Scope(self.spec.fleet.fleet)
        self.edge = Edge(
            self.engine, self.scope, str(self.spec.state_path), self.spec.fleet.edge.address
        )
        self.secret_key = KeyFile(self.spec.state_path, self.scope.fleet)


def desired_from_spec(
    ctx: Context, roles: Sequence[str] = ()
) -> tuple[dict[str, RoleRelease], list[str]]:
    """Build what changed and return (desired roles, roles left untouched)."""
    desired, untouched, _ = _desired_from_builds(ctx, roles)
    return desired, untouched


def _desired_from_builds(
    ctx: Context, roles: Sequence[str]
) -> tuple[dict[str, RoleRelease], list[str], bool]:
    """Like ``desired_from_spec``, and whether an image had to be baked."""
    results = build_fleet(ctx.spec, ctx.engine, ctx.state, roles or None, ctx.progress)
    desired = {
        r.role: RoleRelease.from_role(
            r.role, ctx.spec.fleet.roles[r.role], _image(ctx, r.role, r.version)
        )
        for r in results
    }
    active = ctx.state.active_release(ctx.scope.fleet)
    untouched = [name for name in ctx.spec.fleet.roles if name not in desired]
    if active is not None and roles:  # a partial deploy keeps the other roles as released
        for name, rr in desired_from_record(active.roles).items():
            if name not in desired and name in ctx.spec.fleet.roles:
                desired[name] = rr
    built = any(r.status == "built" for r in results)
    return desired, [name for name in untouched if name not in desired], built


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
    names = list(roles) or list(ctx.spec.fleet.roles)
    unknown = [n for n in names if n not in ctx.spec.fleet.roles]
    if unknown:
        raise UsageError(f"no role called {', '.join(unknown)} in the spec")
    desired: dict[str, RoleRelease] = {}
    unbuilt = []
    for name in names:
        role = ctx.spec.fleet.roles[name]
        image = find_current_image(
            BakeTarget(ctx.scope.fleet, name, role, ctx.spec.root), ctx.engine, ctx.state
        )
        if image is None:
            unbuilt.append(name)
        else:
            desired[name] = RoleRelease.from_role(name, role, image)
    untouched = [n for n in ctx.spec.fleet.roles if n not in desired]
    values = resolve_secrets(desired, advice="export them before planning")
    desired = stamped(desired, set(desired), values, ctx.secret_key)
    edge = edge_image(ctx, desired, build=False)
    observed = observe_fleet(ctx, desired, edge)
    new_volumes = (
        ctx.scope.volume_name(name, volume)
        for name in unbuilt
        for volume in sorted(ctx.spec.fleet.roles[name].volumes)
    )
    return PlanResult(
        plan_deploy(ctx.scope, desired, observed, untouched),
        tuple(unbuilt),
        tuple(v for v in new_volumes if v not in observed.volumes),
    )


def _image(ctx: Context, role: str, version: str) -> ImageRecord:
    return next(i for i in ctx.state.images(ctx.scope.fleet, role) if i.version == version)


@dataclass(frozen=True)
class Sighting:
    """What the engine holds of the fleet: its containers (instances and edge), its volumes."""

    containers: list[ContainerInfo]
    volumes: list[str]


def look(ctx: Context) -> Sighting:
    """One listing of the fleet's containers and one of its volumes, made side by side:
    each engine call costs tens of milliseconds."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        volumes = pool.submit(ctx.engine.list_volumes, ctx.scope.labels("volume"))
        containers = list_scope(ctx.engine, ctx.scope)
    return Sighting(containers, volumes.result())


def observe_fleet(
    ctx: Context, desired: Desired, edge_image: str | None, seen: Sighting | None = None
) -> Observed:
    """The fleet as it runs, from ``seen`` or from a fresh look."""
    seen = seen or look(ctx)
    listing = seen.containers
    releases = ctx.state.releases(ctx.scope.fleet, limit=100000)
    instances = observe(ctx.engine, ctx.scope, listing)
    numbers = {i.release for i in instances}
    return Observed(
        instances=instances,
        volumes=set(seen.volumes),
        good_releases={r.number for r in releases if r.status in GOOD},
        standby=standby_names(ctx.state, ctx.scope.fleet),
        now=datetime.now(UTC),
        edge=ctx.edge.observe(desired, edge_image, listing),
        networks={n for c in listing if c.state == "running" for n in c.addresses},
        released={r.number: desired_from_record(r.roles) for r in releases if r.number in numbers},
        last_unavailable=ctx.state.last_unavailable(ctx.scope.fleet),
    )


def standby_names(state: State, fleet: str) -> set[str]:
    """Instances whose latest record says corral stopped them on purpose (blue-green)."""
    latest: dict[str, str | None] = {}
    for record in state.instances(fleet, live_only=False):  # oldest first
        latest[record.name] = record.outcome if record.retired_at else None
    return {name for name, outcome in latest.items() if outcome == "standby"}


def edge_image(ctx: Context, desired: Desired, build: bool) -> str | None:
    """The edge image id (baked when ``build``), or None when no role is public."""
    if build:
        baked = _bake_edge(ctx, desired)
        return baked.image_id if baked else None
    if not frontends(desired):
        return None
    latest = ctx.state.latest_image(ctx.scope.fleet, EDGE_ROLE)
    return latest.image_id if latest else None


def _bake_edge(ctx: Context, desired: Desired) -> BuildResult | None:
    if not frontends(desired):
        return None
    target = BakeTarget(ctx.scope.fleet, EDGE_ROLE, edge_role(), ctx.spec.root)
    return bake_target(target, ctx.engine, ctx.state, ctx.progress)


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
        desired, untouched, edge, built = _wanted(ctx, roles, source)
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
) -> tuple[dict[str, RoleRelease], list[str], str | None, bool]:
    """(desired roles, untouched roles, edge image, whether anything was baked)."""
    if source is None:
        desired, untouched, built = _desired_from_builds(ctx, roles)
    else:
        desired, untouched, built = desired_from_record(source.roles), [], False
    edge = _bake_edge(ctx, desired)
    built = built or (edge is not None and edge.status == "built")
    return desired, untouched, edge.image_id if edge else None, built


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


def sweep_killed(ctx: Context) -> list[ReleaseRecord]:
    """Abort the releases of killed deploys, and forget the secrets their instance starts
    stored for containers that never came to be. Only under the deploy lock."""
    swept = ctx.state.sweep_stale_releases(ctx.scope.fleet)
    for role in sorted({role for release in swept for role in release.roles}):
        ctx.engine.forget_secrets(ctx.scope.role_prefix(role))
    return swept


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
    handed_over: bool = False  # a new container took over the open ports: none refused


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
    image = edge_image(ctx, desired, build=True)
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
    details = {"image": image, "reloaded": replaced.reloaded, "handed_over": replaced.handed_over}
    ctx.state.record_audit(ctx.scope.fleet, "edge-replace", "edge", "ok", details)
    return replaced


def _replace_edge(ctx: Context, desired: Desired, image: str) -> EdgeReplaced:
    if ctx.edge.can_reload(desired, image):
        ctx.progress.step("edge", "reloading the edge's configuration in place")
        ctx.edge.reload(desired, image)
        return EdgeReplaced(image, reloaded=True)
    serving = _edge_instances(ctx, desired)
    verify_edge_checks(serving)
    if ctx.edge.can_hand_over(desired):
        ctx.progress.step("edge", "a new edge container takes over the open ports")
        ctx.edge.hand_over(desired, image)
        return EdgeReplaced(image, reloaded=False, handed_over=True)
    ctx.progress.step("edge", "replacing the edge's pod (its ports refuse connections ~1 s)")
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
    good = {r.number for r in ctx.state.releases(ctx.scope.fleet, limit=100000) if r.status in GOOD}
    found = []
    for instance in observe(ctx.engine, ctx.scope):
        rr = desired.get(instance.role)
        if (
            rr is not None
            and rr.public is not None
            and instance.running
            and instance.release in good
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
