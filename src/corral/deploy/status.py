"""What runs now (status), what ran before (history), and taking a fleet down (destroy)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from corral.deploy.context import GOOD, Context
from corral.deploy.desired import RoleRelease, desired_from_record
from corral.deploy.drift import inspect_drift
from corral.deploy.fleet import look, observe_fleet
from corral.deploy.gc import leftovers
from corral.deploy.health import network_check, probe_once
from corral.deploy.instances import remove_probes
from corral.deploy.observe import Instance, observe
from corral.deploy.plan import parse_time
from corral.deploy.supervise import degraded_roles
from corral.deploy.volumes import Deletion, check_deletion, delete_volumes
from corral.errors import EngineError, UsageError
from corral.state import ReleaseRecord

SERVING = ("up", "unchecked")


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    role: str
    release: int
    version: str
    state: str
    health: str  # up | down | draining | standby | unchecked
    age_s: int


@dataclass(frozen=True)
class RoleStatus:
    role: str
    replicas: int
    version: str
    url: str | None
    instances: tuple[InstanceStatus, ...]
    # Why ``corral watch`` gave up replacing its instances for now (None: it has not).
    degraded: str | None = None


@dataclass(frozen=True)
class FleetStatus:
    fleet: str
    release: int | None
    roles: tuple[RoleStatus, ...]
    edge: str  # running | absent | exited ...
    # Always empty: status changes nothing since ``corral gc`` exists. Kept so that
    # scripts reading the --json form keep working.
    cleaned: tuple[str, ...]
    unfinished: tuple[str, ...]  # instances of unfinished releases still running
    leftovers: tuple[str, ...] = ()  # stopped instances of such releases: `corral gc` removes them
    unfinished_releases: tuple[int, ...] = ()  # still deploying: a deploy now, or a killed one
    last_burn: Burned | None = None  # the newest instance reconcile or watch burned
    # Running instances whose run facts left their release (``--drift``): name -> fields.
    drift: Mapping[str, str] = field(default_factory=dict)

    def problems(self) -> tuple[str, ...]:
        """What makes the fleet unwell: a public fleet's edge not running, a role with
        fewer instances serving than its replicas. ``corral status`` exits 1 on any."""
        found = []
        if any(r.url for r in self.roles) and self.edge != "running":
            found.append(f"the edge is {self.edge}")
        for r in self.roles:
            if r.degraded is not None:
                found.append(f"role {r.role} is degraded: {r.degraded}")
        found += [f"{name} drifted: {why}" for name, why in sorted(self.drift.items())]
        for r in self.roles:
            up = sum(1 for i in r.instances if i.state == "running" and i.health in SERVING)
            if up < r.replicas:
                found.append(f"role {r.role}: {up} of {r.replicas} replicas serving")
        return tuple(found)


@dataclass(frozen=True)
class Burned:
    """One burn of the audit trail: which instance, when, why."""

    instance: str
    role: str
    at: str
    reason: str


@dataclass(frozen=True)
class HistoryEntry:
    release: int
    kind: str
    status: str
    started_at: str
    user: str
    source: int | None
    message: str | None
    changes: tuple[str, ...]
    failure: Mapping[str, Any] = field(default_factory=dict)  # why it failed, in full


def status(ctx: Context, drift: bool = False) -> FleetStatus:
    """The fleet as it runs now, and what killed deploys left; it changes nothing.

    It takes no lock, marks no release and removes nothing: ``corral gc`` and the next
    deploy clean up. One look at the engine serves the whole report; ``drift`` also
    inspects each current instance (``deploy/drift.py``), one engine read each.
    """
    fleet = ctx.scope.fleet
    active = ctx.state.active_release(fleet)
    desired = desired_from_record(active.roles) if active else {}
    seen = look(ctx)
    observed = observe_fleet(ctx, desired, None, seen)
    instances, good = observed.instances, observed.good_releases
    roles = []
    degraded = degraded_roles(ctx.state, fleet)
    for name, rr in sorted(desired.items()):
        mine = [i for i in instances if i.role == name]
        health = _edge_health(ctx, name) if rr.public is not None else {}
        rows = tuple(_instance_status(i, health, rr, observed.standby) for i in mine)
        url = f"http://{ctx.edge.address}:{rr.public}/" if rr.public is not None else None
        roles.append(RoleStatus(name, rr.replicas, rr.image_version, url, rows, degraded.get(name)))
    edge = ctx.edge.container(seen.containers)
    return FleetStatus(
        fleet,
        active.number if active else None,
        tuple(roles),
        edge.state if edge else "absent",
        cleaned=(),
        unfinished=tuple(i.name for i in instances if i.running and i.release not in good),
        leftovers=tuple(i.name for i in leftovers(instances, good)),
        unfinished_releases=_deploying(ctx),
        last_burn=_last_burn(ctx),
        drift=inspect_drift(ctx, desired) if drift else {},
    )


def _last_burn(ctx: Context) -> Burned | None:
    found = ctx.state.audit_log(ctx.scope.fleet, limit=1, action="burn")
    if not found:
        return None
    entry = found[-1]
    details = entry.details
    return Burned(
        entry.target, str(details.get("role", "")), entry.at, str(details.get("reason", ""))
    )


def _deploying(ctx: Context) -> tuple[int, ...]:
    """Releases still ``deploying``: one a deploy places now, or one a killed deploy left
    (``corral gc`` or the next deploy marks it aborted)."""
    releases = ctx.state.releases_with_status(ctx.scope.fleet, ("deploying",))
    return tuple(r.number for r in releases)


def _edge_health(ctx: Context, role: str) -> dict[str, str]:
    try:
        servers = ctx.edge.servers(role)
    except Exception:
        return {}
    return {
        s.name: ("draining" if s.admin == "drain" else "up" if s.healthy else "down")
        for s in servers
    }


def _instance_status(
    i: Instance, edge_health: dict[str, str], rr: RoleRelease, standby: Collection[str]
) -> InstanceStatus:
    if not i.running:
        # Only one corral stopped on purpose (blue-green) stands by; a dead one is down.
        health = "standby" if i.state == "exited" and i.name in standby else "down"
    elif i.name in edge_health:
        health = edge_health[i.name]
    elif rr.health is not None and rr.run.port and i.address:
        # A command check runs only while a deploy waits; between deploys the port is
        # checked, as the edge's HAProxy checks it.
        check = network_check(rr.health)
        health = "up" if probe_once(i.address, rr.run.port, check) is None else "down"
    else:
        health = "unchecked"
    created = parse_time(i.created)
    age = int((datetime.now(UTC) - created).total_seconds()) if created else 0
    return InstanceStatus(i.name, i.role, i.release, i.version, i.state, health, age)


def history(ctx: Context, limit: int = 50, release: int | None = None) -> list[HistoryEntry]:
    """The newest ``limit`` releases (or only ``release``), oldest first, each with what it
    changed against the good release before it, also when that one is not shown."""
    fleet = ctx.scope.fleet
    if release is not None:
        found = ctx.state.get_release(fleet, release)
        if found is None:
            raise UsageError(f"fleet {fleet} has no release r{release}")
        releases = [found]
    else:
        releases = ctx.state.releases(fleet, limit=limit)
    before = ctx.state.predecessor(fleet, releases[0].number, GOOD) if releases else None
    return history_rows(releases, before)


def history_rows(
    releases: Sequence[ReleaseRecord], before: ReleaseRecord | None
) -> list[HistoryEntry]:
    """One row per release (oldest first); each one's changes are measured against the
    newest good release before it, ``before`` for the first of them."""
    entries = []
    previous = before
    for release in releases:
        entries.append(
            HistoryEntry(
                release.number,
                release.kind,
                release.status,
                release.started_at,
                release.user,
                release.source,
                release.message,
                tuple(_changes(previous, release)),
                release.failure,
            )
        )
        if release.status in GOOD:
            previous = release
    return entries


def _port(port: int | None) -> str:
    return "none" if port is None else str(port)


def _changes(before: ReleaseRecord | None, after: ReleaseRecord) -> list[str]:
    old = desired_from_record(before.roles) if before else {}
    new = desired_from_record(after.roles)
    changes = []
    for name, rr in sorted(new.items()):
        was = old.get(name)
        if was is None:
            changes.append(f"{name}: added ({rr.image_version} x{rr.replicas})")
            continue
        if was.image_version != rr.image_version:
            changes.append(f"{name}: image {was.image_version} -> {rr.image_version}")
        if was.config_hash != rr.config_hash:  # which secret changed, never its value
            said = was.changes_to(rr) or ["run configuration changed"]
            changes += [f"{name}: {change}" for change in said]
        if was.replicas != rr.replicas:
            changes.append(f"{name}: replicas {was.replicas} -> {rr.replicas}")
        if was.public != rr.public:
            changes.append(f"{name}: public port {_port(was.public)} -> {_port(rr.public)}")
        if was.deploy != rr.deploy:
            changes.append(f"{name}: deploy settings changed")
    changes += [f"{name}: removed" for name in sorted(set(old) - set(new))]
    return changes


def destroy(ctx: Context, deletion: Deletion | None = None) -> list[str]:
    """Remove every instance and the edge of the fleet. Volumes are kept, except those
    ``deletion`` names and the data guard allows (``volumes.check_deletion``, checked
    before anything is removed); those are deleted last.

    Raises:
        DataGuardError: a volume named may not be deleted; nothing was removed.
    """
    removed = []
    with ctx.state.lock("deploy", wait=0, purpose="destroy"):
        doomed = check_deletion(ctx, deletion) if deletion and deletion.names else ()
        for i in observe(ctx.engine, ctx.scope):
            ctx.engine.remove(i.name)
            ctx.state.retire_instance(ctx.scope.fleet, i.name, "destroyed")
            removed.append(i.name)
        removed += remove_probes(ctx.engine, ctx.scope)
        edge = ctx.edge.container()
        ctx.edge.remove(forget=True)
        if edge is not None:
            removed.append(edge.name)
        details: dict[str, object] = {"removed": removed}
        # Nothing is to run any more: a watcher would otherwise start it all again, and
        # status would call the fleet unwell. A later deploy (or rollback) starts anew.
        ended = ctx.state.end_active_release(ctx.scope.fleet)
        if ended is not None:
            details["release_ended"] = ended.number
        try:
            ctx.engine.remove_network(ctx.scope.network)
        except EngineError as exc:  # something else still uses it: it stays
            details["network_kept"] = exc.message
        ctx.state.record_audit(ctx.scope.fleet, "destroy", "fleet", "ok", details)
        if deletion is not None and doomed:
            removed += delete_volumes(ctx, deletion, doomed)
    return removed
