"""``corral reconcile`` and ``corral watch``: the live fleet brought back to its ACTIVE
release through the same planner and executor as a deploy, with no bake and no gate.

An instance that died, went missing or was tainted (drifted, burned) is a planning input:
``plan_deploy`` replaces it as it replaces a stale one (new first, except dead instances
and single-writer holders, which the generators already handle stop-first). Orphans
(corral's labels, a role the active release does not hold) are retired by the plan too.
New instances belong to the active release and are named on from its highest index, as
the undo does, so no release is recorded for a repair.

A pass plans without the deploy lock; only when the plan changes something does it take
the lock (``wait=0``: a running deploy owns the fleet, the pass is skipped), plan again
under it, apply, and audit each burn with its evidence.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from corral.deploy.apply import Executor, Journal
from corral.deploy.context import Context
from corral.deploy.desired import Desired
from corral.deploy.drift import inspect_drift
from corral.deploy.fleet import observe_fleet
from corral.deploy.observe import list_scope
from corral.deploy.orchestrate import remember_edge
from corral.deploy.plan import Observed, Plan, plan_deploy
from corral.deploy.resolve import edge_image, resolve_release
from corral.deploy.secrets import check_unchanged, live_values, secret_names
from corral.deploy.supervise import (
    Alert,
    Backoff,
    Grace,
    degraded_roles,
    failed_roles,
    record_alert,
    unhealthy,
)
from corral.edge.container import EDGE_ROLE
from corral.engines.base import EngineEvent, FileChange
from corral.engines.capabilities import Capability, supports
from corral.errors import CorralError, LockedError
from corral.formats import LABEL_PREFIX

# Burned instances the caller knows of (name -> evidence): an exec event, changed files.
Taints = Mapping[str, str]


@dataclass(frozen=True)
class Burn:
    """One instance a pass replaced or removed, and why."""

    instance: str
    role: str
    reason: str


@dataclass(frozen=True)
class Reconciled:
    """What one pass did: ``unchanged``, ``converged``, ``skipped`` (a deploy holds the
    lock) or ``no-release`` (nothing went live yet)."""

    fleet: str
    status: str
    release: int | None = None
    burns: tuple[Burn, ...] = ()
    started: tuple[str, ...] = ()
    message: str = ""
    seconds: float = 0.0
    roles: tuple[str, ...] = ()  # the roles the pass looked at
    held: tuple[str, ...] = ()  # roles it left alone: their replacements keep failing

    def to_dict(self) -> dict[str, object]:
        return {
            "fleet": self.fleet,
            "status": self.status,
            "release": self.release,
            "burns": [b.__dict__ for b in self.burns],
            "started": list(self.started),
            "message": self.message,
            "seconds": round(self.seconds, 3),
            "held": list(self.held),
        }


@dataclass(frozen=True)
class _Target:
    release: int
    desired: Desired
    edge: str | None


def burns_of(plan: Plan) -> tuple[Burn, ...]:
    """Every instance ``plan`` retires, with the planner's reason: the pass's evidence."""
    burns = [
        Burn(change.instance, rp.role, change.reason)
        for rp in plan.roles
        for change in (*rp.stop, *rp.cleanup)
    ]
    burns += [Burn(c.instance, "", c.reason) for c in plan.orphans]
    return tuple(burns)


def started_of(plan: Plan) -> tuple[str, ...]:
    return tuple(name for rp in plan.roles for name in (*rp.new, *rp.restart))


def _target(ctx: Context) -> _Target | None:
    active = ctx.state.active_release(ctx.scope.fleet)
    if active is None:
        return None
    desired = resolve_release(active).desired
    return _Target(active.number, desired, edge_image(ctx, desired))


# More taints, judged on the pass's own observation (the watcher's unhealthy instances).
Look = Callable[[Desired, Observed], Taints]


def plan_repair(
    ctx: Context,
    target: _Target,
    taints: Taints,
    held: Collection[str] = (),
    look: Look | None = None,
) -> Plan:
    """The plan that brings the fleet back to ``target`` with ``taints`` (and what
    ``look`` finds in the observation) burned; pure but for reading the fleet. Roles in
    ``held`` (backing off: their replacements keep failing) are left exactly as they are,
    unless the edge must (re)start: it needs every role's frontend, so a plan that starts
    it holds nothing back."""
    observed = observe_fleet(ctx, target.desired, target.edge)
    if look is not None:
        taints = {**look(target.desired, observed), **taints}
    for name, why in taints.items():
        observed = observed.taint(name, why)
    if observed.edge.action in ("create", "start", "resume", "reload"):
        held = ()
    desired = {k: v for k, v in target.desired.items() if k not in held}
    untouched = [k for k in target.desired if k in held]
    return plan_deploy(ctx.scope, desired, observed, untouched, release=target.release)


def with_state_taints(ctx: Context, taints: Taints) -> Taints:
    """What a pass burns: ``taints`` but those of instances a break-glass session still
    holds (the exec the watcher saw is the session's own), and every taint kept in the
    state that is due (the session ended, or ran past its time limit)."""
    records = ctx.state.stores.taints.all(ctx.scope.fleet)
    if not records:
        return taints
    now = time.time()
    held = {r.instance for r in records if r.due > now}
    due = {r.instance: r.reason for r in records if r.due <= now}
    present = {c.name for c in list_scope(ctx.engine, ctx.scope)}
    gone = [r.instance for r in records if r.instance not in present]
    ctx.state.stores.taints.clear(ctx.scope.fleet, gone)  # replaced by a deploy, removed...
    return {**{n: why for n, why in taints.items() if n not in held}, **due}


def reconcile(
    ctx: Context,
    taints: Taints | None = None,
    drift: bool = False,
    held: Collection[str] = (),
    look: Look | None = None,
) -> Reconciled:
    """One pass: plan towards the active release; apply under the deploy lock if needed.

    ``drift``: also inspect every current instance and burn those whose image, command,
    environment, mounts, capabilities, user or ports left the release (``deploy/drift.py``).
    ``held``: roles left alone this pass (see ``plan_repair``). ``look``: more taints,
    found in the pass's observation (the watcher's instances unhealthy past their grace).

    Raises:
        DeployError: a replacement failed to become healthy (the caller backs off).
    """
    started = time.monotonic()
    fleet = ctx.scope.fleet
    target = _target(ctx)
    if target is None:
        return Reconciled(fleet, "no-release", message="no release is active")
    taints = with_state_taints(ctx, taints or {})
    if drift:
        taints = {**inspect_drift(ctx, target.desired), **taints}
    roles = tuple(sorted(target.desired))
    if not plan_repair(ctx, target, taints, held, look).has_changes:
        return Reconciled(fleet, "unchanged", target.release, roles=roles, held=tuple(held))
    try:
        with ctx.state.lock("deploy", wait=0, purpose="reconcile"):
            done = _locked_pass(ctx, taints, started, held, look)
            return dataclasses.replace(done, roles=roles, held=tuple(held))
    except LockedError as exc:  # a deploy owns the fleet: never fight it
        return Reconciled(fleet, "skipped", target.release, message=exc.message)


def _locked_pass(
    ctx: Context, taints: Taints, started: float, held: Collection[str], look: Look | None
) -> Reconciled:
    """Under the deploy lock: plan again (a deploy may have finished meanwhile), apply."""
    fleet = ctx.scope.fleet
    target = _target(ctx)
    if target is None:
        return Reconciled(fleet, "no-release", message="no release is active")
    plan = plan_repair(ctx, target, with_state_taints(ctx, taints), held, look)
    if not plan.has_changes:
        return Reconciled(fleet, "unchanged", target.release)
    _apply(ctx, plan, target)
    ctx.state.stores.taints.clear(fleet, [b.instance for b in burns_of(plan)])
    took = time.monotonic() - started
    return Reconciled(
        fleet, "converged", target.release, burns_of(plan), started_of(plan), seconds=took
    )


def _apply(ctx: Context, plan: Plan, target: _Target) -> None:
    journal = Journal(ctx.state, ctx.scope.fleet)
    roles = sorted({rp.role for rp in plan.roles if rp.start})
    try:
        values = live_values(
            secret_names(target.desired, roles),
            "export them: corral watch starts replacement instances",
        )
        # A watcher started before a rotation holds the old value: an instance started
        # with it is unlike its release, burned as drifted, started again... a loop that
        # restarted a database every few seconds. Refuse, and say which value is wanted.
        check_unchanged(target.desired, roles, values, ctx.secret_key, watcher=True)
    except CorralError as exc:
        journal.audit("reconcile", "fleet", "failed", {"error": str(exc)})
        raise
    for burn in burns_of(plan):
        journal.audit("burn", burn.instance, "ok", {"role": burn.role, "reason": burn.reason})
    executor = Executor(
        ctx.engine,
        ctx.scope,
        journal,
        ctx.progress,
        ctx.edge if target.edge else None,
        values,
        key=ctx.secret_key,
    )
    try:
        executor.apply(plan)
    except CorralError as exc:
        journal.audit("reconcile", "fleet", "failed", {"error": str(exc)})
        raise
    remember_edge(ctx, target.desired, target.edge)
    journal.audit(
        "reconcile", "fleet", "ok", {"release": target.release, "started": list(started_of(plan))}
    )


def taint_of(event: EngineEvent) -> str | None:
    """What an engine event says about its instance: an exec into it burns it."""
    if event.kind == "exec":
        return f"exec event at {event.time}"
    return None


def drifted_files(changes: Sequence[FileChange], limit: int = 5) -> str | None:
    """The evidence of a changed root filesystem, from what changed since the watcher's
    first diff of the instance (volumes and tmpfs never show in a diff)."""
    if not changes:
        return None
    shown = ", ".join(f"{c.kind} {c.path}" for c in changes[:limit])
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return f"files changed: {shown}{more}"


@dataclass
class Watcher:
    """``corral watch``: a pass every ``interval`` seconds, and at once when the engine's
    event stream reports a death or an exec (an exec taints its instance); every
    ``diff_interval`` seconds the running instances' root filesystems are diffed, and a
    changed one is tainted (against its first diff: the engine's own mount points).
    While passes keep failing it backs off exponentially (up to
    ``max_backoff``), so a role whose new instances crash is not churned; ``on_failure``
    is told each failure. A role whose replacement failed is held (left alone) for its
    own back-off and, after ``degraded_after`` failures in a row, degraded: audited and
    told to ``on_alert`` (a log line, a webhook), as is its recovery
    (``deploy/supervise.py``). An instance unhealthy for longer than its role's
    ``deploy.grace`` is tainted."""

    ctx: Context
    interval: float = 2.0
    max_backoff: float = 300.0
    diff_interval: float = 30.0
    on_pass: Callable[[Reconciled], None] = lambda r: None
    on_failure: Callable[[Exception, float], None] = lambda e, s: None
    on_alert: Callable[[Alert], None] = lambda a: None
    degraded_after: int = 3
    failures: int = 0
    taints: dict[str, str] = field(default_factory=dict)
    wake: threading.Event = field(default_factory=threading.Event)
    grace: Grace = field(default_factory=Grace)
    backoff: Backoff | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_diff: float = 0.0
    _baseline: dict[str, set[FileChange]] = field(default_factory=dict)

    def delay(self) -> float:
        if not self.failures:
            return self.interval
        return float(min(self.max_backoff, self.interval * 2**self.failures))

    def seen(self, event: EngineEvent) -> None:
        """One engine event: taint its instance if it says so; a death or an exec wakes
        the loop for a pass now."""
        why = taint_of(event)
        if why and event.labels.get(LABEL_PREFIX + "role") not in (None, EDGE_ROLE):
            with self._lock:
                self.taints.setdefault(event.container, why)
        if why or event.kind in ("died", "kill", "oom"):
            self.wake.set()

    def _follow(self) -> None:
        for event in self.ctx.engine.events(self.ctx.scope.selector()):
            self.seen(event)

    def _due(self) -> bool:
        """Whether the interval for diffs and inspections has come round again."""
        if time.monotonic() - self._last_diff < self.diff_interval:
            return False
        self._last_diff = time.monotonic()
        return True

    def _diff(self) -> None:
        if not supports(self.ctx.engine, Capability.DIFF):
            return
        for info in list_scope(self.ctx.engine, self.ctx.scope):
            role = info.labels.get(LABEL_PREFIX + "role")
            if info.state != "running" or role in (None, EDGE_ROLE):
                continue
            changes = self.ctx.engine.diff(info.name)
            # The engine's own start (mount points and their parents, /etc's resolv.conf
            # and hosts) shows in the first diff: that is the instance's baseline.
            baseline = self._baseline.setdefault(info.name, set(changes))
            why = drifted_files([c for c in changes if c not in baseline])
            if why:
                with self._lock:
                    self.taints.setdefault(info.name, why)

    def _roles(self) -> Backoff:
        if self.backoff is None:
            fleet = self.ctx.scope.fleet
            self.backoff = Backoff(fleet, self.interval, self.max_backoff, self.degraded_after)
            self.backoff.mark_degraded(degraded_roles(self.ctx.state, fleet))
        return self.backoff

    def _overdue(self, desired: Desired, observed: Observed) -> dict[str, str]:
        """Instances unhealthy past their role's grace, in the pass's observation."""
        return self.grace.overdue(unhealthy(desired, observed), time.monotonic())

    def once(self) -> Reconciled | None:
        try:
            return self._once()
        finally:
            # No CLI connection is kept between passes: an edge reload or take-over
            # leaves an open one with the old HAProxy worker, which its soft stop waits
            # for (until hard-stop-after, 60 s), and every later pass would read that
            # frozen worker and add servers to it, not to the one taking the traffic.
            self.ctx.edge.close()

    def _once(self) -> Reconciled | None:
        roles = self._roles()
        held = roles.held(time.monotonic())
        try:
            due = self._due()
            if due:
                self._diff()
            with self._lock:
                taints = dict(self.taints)
            result = reconcile(self.ctx, taints, drift=due, held=held, look=self._overdue)
        except CorralError as exc:
            failed = failed_roles(exc)
            self._alert(roles.failed(failed, exc.message, time.monotonic()))
            if not failed:  # not a role's replacement: the whole loop backs off
                self.failures += 1
            waits = [roles.delay(roles.roles[r].failures) for r in failed if r in roles.roles]
            self.on_failure(exc, max(waits) if waits else self.delay())
            return None
        self.failures = 0
        if result.status in ("unchanged", "converged"):
            self._alert(roles.passed(result.roles, held))
        with self._lock:  # burned or gone: their taints are spent
            for burn in result.burns:
                self.taints.pop(burn.instance, None)
        self.on_pass(result)
        return result

    def _alert(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            record_alert(self.ctx.state, alert)
            self.on_alert(alert)

    def run(self, passes: int | None = None) -> None:
        if supports(self.ctx.engine, Capability.EVENTS):
            threading.Thread(target=self._follow, daemon=True, name="corral-events").start()
        done = 0
        while passes is None or done < passes:
            self.wake.clear()
            self.once()
            done += 1
            if passes is None or done < passes:
                if self.failures:  # backing off: an event is no reason to try sooner
                    time.sleep(self.delay())
                    continue
                self.wake.wait(self.delay())
                time.sleep(0.05 if self.wake.is_set() else 0)  # let a burst of events land
