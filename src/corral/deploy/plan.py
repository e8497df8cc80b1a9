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

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from corral.deploy.desired import Desired, RoleRelease, deploy_order
from corral.deploy.observe import Instance
from corral.deploy.scope import Scope

STOP_FIRST = "stop-first"


@dataclass(frozen=True)
class Change:
    instance: str
    reason: str


@dataclass(frozen=True)
class RolePlan:
    role: str
    strategy: str
    image_version: str
    replicas: int
    keep: tuple[str, ...] = ()
    start: int = 0  # new instances to start
    restart: tuple[str, ...] = ()  # stopped stand-by instances to bring back
    stop: tuple[Change, ...] = ()  # running instances to retire (after replacements serve)
    cleanup: tuple[Change, ...] = ()  # instances not running and no longer wanted
    standby: tuple[str, ...] = ()  # stopped instances kept for an instant switch back
    new_volumes: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    exclusive: tuple[str, ...] = ()  # single-writer volumes: one running instance at a time
    interrupts: bool = False  # stop-first replaces a serving instance: the role is down a while
    unavailable_s: float | None = None  # how long that took last time (None: never measured)

    @property
    def changed(self) -> bool:
        return bool(self.start or self.restart or self.stop or self.cleanup or self.new_volumes)


@dataclass(frozen=True)
class EdgePlan:
    action: str  # none | create | start | reload | replace-needed
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    fleet: str
    roles: tuple[RolePlan, ...]
    waves: tuple[tuple[str, ...], ...]
    edge: EdgePlan = field(default_factory=lambda: EdgePlan("none"))
    orphans: tuple[Change, ...] = ()  # instances of roles no longer in the desired state
    ensure_network: bool = True  # False when a running container shows it exists

    @property
    def has_changes(self) -> bool:
        edge = self.edge.action in ("create", "start", "reload")
        return edge or bool(self.orphans) or any(r.changed for r in self.roles)

    @property
    def volumes_touched(self) -> int:
        """Volumes created by this plan; corral's plans never delete a volume."""
        return sum(len(r.new_volumes) for r in self.roles)

    def role(self, name: str) -> RolePlan:
        return next(r for r in self.roles if r.role == name)


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


def plan_deploy(
    scope: Scope, desired: Desired, observed: Observed, untouched: Collection[str] = ()
) -> Plan:
    """What must change so that the fleet runs ``desired``.

    Roles named in ``untouched`` are left exactly as they are (a deploy of some roles
    only); instances of any other role missing from ``desired`` are retired.
    """
    roles = tuple(
        _plan_role(scope, rr, [i for i in observed.instances if i.role == name], observed)
        for name, rr in sorted(desired.items())
    )
    orphans = tuple(
        Change(i.name, f"role {i.role} is no longer in the spec")
        for i in observed.instances
        if i.role not in desired and i.role not in untouched
    )
    waves = tuple(tuple(w) for w in deploy_order(desired))
    network = scope.network not in observed.networks
    return Plan(scope.fleet, roles, waves, observed.edge, orphans, ensure_network=network)


def _plan_role(scope: Scope, rr: RoleRelease, instances: list[Instance], obs: Observed) -> RolePlan:
    running = [i for i in instances if i.running]
    current = [i for i in running if _serves(i, rr, obs)]
    keep, surplus = current[: rr.replicas], current[rr.replicas :]
    stop = [Change(i.name, _stale_reason(i, rr, obs)) for i in running if i not in current]
    stop += [Change(i.name, f"more than {rr.replicas} replicas") for i in surplus]
    stopped = [i for i in instances if not i.running]
    restart, standby, cleanup = _sort_stopped(stopped, rr, obs)
    needed = max(0, rr.replicas - len(keep))
    restart, standby = restart[:needed], restart[needed:] + standby
    volumes = tuple(scope.volume_name(rr.role, v) for v in sorted(rr.volumes))
    exclusive = tuple(scope.volume_name(rr.role, v) for v in rr.single_writer)
    interrupts = bool(exclusive and stop and needed and not keep)
    return RolePlan(
        role=rr.role,
        strategy=STOP_FIRST if exclusive else rr.deploy.strategy,
        image_version=rr.image_version,
        replicas=rr.replicas,
        keep=tuple(i.name for i in keep),
        start=needed - len(restart),
        restart=tuple(i.name for i in restart),
        stop=tuple(stop),
        cleanup=tuple(cleanup),
        standby=tuple(i.name for i in standby),
        new_volumes=tuple(v for v in volumes if v not in obs.volumes),
        volumes=volumes,
        exclusive=exclusive,
        interrupts=interrupts,
        unavailable_s=obs.last_unavailable.get(rr.role) if interrupts else None,
    )


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
        if instance.name not in obs.standby or instance.release not in obs.good_releases:
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


def parse_time(text: str) -> datetime | None:
    """An aware datetime from an engine's ISO time (nanoseconds allowed), or None."""
    match = _ISO_TIME.match(text or "")
    if not match:
        return None
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "", None) else zone
    try:
        return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None


_ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def summarize(plan: Plan) -> Mapping[str, int]:
    """Counts for a one-line summary: to start, to restart, to stop, to clean up."""
    return {
        "start": sum(r.start for r in plan.roles),
        "restart": sum(len(r.restart) for r in plan.roles),
        "stop": sum(len(r.stop) for r in plan.roles) + len(plan.orphans),
        "cleanup": sum(len(r.cleanup) for r in plan.roles),
        "volumes_touched": plan.volumes_touched,
    }
