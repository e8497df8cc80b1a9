"""The fleet as it runs: one look at the engine, turned into the planner's ``Observed``.

``observe_fleet`` is the one way plan, deploy, undo, rollback, ``status`` and
``edge replace`` read a live fleet. It only reads: the engine (one listing of the fleet's
containers, one of its volumes) and the state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from corral.deploy.context import GOOD, Context
from corral.deploy.dataguard import KnownVolume
from corral.deploy.desired import Desired, desired_from_record
from corral.deploy.observe import list_scope, observe
from corral.deploy.plan import Observed
from corral.deploy.scope import LIVE
from corral.edge.container import frontends
from corral.engines.base import ContainerInfo
from corral.state import State


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
    ctx: Context,
    desired: Desired,
    edge_image: str | None,
    seen: Sighting | None = None,
    backups: bool = False,
    edge_view: Desired | None = None,
) -> Observed:
    """The fleet as it runs, from ``seen`` or from a fresh look; changes nothing.

    ``backups``: say which volumes a plan must back up before it replaces instances
    (a deploy's and a rollback's plan; never an undo's). ``edge_view``: the roles the
    edge is judged with, when ``desired`` lacks some (``corral plan``: an unbuilt role
    still has its port); default ``desired``.
    """
    seen = seen or look(ctx)
    listing = seen.containers
    instances = observe(ctx.engine, ctx.scope, listing)
    numbers = {i.release for i in instances}
    view = desired if edge_view is None else edge_view
    edge = ctx.edge.observe(view, edge_image, listing)
    releases = ctx.state.releases_numbered(ctx.scope.fleet, numbers)
    return Observed(
        instances=instances,
        volumes=set(seen.volumes),
        good_releases=ctx.state.release_numbers(ctx.scope.fleet, GOOD),
        standby=standby_names(ctx.state, ctx.scope.fleet),
        now=datetime.now(UTC),
        edge=edge,
        edge_servers=ctx.edge.observe_servers(view, edge) if frontends(view) else {},
        networks={n for c in listing if c.state == "running" for n in c.addresses},
        released={r.number: desired_from_record(r.roles) for r in releases},
        last_unavailable=ctx.state.last_unavailable(ctx.scope.fleet),
        backups_due=backups_due(ctx, desired, datetime.now(UTC)) if backups else {},
        known_volumes=known_volumes(ctx.state, ctx.scope.fleet) if ctx.scope.env == LIVE else {},
    )


def known_volumes(state: State, fleet: str) -> dict[str, KnownVolume]:
    """The fleet's recorded live volumes (not deleted), by engine name."""
    return {v.name: KnownVolume(v.role, v.volume, v.path) for v in state.volumes(fleet)}


def backups_due(ctx: Context, desired: Desired, now: datetime) -> dict[str, tuple[str, ...]]:
    """Per role of ``desired``, its backed-up volumes (spec: ``volumes.*.backup``) whose
    newest verified snapshot is older than ``backup.max_age`` (or that have none).

    A snapshot counts for the engine volume it was taken of, as in ``corral volumes`` and
    the data guard: after a restore the role mounts a new volume, which a recent backup of
    the one it replaced does not cover."""
    settings = ctx.spec.fleet.backup
    if not settings.before_deploy:
        return {}
    fresh = {
        r.engine_volume
        for r in ctx.state.stores.backups.of_fleet(ctx.scope.fleet)
        if r.recent(now, settings.max_age)
    }
    due: dict[str, tuple[str, ...]] = {}
    for name, rr in desired.items():
        role = ctx.spec.fleet.roles.get(name)
        backed_up = sorted(role.backups) if role else []
        volumes = tuple(v for v in backed_up if rr.engine_volume(ctx.scope, v) not in fresh)
        if volumes:
            due[name] = volumes
    return due


def standby_names(state: State, fleet: str) -> set[str]:
    """Instances whose latest record says corral stopped them on purpose (blue-green)."""
    latest: dict[str, str | None] = {}
    for record in state.instances(fleet, live_only=False):  # oldest first
        latest[record.name] = record.outcome if record.retired_at else None
    return {name for name, outcome in latest.items() if outcome == "standby"}
