"""What ``corral watch`` keeps an eye on beside the plan: instances unhealthy for longer
than their role's grace (``deploy.grace``), and roles whose replacements keep failing.

A role whose replacement failed is *held* (left exactly as it is) for an exponentially
growing back-off, so the healthy instances it still has keep serving and nothing churns;
after ``degraded_after`` failures in a row it is *degraded*: an audit entry
(``degraded``, outcome ``failed``), an alert (a log line, an optional webhook) and
``corral status`` exiting 1 until a pass repairs it (``degraded``, outcome ``ok``). The
audit trail is where ``status`` reads it, so it holds across processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from corral.deploy.desired import Desired
from corral.deploy.health import network_check, probe_once
from corral.deploy.plan import Observed
from corral.errors import CorralError, DeployError
from corral.state import State

DEGRADED = "degraded"  # the audit action of a role's trouble, and of its end (outcome ok)


@dataclass(frozen=True)
class Alert:
    """A role became degraded, or recovered: what the log line and the webhook say."""

    fleet: str
    role: str
    status: str  # degraded | recovered
    reason: str
    failures: int
    retry_in_s: float

    def to_dict(self) -> dict[str, object]:
        return {
            "fleet": self.fleet,
            "role": self.role,
            "status": self.status,
            "reason": self.reason,
            "failures": self.failures,
            "retry_in_s": round(self.retry_in_s, 1),
        }

    def line(self) -> str:
        if self.status == "recovered":
            return f"ALERT fleet {self.fleet} role {self.role} recovered"
        return (
            f"ALERT fleet {self.fleet} role {self.role} degraded: {self.failures} "
            f"replacements failed in a row, next try in {self.retry_in_s:g}s: {self.reason}"
        )


@dataclass
class _Trouble:
    failures: int = 0
    retry_at: float = 0.0
    degraded: bool = False


@dataclass
class Backoff:
    """Each role's failed replacements: held while it backs off, degraded past a count.

    Pure: the caller passes the time and records what it returns."""

    fleet: str
    interval: float = 2.0
    max_backoff: float = 300.0
    degraded_after: int = 3
    roles: dict[str, _Trouble] = field(default_factory=dict)

    def held(self, now: float) -> frozenset[str]:
        """The roles a pass leaves alone now."""
        return frozenset(r for r, t in self.roles.items() if t.retry_at > now)

    def delay(self, failures: int) -> float:
        return float(min(self.max_backoff, self.interval * 2**failures))

    def failed(self, roles: Collection[str], reason: str, now: float) -> list[Alert]:
        """Replacements of ``roles`` failed: back them off; the alerts of those that are
        degraded now (every failure of a degraded role alerts again: a log line)."""
        alerts = []
        for role in sorted(roles):
            trouble = self.roles.setdefault(role, _Trouble())
            trouble.failures += 1
            wait = self.delay(trouble.failures)
            trouble.retry_at = now + wait
            if trouble.failures >= self.degraded_after:
                trouble.degraded = True
                alerts.append(Alert(self.fleet, role, "degraded", reason, trouble.failures, wait))
        return alerts

    def passed(self, roles: Collection[str], held: Collection[str]) -> list[Alert]:
        """A pass went through for ``roles`` (those not ``held``): their trouble is over;
        the alerts of those that were degraded."""
        alerts = []
        for role in sorted(set(roles) - set(held)):
            trouble = self.roles.pop(role, None)
            if trouble is not None and trouble.degraded:
                alerts.append(Alert(self.fleet, role, "recovered", "", 0, 0.0))
        return alerts

    def mark_degraded(self, roles: Collection[str]) -> None:
        """Roles the audit trail says are degraded (from an earlier watcher)."""
        for role in roles:
            self.roles.setdefault(role, _Trouble(self.degraded_after, 0.0, True))


def webhook(
    url: str, scrub: Callable[[str], str], said: Callable[[str], None]
) -> Callable[[Alert], None]:
    """An ``on_alert`` that POSTs each alert as JSON to ``url``, in the background (a
    slow receiver never holds the loop up). Its reason passes ``scrub`` (the fleet's
    secret values); the URL, which may hold a token, is never logged: ``said`` hears
    only that a POST failed, and why."""

    import httpx  # here: only a watcher with a webhook needs it, 0.1 s of every command

    def post(alert: Alert) -> None:
        body = {**alert.to_dict(), "reason": scrub(alert.reason)}
        try:
            httpx.post(url, json=body, timeout=5.0).raise_for_status()
        except httpx.HTTPStatusError as exc:
            said(f"the alert webhook answered {exc.response.status_code}")
        except httpx.HTTPError as exc:
            said(f"the alert webhook failed: {type(exc).__name__}")

    def send(alert: Alert) -> None:
        threading.Thread(target=post, args=(alert,), daemon=True, name="corral-alert").start()

    return send


def failed_roles(exc: CorralError) -> tuple[str, ...]:
    """The roles a failed pass names (a DeployError's), else none."""
    if not isinstance(exc, DeployError):
        return ()
    return tuple(exc.roles) or ((exc.role,) if exc.role else ())


def record_alert(state: State, alert: Alert) -> None:
    outcome = "ok" if alert.status == "recovered" else "failed"
    state.record_audit(alert.fleet, DEGRADED, alert.role, outcome, alert.to_dict())


def degraded_roles(state: State, fleet: str, limit: int = 200) -> dict[str, str]:
    """Roles whose newest ``degraded`` audit entry says degraded: role -> reason."""
    latest: dict[str, tuple[str, str]] = {}
    for entry in state.audit_log(fleet, limit=limit, action=DEGRADED):  # oldest first
        latest[entry.target] = (entry.outcome, str(entry.details.get("reason", "")))
    return {role: why for role, (outcome, why) in latest.items() if outcome == "failed"}


# -- unhealthy for longer than the grace --------------------------------------------------


# name -> (what says it is unhealthy, its role's grace in seconds)
Unhealthy = Mapping[str, tuple[str, float]]


def unhealthy(desired: Desired, observed: Observed) -> dict[str, tuple[str, float]]:
    """Running instances of ``desired`` that are unhealthy in ``observed``, with their
    role's grace: a public role's instance the edge sends requests to and marks down (the
    edge's own check, as observed: nothing is asked of an edge that is down); another
    role's instance whose network check fails (as ``status`` checks it)."""
    found: dict[str, tuple[str, float]] = {}
    for role, servers in observed.edge_servers.items():
        if role not in desired:
            continue
        grace = desired[role].deploy.grace
        for s in servers:
            if s.admin == "ready" and not s.healthy:
                found[s.name] = ("the edge marks it down", grace)
    for i in observed.instances:
        checked = desired.get(i.role)
        if not i.running or checked is None or checked.public is not None:
            continue
        if checked.health is not None and checked.run.port and i.address:
            problem = probe_once(i.address, checked.run.port, network_check(checked.health))
            if problem is not None:
                found[i.name] = (f"its check fails ({problem})", checked.deploy.grace)
    return found


@dataclass
class Grace:
    """Since when each instance is unhealthy; which ones are past their role's grace."""

    since: dict[str, float] = field(default_factory=dict)

    def overdue(self, down: Unhealthy, now: float) -> dict[str, str]:
        """``down``: the instances unhealthy now (``unhealthy``). Those unhealthy for
        longer than their role's grace, with the evidence for their burn."""
        for name in list(self.since):
            if name not in down:
                del self.since[name]  # healthy again (or gone): the clock starts over
        late = {}
        for name, (why, limit) in down.items():
            first = self.since.setdefault(name, now)
            if now - first >= limit:
                late[name] = f"unhealthy for {now - first:.0f}s (grace {limit:g}s): {why}"
        return late
