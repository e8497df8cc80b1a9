"""``corral chaos``: kill random instances of chosen roles at an interval for a while,
to prove that the fleet heals itself (``corral watch`` replaces what died).

The choice is pure (:func:`choose`) and seeded: the same seed and the same fleet give the
same kills. It never kills more than a role can lose: an instance goes only while more
than ``replicas - max_unavailable`` of the role's instances are healthy (running, and up
in the edge for a public role), so a role with ``max_unavailable: 0`` (the default) is
never touched. One instance at most per tick. Each kill is audited.

A kill is the engine's (SIGKILL, no stop signal): a request in flight on that instance
is cut, and HAProxy replays it only when it may (a GET; never a POST that reached the
instance). With ``drain_first`` the edge stops sending it requests and lets those in
flight finish before the kill: the replacement is what is tested, not the edge's retries.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corral.deploy.context import Context
from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.observe import KIND_INSTANCE, LABEL, list_scope, pick
from corral.deploy.resolve import resolve_release
from corral.engines.base import ContainerInfo
from corral.errors import CorralError, UsageError

#: How long a drained kill lets the requests in flight on the instance finish.
DRAIN_S = 5.0


@dataclass(frozen=True)
class RoleHealth:
    """One role as chaos sees it: how many must stay healthy, and which are."""

    role: str
    keep: int  # replicas - max_unavailable
    healthy: tuple[str, ...]

    @property
    def spare(self) -> int:
        return max(0, len(self.healthy) - self.keep)


@dataclass(frozen=True)
class Kill:
    tick: int
    role: str
    instance: str
    at: float = 0.0  # seconds since chaos started


@dataclass(frozen=True)
class Chaos:
    """What a run did: its kills, and the ticks where no role had an instance to spare."""

    seed: int
    roles: tuple[str, ...]
    ticks: int
    kills: tuple[Kill, ...] = ()
    spared: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "roles": list(self.roles),
            "ticks": self.ticks,
            "kills": [k.__dict__ for k in self.kills],
            "spared_ticks": list(self.spared),
            "errors": list(self.errors),
        }


def choose(rng: random.Random, roles: Sequence[RoleHealth]) -> tuple[str, str] | None:
    """The (role, instance) to kill this tick, or None when no role can spare one.

    Two draws every tick, whatever the fleet looks like, so a tick with nothing to spare
    does not shift the choices of the ticks after it.
    """
    first, second = rng.random(), rng.random()
    able = sorted((r for r in roles if r.spare > 0), key=lambda r: r.role)
    if not able:
        return None
    role = able[int(first * len(able))]
    names = sorted(role.healthy)
    return role.role, names[int(second * len(names))]


def ticks(duration: float, interval: float) -> list[float]:
    """The offsets (seconds from the start) of every tick within ``duration``."""
    return [n * interval for n in range(math.ceil(duration / interval))]


def roles_to_hit(desired: Desired, asked: Sequence[str]) -> tuple[str, ...]:
    """The roles chaos may kill in (default: every role with replicas).

    Raises:
        UsageError: a role asked for is not in the active release.
    """
    unknown = sorted(set(asked) - set(desired))
    if unknown:
        raise UsageError(
            f"no role {', '.join(unknown)} in the active release "
            f"(roles: {', '.join(sorted(desired))})"
        )
    return (
        tuple(sorted(asked)) if asked else tuple(r for r in sorted(desired) if desired[r].replicas)
    )


def health(ctx: Context, desired: Desired, roles: Sequence[str]) -> list[RoleHealth]:
    """The roles' healthy instances now: running, and up in the edge when public."""
    listing = pick(list_scope(ctx.engine, ctx.scope), ctx.scope.labels(KIND_INSTANCE))
    return [_role_health(ctx, desired[role], listing) for role in roles]


def _role_health(ctx: Context, rr: RoleRelease, listing: list[ContainerInfo]) -> RoleHealth:
    running = {
        c.name for c in listing if c.state == "running" and c.labels.get(LABEL + "role") == rr.role
    }
    if rr.public is not None:
        up = {s.name for s in ctx.edge.servers(rr.role) if s.status == "UP" and s.admin == "ready"}
        running &= up
    keep = rr.replicas - rr.deploy.unavailable(rr.replicas)
    return RoleHealth(rr.role, keep, tuple(sorted(running)))


def run_chaos(
    ctx: Context,
    roles: Sequence[str],
    interval: float,
    duration: float,
    seed: int,
    drain_first: bool = False,
    on_tick: Callable[[int, tuple[str, str] | None], None] = lambda t, k: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Chaos:
    """Kill one instance every ``interval`` seconds for ``duration`` seconds.

    Raises:
        UsageError: no release is active, or a role asked for is not in it.
    """
    active = ctx.state.active_release(ctx.scope.fleet)
    if active is None:
        raise UsageError("no release is active: there is nothing to kill")
    desired = resolve_release(active).desired
    hit = roles_to_hit(desired, roles)
    settings = {"roles": list(hit), "interval_s": interval, "duration_s": duration, "seed": seed}
    ctx.state.record_audit(ctx.scope.fleet, "chaos", "fleet", "started", settings)
    rng, started = random.Random(seed), time.monotonic()
    kills: list[Kill] = []
    spared: list[int] = []
    errors: list[str] = []
    offsets = ticks(duration, interval)
    for tick, offset in enumerate(offsets):
        sleep(max(0.0, offset - (time.monotonic() - started)))
        victim = choose(rng, health(ctx, desired, hit))
        on_tick(tick, victim)
        if victim is None:
            spared.append(tick)
            continue
        try:
            _kill(ctx, desired[victim[0]], victim[1], drain_first)
        except CorralError as exc:
            errors.append(f"tick {tick}: {victim[1]}: {exc.message}")
            continue
        kills.append(Kill(tick, *victim, at=round(time.monotonic() - started, 3)))
        details = {"role": victim[0], "tick": tick, "seed": seed, "drained": drain_first}
        ctx.state.record_audit(ctx.scope.fleet, "chaos-kill", victim[1], "ok", details)
    result = Chaos(seed, hit, len(offsets), tuple(kills), tuple(spared), tuple(errors))
    ctx.state.record_audit(
        ctx.scope.fleet, "chaos", "fleet", "ended", {**settings, "kills": len(kills)}
    )
    return result


def _kill(ctx: Context, rr: RoleRelease, name: str, drain_first: bool) -> None:
    if drain_first and rr.public is not None:
        ctx.edge.drain(rr.role, name, DRAIN_S)
    ctx.engine.kill(name)
