"""The canary watch: a new release's first instances take a bounded share of live requests
at the edge while their error rate and latency are compared with the old instances'.

The share is set with HAProxy server weights through the runtime API: the old servers get
``OLD_WEIGHT`` each and the canaries together ``traffic``% of the sum, so a canary never
takes more than its share whatever the number of old servers. The comparison reads the
edge's own counters (``show stat``) before and after the watch; a canary that stops
passing its check, or an instance that dies, fails at once. Whatever the verdict, the
weights are put back before this returns: the rest of the release, or the undo, starts
from the edge as it was.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.deploy.context import Context
from corral.deploy.observe import list_scope
from corral.deploy.plan import Plan, RolePlan
from corral.edge.runtime import ProxyCounters
from corral.errors import DeployError, EngineError

OLD_WEIGHT = 100  # per old server: room to give a canary a small share (weights are 0-256)
TICK = 0.25


@dataclass(frozen=True)
class Side:
    """What one set of servers (the canaries, or the old ones) met during the watch."""

    requests: int = 0
    errors: int = 0
    latency_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class Verdict:
    """One role's canary: its instances, what they and the old ones met, and the verdict."""

    role: str
    canaries: tuple[str, ...]
    passed: bool
    why: str
    share: int = 0  # the percentage of requests the canaries were given (0: not public)
    canary: Side = field(default_factory=Side)
    old: Side = field(default_factory=Side)

    def to_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "canaries": list(self.canaries),
            "passed": self.passed,
            "why": self.why,
            "share": self.share,
            "canary": self.canary.to_dict(),
            "old": self.old.to_dict(),
        }


def canary_weights(old: int, canaries: int, traffic: int) -> int:
    """The weight of each canary server so that ``canaries`` of them take ``traffic``% of
    the requests beside ``old`` servers of weight ``OLD_WEIGHT`` (1-256)."""
    if old == 0:
        return OLD_WEIGHT
    total = traffic * old * OLD_WEIGHT / (100 - traffic)
    return max(1, min(256, round(total / canaries)))


def compare(role: RolePlan, canary: Side, old: Side, share: int) -> Verdict:
    """The verdict on one public role's canary from what it and the old servers met."""
    rr = role.release
    assert rr is not None
    policy = rr.deploy.canary
    names = role.new
    if canary.requests == 0:
        why = "took no request during the watch (no traffic): health only"
        return Verdict(role.role, names, True, why, share, canary, old)
    excess = canary.error_rate - old.error_rate
    if canary.errors and excess > policy.max_error_rate:
        why = (
            f"error rate {canary.error_rate:.1%} ({canary.errors} of {canary.requests} "
            f"requests) against {old.error_rate:.1%} on the old instances"
        )
        return Verdict(role.role, names, False, why, share, canary, old)
    if canary.latency_ms is not None and old.latency_ms is not None:
        limit = old.latency_ms * policy.latency_factor + policy.latency_slack * 1000
        if canary.latency_ms > limit:
            why = (
                f"mean response time {canary.latency_ms:.0f} ms against "
                f"{old.latency_ms:.0f} ms on the old instances (limit {limit:.0f} ms)"
            )
            return Verdict(role.role, names, False, why, share, canary, old)
    why = (
        f"error rate {canary.error_rate:.1%} of {canary.requests} requests "
        f"(old: {old.error_rate:.1%}), mean response {_ms(canary.latency_ms)} "
        f"(old: {_ms(old.latency_ms)})"
    )
    return Verdict(role.role, names, True, why, share, canary, old)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def side(
    first: Mapping[tuple[str, str], ProxyCounters],
    last: Mapping[tuple[str, str], ProxyCounters],
    backend: str,
    names: Sequence[str],
) -> Side:
    """What servers ``names`` of ``backend`` met between two readings of the counters."""
    requests = errors = 0
    weighted = 0.0
    for name in names:
        now = last.get((backend, name))
        if now is None:
            continue
        was = first.get((backend, name))
        grown = now.requests - (was.requests if was else 0)
        failed = _errors(now) - (_errors(was) if was else 0)
        requests += max(0, grown)
        errors += max(0, failed)
        weighted += now.response_ms * max(0, grown)
    latency = weighted / requests if requests else None
    return Side(requests, errors, latency)


def _errors(row: ProxyCounters) -> int:
    """Requests a server failed: answered 5xx, broke its answer, refused the connection."""
    return row.http_5xx + row.response_errors + row.connection_errors + row.server_aborts


def watch(
    ctx: Context,
    plan: Plan,
    seconds: float,
    on_tick: Callable[[], None] = lambda: None,
) -> list[Verdict]:
    """Give each public role's canaries their share of requests for ``seconds``, compare.

    ``plan`` is the canary's plan (``plan.plan_canary``): its roles' ``new`` instances are
    the canaries. Weights are restored before returning or raising.

    Raises:
        DeployError: a canary failed (its check, its container, or the comparison),
            naming the role and why; the caller takes the fleet back.
    """
    roles = [rp for rp in plan.roles if rp.new and rp.release is not None]
    public = [rp for rp in roles if rp.release is not None and rp.release.public is not None]
    edge = ctx.edge if public else None
    restore: dict[str, dict[str, int]] = {}
    shares: dict[str, int] = {}
    try:
        for rp in public:
            restore[rp.role], shares[rp.role] = _let_in(ctx, rp)
        first = _reading(ctx) if edge else {}
        ctx.progress.step("canary", f"watching {_names(roles)} for {seconds:g}s")
        deadline = time.monotonic() + seconds
        while True:
            _check_alive(ctx, roles)
            on_tick()
            if time.monotonic() >= deadline:
                break
            time.sleep(min(TICK, max(0.0, deadline - time.monotonic())))
        last = _reading(ctx) if edge else {}
    finally:
        for role, weights in restore.items():
            with contextlib.suppress(EngineError):
                ctx.edge.api.set_weights(role, weights)
    verdicts = []
    for rp in roles:
        if rp in public:
            olds = [s for s in restore[rp.role] if s not in rp.new]
            canary = side(first, last, rp.role, rp.new)
            verdicts.append(compare(rp, canary, side(first, last, rp.role, olds), shares[rp.role]))
        else:
            why = f"not behind the edge: healthy for {seconds:g}s (no traffic compared)"
            verdicts.append(Verdict(rp.role, rp.new, True, why))
    failed = [v for v in verdicts if not v.passed]
    for v in verdicts:
        ctx.progress.step(v.role, f"canary {'passed' if v.passed else 'FAILED'}: {v.why}")
    if failed:
        raise DeployError.of_roles(
            [
                DeployError(
                    f"role {v.role}: the canary {', '.join(v.canaries)} failed: {v.why}",
                    role=v.role,
                    reason=v.why,
                )
                for v in failed
            ]
        )
    return verdicts


def _let_in(ctx: Context, rp: RolePlan) -> tuple[dict[str, int], int]:
    """Weigh the role's servers so its canaries take their share, then let them in.

    Returns:
        (the weights to put back, the share given in percent).
    """
    assert rp.release is not None
    api = ctx.edge.api
    servers = api.servers(rp.role)
    old = [s for s in servers if s.name not in rp.new and s.admin == "ready"]
    usual = old[0].weight if old else 1
    restore = {s.name: s.weight for s in old} | {name: usual for name in rp.new}
    traffic = rp.release.deploy.canary.traffic
    each = canary_weights(len(old), len(rp.new), traffic)
    weights = {s.name: OLD_WEIGHT for s in old} | {name: each for name in rp.new}
    api.set_weights(rp.role, weights)
    ctx.edge.switch(rp.role, ready=list(rp.new), drain=[])
    ctx.progress.step(rp.role, f"canary {', '.join(rp.new)} takes {traffic}% of requests")
    return restore, traffic


def _reading(ctx: Context) -> dict[tuple[str, str], ProxyCounters]:
    return {c.key: c for c in ctx.edge.api.counters() if c.kind == "server"}


def _check_alive(ctx: Context, roles: Sequence[RolePlan]) -> None:
    """Every canary still runs and, behind the edge, still passes the edge's check."""
    running = {c.name for c in list_scope(ctx.engine, ctx.scope) if c.state == "running"}
    for rp in roles:
        assert rp.release is not None
        dead = [n for n in rp.new if n not in running]
        if dead:
            raise DeployError(
                f"role {rp.role}: the canary {', '.join(dead)} stopped running",
                role=rp.role,
                reason="the canary stopped running",
                log=_logs(ctx, dead),
            )
        if rp.release.public is None:
            continue
        for server in ctx.edge.api.servers(rp.role):
            if server.name in rp.new and not server.healthy:
                why = f"the canary {server.name} failed the edge's check: {server.check_words}"
                raise DeployError(f"role {rp.role}: {why}", role=rp.role, reason=why)


def _logs(ctx: Context, names: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for name in names:
        with contextlib.suppress(Exception):
            lines += [f"{name}: {line}" for line in ctx.engine.logs(name, 20).splitlines()]
    return lines


def _names(roles: Sequence[RolePlan]) -> str:
    return ", ".join(f"{rp.role} ({', '.join(rp.new)})" for rp in roles)
