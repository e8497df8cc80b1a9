"""The planner: desired state against observed state, as plain data. It changes nothing.

``plan_deploy`` is a pure function: the same inputs always give the same plan, and it
never talks to an engine. The executor (``apply.py``) is the only code that acts on a
plan. An instance counts as *current* only when it runs the desired image with the desired
configuration and belongs to a release that once succeeded; anything else is replaced, so
the leftovers of a killed deploy are converged away by the next one.

A role with a single-writer volume (any volume not declared ``shareable``) is planned
``stop-first`` whatever its declared strategy: its old instance goes before the new one
starts, so two instances never mount that volume at once.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral.deploy import steps as gen
from corral.deploy.dataguard import DataGuard, KnownVolume, guard
from corral.deploy.desired import Desired, RoleRelease, deploy_order
from corral.deploy.observe import Instance
from corral.deploy.scope import Scope
from corral.deploy.steps import Action, Batch, Change, EdgeServer, Replacement, Step
from corral.engines.capabilities import Capability
from corral.formats import parse_time as parse_time  # re-exported: status and suite use it
from corral.spec.model import CommandHealth

__all__ = ["Change", "EdgeServer", "Step"]  # re-exported: the plan's vocabulary

STOP_FIRST = "stop-first"
BLUE_GREEN = "blue-green"


@dataclass(frozen=True)
class RolePlan:
    """One role's part of a plan: what it decides (keep, new, stop...) and, in ``batches``,
    the named steps that carry it out, in order."""

    role: str
    strategy: str
    image_version: str
    replicas: int
    keep: tuple[str, ...] = ()
    new: tuple[str, ...] = ()  # the names of the new instances to start
    restart: tuple[str, ...] = ()  # stopped stand-by instances to bring back
    stop: tuple[Change, ...] = ()  # running instances to retire (after replacements serve)
    cleanup: tuple[Change, ...] = ()  # instances not running and no longer wanted
    standby: tuple[str, ...] = ()  # stopped instances kept for an instant switch back
    new_volumes: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    exclusive: tuple[str, ...] = ()  # single-writer volumes: one running instance at a time
    interrupts: bool = False  # stop-first replaces a serving instance: the role is down a while
    unavailable_s: float | None = None  # how long that took last time (None: never measured)
    batches: tuple[Batch, ...] = ()
    # What the instances run: the executor's input, not part of the plan's JSON form.
    release: RoleRelease | None = field(default=None, compare=False, repr=False)

    @property
    def start(self) -> int:
        """How many new instances start (``new`` names them)."""
        return len(self.new)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step of the role, in order."""
        return tuple(step for batch in self.batches for step in batch)

    @property
    def changed(self) -> bool:
        return bool(self.start or self.restart or self.stop or self.cleanup or self.new_volumes)

    def to_dict(self) -> dict[str, Any]:
        """The role's plan as JSON (see docs/cli.md, ``corral plan --json``)."""
        return {
            "role": self.role,
            "strategy": self.strategy,
            "image_version": self.image_version,
            "replicas": self.replicas,
            "keep": list(self.keep),
            "start": self.start,
            "new": list(self.new),
            "restart": list(self.restart),
            "stop": [_change(c) for c in self.stop],
            "cleanup": [_change(c) for c in self.cleanup],
            "standby": list(self.standby),
            "new_volumes": list(self.new_volumes),
            "volumes": list(self.volumes),
            "exclusive": list(self.exclusive),
            "interrupts": self.interrupts,
            "unavailable_s": self.unavailable_s,
            "batches": [[step.to_dict() for step in batch] for batch in self.batches],
        }


def _change(change: Change) -> dict[str, str]:
    return {"instance": change.instance, "reason": change.reason}


@dataclass(frozen=True)
class EdgePlan:
    """What happens to the edge: none | create | start | resume (its stopped container,
    in its pod) | reload | replace-needed (after the roles, the deploy replaces it) |
    replace (a new pod before the roles: a new public role), or, in ``corral edge
    replace``'s plan, hand-over (a new container in the pod) or replace."""

    action: str
    reason: str = ""
    image: str = ""  # the edge image to start or reload with ("": none is known)
    checks: tuple[Step, ...] = ()  # replace: every instance passes these before anything changes
    servers: tuple[Step, ...] = ()  # replace: the instances the new edge takes in
    blocked: str = ""  # why a deploy cannot carry this out ("": it can)
    blocked_roles: tuple[str, ...] = ()  # the roles it names: the new ones, then the others

    @property
    def replaced_after_roles(self) -> bool:
        """Whether the edge's frame (its image, uid, published ports or their address)
        is not the plan's: after the roles, the deploy replaces the edge."""
        return self.action == "replace-needed"

    def to_dict(self) -> dict[str, Any]:
        """The edge's part of the plan as JSON."""
        data: dict[str, Any] = {"action": self.action, "reason": self.reason, "image": self.image}
        if self.checks or self.servers:
            data["checks"] = [step.to_dict() for step in self.checks]
            data["servers"] = [step.to_dict() for step in self.servers]
        if self.blocked:
            data["blocked"] = self.blocked
            data["blocked_roles"] = list(self.blocked_roles)
        return data


@dataclass(frozen=True)
class Plan:
    fleet: str
    roles: tuple[RolePlan, ...]
    waves: tuple[tuple[str, ...], ...]
    edge: EdgePlan = field(default_factory=lambda: EdgePlan("none"))
    orphans: tuple[Change, ...] = ()  # instances of roles no longer in the desired state
    ensure_network: bool = True  # False when a running container shows it exists
    release: int = 1  # the release new instances belong to (their names say it)
    orphan_steps: tuple[Step, ...] = ()  # how the orphans go, in order
    # Pre-deploy backups: run before anything changes (a failed one stops the deploy).
    backup_steps: tuple[Step, ...] = ()
    # Retained volumes, what needs the operator's yes, what moves (deploy/dataguard.py).
    data: DataGuard = field(default_factory=DataGuard)

    @property
    def desired(self) -> Desired:
        """What the fleet runs once the plan is carried out, role by role."""
        return {rp.role: rp.release for rp in self.roles if rp.release is not None}

    @property
    def has_changes(self) -> bool:
        edge = self.edge.action in ("create", "start", "resume", "reload", "replace")
        return edge or bool(self.orphans) or any(r.changed for r in self.roles)

    @property
    def backs_up(self) -> tuple[str, ...]:
        """The volumes backed up before anything changes, as ``role/volume``."""
        return tuple(f"{s.role}/{s.instance}" for s in self.backup_steps)

    @property
    def volumes_touched(self) -> int:
        """Volumes created by this plan; corral's plans never delete a volume."""
        return sum(len(r.new_volumes) for r in self.roles)

    def role(self, name: str) -> RolePlan:
        return next(r for r in self.roles if r.role == name)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON: the documented ``--json`` form (docs/cli.md, ``corral plan``).

        Plain values only; what the instances run (images, configuration) is not in it
        beyond each role's image version, and no secret value ever is.
        """
        return {
            "fleet": self.fleet,
            "release": self.release,
            "has_changes": self.has_changes,
            "roles": [rp.to_dict() for rp in self.roles],
            "waves": [list(wave) for wave in self.waves],
            "edge": self.edge.to_dict(),
            "orphans": [_change(c) for c in self.orphans],
            "orphan_steps": [step.to_dict() for step in self.orphan_steps],
            "backup_steps": [step.to_dict() for step in self.backup_steps],
            "ensure_network": self.ensure_network,
            "retained_volumes": [r.to_dict() for r in self.data.retained],
            "data_concerns": list(self.data.concerns),
            "data_notes": list(self.data.notes),
        }


@dataclass(frozen=True)
class Observed:
    instances: Sequence[Instance]
    volumes: Collection[str]
    good_releases: Collection[int]  # releases that became active at some time
    standby: Collection[str]  # instance names corral stopped on purpose (blue-green)
    now: datetime
    edge: EdgePlan = field(default_factory=lambda: EdgePlan("none"))
    networks: Collection[str] = ()  # networks that running containers are attached to
    # The recorded roles of the releases observed instances belong to: they say what
    # changed (which secret) when an instance's configuration is stale.
    released: Mapping[int, Desired] = field(default_factory=dict)
    # Per role, how long its last stop-first replacement left it unavailable (seconds).
    last_unavailable: Mapping[str, float] = field(default_factory=dict)
    # Per public role, the servers the edge has now (absent: no such backend in the
    # running edge, a new public role, or no edge yet).
    edge_servers: Mapping[str, Sequence[EdgeServer]] = field(default_factory=dict)
    # Instances that must be replaced whatever they run (name -> why): a drifted one,
    # say. A tainted running instance is replaced as a stale one is; a tainted stand-by
    # is removed, never restarted.
    tainted: Mapping[str, str] = field(default_factory=dict)
    # Per role, its backed-up volumes with no verified snapshot younger than the spec's
    # ``backup.max_age``: a plan that replaces the role's running instances backs them up
    # first. Empty for an undo, which must go back whatever happens.
    backups_due: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # The fleet's recorded volumes (not deleted), by engine name: who owns each.
    known_volumes: Mapping[str, KnownVolume] = field(default_factory=dict)

    def taint(self, name: str, reason: str) -> Observed:
        """The same observation with instance ``name`` marked tainted for ``reason``."""
        return dataclasses.replace(self, tainted={**self.tainted, name: reason})


def not_desired(source: int | None) -> str:
    """Why an instance of a role outside the desired fleet goes: the spec dropped the
    role, or the release gone back to (``source``; 0 for none) did not have it."""
    if source is None:
        return "is no longer in the spec"
    return f"is not in release {source}" if source else "is not in any earlier release"


def plan_deploy(
    scope: Scope,
    desired: Desired,
    observed: Observed,
    untouched: Collection[str] = (),
    release: int = 1,
    pending_public: Mapping[str, int] | None = None,
    source: int | None = None,
) -> Plan:
    """What must change so that the fleet runs ``desired``, as named steps.

    ``pending_public``: public roles not in ``desired`` (``corral plan``: unbuilt), by
    port; one the edge has no backend for needs a new pod before the roles, as in a deploy.
    ``source``: the recorded release ``desired`` comes from (a rollback or an undo), not
    the spec; the reason an instance of another role is retired names it.

    Roles named in ``untouched`` are left exactly as they are (a deploy of some roles
    only); instances of any other role missing from ``desired`` are retired. New instances
    belong to ``release`` and are named ``<fleet>-<role>-r<release>-<n>``, ``n`` counting
    on from the highest index an observed instance of that release has.
    """
    roles = tuple(
        _plan_role(scope, rr, [i for i in observed.instances if i.role == name], observed, release)
        for name, rr in sorted(desired.items())
    )
    gone = [i for i in observed.instances if i.role not in desired and i.role not in untouched]
    orphans = tuple(Change(i.name, f"role {i.role} {not_desired(source)}") for i in gone)
    orphan_steps = tuple(
        step
        for i, change in zip(gone, orphans, strict=True)
        for step in gen.retire_steps(_orphan(i.role), change, "orphan", background=False)
    )
    waves = tuple(tuple(w) for w in deploy_order(desired))
    network = scope.network not in observed.networks
    replaced = {rp.role for rp in roles if rp.stop} | {i.role for i in gone if i.running}
    running: dict[str, int] = {}
    for i in observed.instances:
        running[i.role] = running.get(i.role, 0) + int(i.running)
    data = guard(scope, desired, observed.known_volumes, observed.volumes, running, untouched)
    return Plan(
        scope.fleet,
        roles,
        waves,
        _edge_first(desired, observed, roles, pending_public or {}) or observed.edge,
        orphans,
        ensure_network=network,
        release=release,
        orphan_steps=orphan_steps,
        backup_steps=gen.backup_steps(observed.backups_due, replaced),
        data=data,
    )


def plan_canary(plan: Plan, counts: Mapping[str, int]) -> Plan:
    """The first part of ``plan``: per role in ``counts`` that ``plan`` starts new
    instances of, its first ``counts[role]`` new ones start beside the old ones (see
    ``steps.canary``); nothing stops, nothing else changes but the edge's reload and the
    role's new volumes. The rest is planned afterwards from the fleet as it is then. A
    role with a single-writer volume starts no canary (two instances would mount it).
    """
    roles = []
    for rp in plan.roles:
        # A role with a single-writer volume gets no canary: it would mount the volume
        # beside the old instances (two writers); it is replaced stop-first with the rest.
        count = 0 if rp.exclusive else min(counts.get(rp.role, 0), len(rp.new))
        rr = rp.release
        new = rp.new[:count] if rr is not None else ()
        part = dataclasses.replace(
            rp, new=new, restart=(), stop=(), cleanup=(), standby=(), interrupts=False
        )
        batches: list[Batch] = [
            b for b in (gen.keep_steps(rp.role, rp.image_version, rp.keep),) if b
        ]
        if new and rr is not None:
            batches += [tuple(Step(Action.CREATE_VOLUME, rp.role, v) for v in rp.new_volumes)]
            r = Replacement(
                rp.role, rp.image_version, rr.public is not None, rp.replicas, 0, 0, 0.0, new=new
            )
            batches += gen.canary(r)
        else:
            part = dataclasses.replace(part, new_volumes=())
        roles.append(dataclasses.replace(part, batches=tuple(b for b in batches if b)))
    return dataclasses.replace(plan, roles=tuple(roles), orphans=(), orphan_steps=())


def _orphan(role: str) -> Replacement:
    """An orphan's role as the generators see it: maybe still behind the edge."""
    return Replacement(role, "", False, 0, 0, 0, 0.0)


def _plan_role(
    scope: Scope, rr: RoleRelease, instances: list[Instance], obs: Observed, release: int
) -> RolePlan:
    running = [i for i in instances if i.running]
    current = [i for i in running if _serves(i, rr, obs) and i.name not in obs.tainted]
    keep, surplus = current[: rr.replicas], current[rr.replicas :]
    stop = [Change(i.name, _stale_reason(i, rr, obs)) for i in running if i not in current]
    stop += [Change(i.name, f"more than {rr.replicas} replicas") for i in surplus]
    stopped = [i for i in instances if not i.running]
    restart, standby, cleanup = _sort_stopped(stopped, rr, obs)
    needed = max(0, rr.replicas - len(keep))
    restart, standby = restart[:needed], restart[needed:] + standby
    volumes = tuple(rr.engine_volume(scope, v) for v in sorted(rr.volumes))
    exclusive = tuple(rr.engine_volume(scope, v) for v in rr.single_writer)
    interrupts = bool(exclusive and stop and needed and not keep)
    first = 1 + max((i.index for i in instances if i.release == release), default=0)
    new = tuple(
        scope.instance_name(rr.role, release, n)
        for n in range(first, first + needed - len(restart))
    )
    rp = RolePlan(
        role=rr.role,
        strategy=STOP_FIRST if exclusive else rr.deploy.strategy,
        image_version=rr.image_version,
        replicas=rr.replicas,
        keep=tuple(i.name for i in keep),
        new=new,
        restart=tuple(i.name for i in restart),
        stop=tuple(stop),
        cleanup=tuple(cleanup),
        standby=tuple(i.name for i in standby),
        new_volumes=tuple(v for v in volumes if v not in obs.volumes),
        volumes=volumes,
        exclusive=exclusive,
        interrupts=interrupts,
        unavailable_s=obs.last_unavailable.get(rr.role) if interrupts else None,
        release=rr,
    )
    return dataclasses.replace(rp, batches=tuple(role_batches(rp, rr, obs)))


def role_batches(rp: RolePlan, rr: RoleRelease, obs: Observed) -> list[Batch]:
    """The batches that carry ``rp`` out: volumes, clean-up, the edge made to agree with
    the plan, then the strategy's own (see ``deploy/steps.py``)."""
    public = rr.public is not None
    batches: list[Batch] = [b for b in (gen.keep_steps(rr.role, rr.image_version, rp.keep),) if b]
    volumes = tuple(Step(Action.CREATE_VOLUME, rr.role, v) for v in rp.new_volumes)
    cleanup = gen.cleanup_steps(rr.role, public, rp.cleanup)
    batches += [b for b in (volumes, cleanup) if b]
    present = _edge_servers(rr, obs)
    if present is not None:
        known = {*rp.keep, *(c.instance for c in rp.stop), *(c.instance for c in rp.cleanup)}
        batches += gen.edge_sync(rr.role, rp.keep, known, present, edge_timeout(rr))
    serving = (
        None if present is None else {s.name for s in present if s.admin == "ready" and s.healthy}
    )
    r = Replacement(
        role=rr.role,
        version=rr.image_version,
        public=public,
        replicas=rr.replicas,
        surge=rr.deploy.surge(rr.replicas),
        unavailable=rr.deploy.unavailable(rr.replicas),
        drain=rr.deploy.drain,
        keep=rp.keep,
        new=rp.new,
        restart=rp.restart,
        stop=rp.stop,
        idle=frozenset(
            () if serving is None else (c.instance for c in rp.stop if c.instance not in serving)
        ),
    )
    if rp.strategy == STOP_FIRST:
        return batches + gen.stop_first(r, standby=rr.deploy.strategy == BLUE_GREEN)
    if rp.strategy == BLUE_GREEN:
        return batches + gen.blue_green(r)
    return batches + gen.rolling(r)


def _edge_servers(rr: RoleRelease, obs: Observed) -> Sequence[EdgeServer] | None:
    """The role's servers in the edge when the executor reaches the role; None: not public.

    An edge the plan (re)starts has none; a reload carries every server over as it was.
    """
    if rr.public is None:
        return None
    if obs.edge.action in ("create", "start", "resume"):
        return ()
    return obs.edge_servers.get(rr.role, ())


def edge_timeout(rr: RoleRelease) -> float:
    """How long the edge's own check of a new server may take to pass."""
    if rr.health is None:
        return 10.0
    return max(5.0, rr.health.retries * rr.health.interval)


class EdgeReplacement(enum.Enum):
    """How ``corral edge replace`` brings the edge to the new configuration or image."""

    RELOAD = "reload"  # same image, ports, uid and master: the running edge reloads
    HAND_OVER = "hand-over"  # a new image or uid: a new container takes over the sockets
    NEW_POD = "replace"  # new ports or address: a new pod (its ports refuse for ~1 s)


def plan_edge_replace(
    scope: Scope, desired: Desired, observed: Observed, image: str, how: EdgeReplacement
) -> Plan:
    """``corral edge replace`` as a plan: the edge, and nothing else, brought to ``desired``.

    ``RELOAD``: the running edge is reloaded in place. Otherwise every instance the edge
    sends requests to (running, of a good release, with ``desired``'s configuration of a
    public role) is first checked from outside as the new edge will check it; then, with
    ``HAND_OVER``, a new container in the same pod takes over the open sockets and the old
    one's servers; with ``NEW_POD``, a new pod starts and takes each instance in.
    """
    roles = tuple(
        RolePlan(rr.role, rr.deploy.strategy, rr.image_version, rr.replicas, release=rr)
        for _, rr in sorted(desired.items())
    )
    if how is EdgeReplacement.RELOAD:
        edge = EdgePlan("reload", "the running edge takes the new configuration", image)
        return Plan(scope.fleet, roles, (), edge, ensure_network=False, release=0)
    serving = [i for i in observed.instances if _behind_edge(i, desired, observed)]
    checks = tuple(
        Step(Action.CHECK, i.role, i.name, i.version, "the new edge will check it") for i in serving
    )
    if how is EdgeReplacement.HAND_OVER:
        why = "a new image or uid: a new container takes over the open ports and the servers"
        edge = EdgePlan("hand-over", why, image, checks)
        return Plan(scope.fleet, roles, (), edge, ensure_network=False, release=0)
    servers = tuple(
        Step(Action.ADD, i.role, i.name, i.version, "served by the old edge", timeout=30.0)
        for i in serving
    )
    why = "new published ports or a new address need a new pod"
    edge = EdgePlan("replace", why, image, checks, servers)
    return Plan(scope.fleet, roles, (), edge, ensure_network=True, release=0)


def _edge_first(
    desired: Desired,
    observed: Observed,
    roles: Sequence[RolePlan],
    pending: Mapping[str, int],
) -> EdgePlan | None:
    """The edge's replacement, when it must come before the roles: a public role the
    running edge has no backend for (new, or newly public) could not take its instances
    in there. A new pod, with every port, takes in the instances the edge serves now;
    the roles then add theirs to it. None: the edge, if it changes, comes after the roles
    (see ``orchestrate.converge_edge``), which the old edge serves meanwhile.

    A role whose instances this plan replaces could not be served by the new pod until
    its new ones are up (its old ones are checked as they run, not as the new edge would
    check them): ``blocked`` says so, and the deploy refuses before anything changes.
    """
    if observed.edge.action in ("create", "start", "resume"):
        return None  # a new edge has every backend
    if not observed.edge.replaced_after_roles and not pending:
        return None
    ports = {name: rr.public for name, rr in desired.items() if rr.public is not None}
    ports.update(pending)
    new = sorted(name for name in ports if name not in observed.edge_servers)
    if not new:
        return None
    serving = [i for i in observed.instances if _behind_edge(i, desired, observed)]
    replaced = sorted(
        rp.role
        for rp in roles
        if rp.role not in new and observed.edge_servers.get(rp.role) and rp.stop
    )
    blocked = ""
    named = f"roles {', '.join(new)} need" if len(new) > 1 else f"role {new[0]} needs"
    if replaced:
        blocked = (
            f"the new public {named} a new edge before the other roles change, and "
            f"{', '.join(replaced)} would have no server in it until its new instances are "
            f"up: deploy {' '.join(new)} alone first (corral deploy {' '.join(new)}), then "
            "the rest"
        )
    added = ", ".join(str(ports[name]) for name in new)
    every = ", ".join(str(port) for _, port in sorted(ports.items()))
    why = (
        f"new public {named} a new pod, before the roles: it publishes {_word(new)} {added}, "
        f"and every public port ({every}) refuses connections for about a second"
    )
    checks = tuple(
        Step(Action.CHECK, i.role, i.name, i.version, "the new edge will check it") for i in serving
    )
    servers = tuple(
        Step(Action.ADD, i.role, i.name, i.version, "served by the old edge", timeout=30.0)
        for i in serving
    )
    names = (*new, *replaced) if blocked else ()
    return EdgePlan("replace", why, observed.edge.image, checks, servers, blocked, names)


def _word(new: Sequence[str]) -> str:
    return "ports" if len(new) > 1 else "port"


def _behind_edge(instance: Instance, desired: Desired, observed: Observed) -> bool:
    """Whether the edge sends ``instance`` requests: its health is this release's."""
    rr = desired.get(instance.role)
    return (
        rr is not None
        and rr.public is not None
        and instance.running
        and instance.release in observed.good_releases
        and instance.address is not None
        and instance.config_hash == rr.config_hash
    )


def needed_capabilities(plan: Plan) -> list[tuple[Capability, str]]:
    """What the engine must be able to do to carry out ``plan``, each with who needs it:
    checked before anything changes, so an engine that lacks one refuses the deploy
    instead of failing half-way through it."""
    needed: list[tuple[Capability, str]] = []
    for rp in plan.roles:
        rr = rp.release
        if rr is None or not rp.changed:
            continue
        if rr.volumes:
            needed.append((Capability.VOLUMES, f"role {rp.role}'s volumes"))
        if rp.strategy == BLUE_GREEN or rp.restart:
            needed.append((Capability.RESUME, f"role {rp.role}'s blue-green stand-by"))
        if isinstance(rr.health, CommandHealth):
            needed.append((Capability.RUN_ONCE, f"role {rp.role}'s command health check"))
    if plan.edge.action in ("create", "start", "resume", "replace"):
        needed.append((Capability.HOST_SOCKETS, "the edge's admin socket"))
        needed.append((Capability.PODS, "the edge's take-over of its open ports"))
    return needed


def single_writer_conflicts(desired: Desired) -> list[str]:
    """Roles that would run several instances on one single-writer volume, in words.

    The spec refuses them; a release recorded by an older corral may still hold one.
    """
    return [
        f"role {name} has {rr.replicas} replicas on single-writer volume(s) "
        f"{', '.join(rr.single_writer)}"
        for name, rr in sorted(desired.items())
        if rr.replicas > 1 and rr.single_writer
    ]


def _matches(instance: Instance, rr: RoleRelease) -> bool:
    return instance.image_id == rr.image_id and instance.config_hash == rr.config_hash


def _serves(instance: Instance, rr: RoleRelease, obs: Observed) -> bool:
    return _matches(instance, rr) and instance.release in obs.good_releases


def _stale_reason(instance: Instance, rr: RoleRelease, obs: Observed) -> str:
    if instance.name in obs.tainted:
        return f"tainted: {obs.tainted[instance.name]}"
    if instance.release not in obs.good_releases:
        return f"left by unfinished release r{instance.release}"
    if instance.image_id != rr.image_id:
        return f"new image {rr.image_version}"
    before = obs.released.get(instance.release, {}).get(rr.role)
    if before is None or before.config_hash != instance.config_hash:
        return "run configuration changed"  # not started as its release says: no details
    return "; ".join(before.changes_to(rr)) or "run configuration changed"


def _sort_stopped(
    stopped: list[Instance], rr: RoleRelease, obs: Observed
) -> tuple[list[Instance], list[Instance], list[Change]]:
    """Split stopped instances into (restartable, kept stand-by, to clean up)."""
    restart: list[Instance] = []
    standby: list[Instance] = []
    cleanup: list[Change] = []
    for instance in stopped:
        if instance.name in obs.tainted:
            cleanup.append(Change(instance.name, f"tainted: {obs.tainted[instance.name]}"))
        elif instance.name not in obs.standby or instance.release not in obs.good_releases:
            cleanup.append(Change(instance.name, f"not running ({instance.state})"))
        elif _expired(instance, rr, obs.now):
            cleanup.append(Change(instance.name, "stand-by time is over"))
        else:
            (restart if _matches(instance, rr) else standby).append(instance)
    return restart, standby, cleanup


def _expired(instance: Instance, rr: RoleRelease, now: datetime) -> bool:
    stopped_at = parse_time(instance.finished)
    if stopped_at is None:
        return False
    return (now - stopped_at).total_seconds() > rr.deploy.keep_old


def summarize(plan: Plan) -> Mapping[str, int]:
    """Counts for a one-line summary: to start, to restart, to stop, to clean up."""
    return {
        "start": sum(r.start for r in plan.roles),
        "restart": sum(len(r.restart) for r in plan.roles),
        "stop": sum(len(r.stop) for r in plan.roles) + len(plan.orphans),
        "cleanup": sum(len(r.cleanup) for r in plan.roles),
        "volumes_touched": plan.volumes_touched,
    }
