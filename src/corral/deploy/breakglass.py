"""``corral break-glass``: the one sanctioned way to look inside a live instance, and
what it costs: the instance is burned afterwards, whether anything changed or not.

The order is the point. The instance is tainted in the state (due at the time limit)
and the session audited (who, from which host, why) *before* the shell opens; the watcher
then holds off the exec it sees (the instance is tainted and scheduled, not drifted).
When the session ends, or is cut at its time limit, the taint falls due and the instance
is replaced through the reconcile path (planner and executor, new instance first, so
capacity is kept). Should this process die mid-session, the taint still falls due at
the time limit and the next pass (``corral watch`` or ``corral reconcile``) burns it.

What a shell can reach is what the instance's user can: the session runs as that
user with the instance's capabilities (none unless the role names some), on a read-only
root with no set-uid program left (the image's last step strips them), so it cannot
become root; it needs a shell (``/bin/sh``) in the image, or ``command`` naming another
program there.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from corral.deploy.context import Context
from corral.deploy.observe import KIND_INSTANCE, LABEL, list_scope, pick
from corral.deploy.reconcile import Reconciled, reconcile
from corral.edge.container import EDGE_ROLE
from corral.engines.capabilities import Capability, require
from corral.errors import CorralError, UsageError
from corral.state.records import current_user

SHELL = ("/bin/sh",)
#: How long the end of a session waits for the deploy lock (a deploy or the watcher's
#: own pass may hold it) before leaving the replacement to the next pass.
REPLACE_WITHIN_S = 120.0


@dataclass(frozen=True)
class BreakGlass:
    """How a session went: its exit status (None: cut at the time limit), how long it
    lasted, and the pass that replaced the instance (None if none could yet)."""

    instance: str
    role: str
    who: str
    reason: str
    status: int | None
    seconds: float
    replaced: bool
    repair: Reconciled | None
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "role": self.role,
            "who": self.who,
            "reason": self.reason,
            "status": self.status,
            "cut_at_time_limit": self.status is None,
            "seconds": round(self.seconds, 3),
            "replaced": self.replaced,
            "repair": self.repair.to_dict() if self.repair else None,
            "message": self.message,
        }


def who() -> str:
    """``user@host``: the OS user and the host the session is opened from."""
    return f"{current_user()}@{socket.gethostname()}"


def live_role(ctx: Context, instance: str) -> str:
    """The role of ``instance``, a running live instance of the fleet.

    Raises:
        UsageError: it is not one (unknown, the edge, a probe, not running).
    """
    found = pick(list_scope(ctx.engine, ctx.scope), ctx.scope.labels(KIND_INSTANCE))
    match = next((c for c in found if c.name == instance), None)
    role = match.labels.get(LABEL + "role") if match else None
    if match is None or role in (None, EDGE_ROLE):
        names = ", ".join(sorted(c.name for c in found if c.state == "running")) or "none"
        raise UsageError(
            f"{instance} is not an instance of fleet {ctx.scope.fleet} (running: {names})"
        )
    if match.state != "running":
        raise UsageError(f"{instance} is not running ({match.state}): there is nothing to look at")
    assert role is not None
    return role


def break_glass(
    ctx: Context,
    instance: str,
    reason: str,
    time_limit: float,
    command: Sequence[str] = SHELL,
    tty: bool = True,
) -> BreakGlass:
    """Open a session in ``instance`` for at most ``time_limit`` seconds, audited and
    tainted first; replace the instance when it ends.

    Raises:
        UsageError: ``instance`` is not a running live instance, or ``reason`` is empty.
        NotSupportedError: the engine cannot run a command inside a container.
        EngineError: the session could not be opened.
    """
    if not reason.strip():
        raise UsageError('break-glass needs --reason "..." (it goes to the audit trail)')
    require(ctx.engine, Capability.EXEC, "corral break-glass")
    role = live_role(ctx, instance)
    fleet, by = ctx.scope.fleet, who()
    ctx.state.stores.taints.taint(
        fleet, instance, f"break-glass by {by}: {reason}", by, time.time() + time_limit
    )
    details = {"role": role, "who": by, "reason": reason, "time_limit_s": time_limit}
    ctx.state.record_audit(
        fleet, "break-glass", instance, "opened", {**details, "command": list(command)}
    )
    started = time.monotonic()
    try:
        status = ctx.engine.session(instance, command, tty, time_limit)
    except CorralError as exc:
        ctx.state.record_audit(
            fleet, "break-glass", instance, "failed", {**details, "error": exc.message}
        )
        raise
    finally:  # due now, whatever happened: the next pass burns it if this one cannot
        ctx.state.stores.taints.set_due(fleet, instance, time.time())
    took = time.monotonic() - started
    ended = {**details, "status": status, "seconds": round(took, 3)}
    ctx.state.record_audit(
        fleet, "break-glass", instance, "cut" if status is None else "closed", ended
    )
    repair, message = _replace(ctx, instance)
    replaced = ctx.engine.inspect(instance) is None
    return BreakGlass(instance, role, by, reason, status, took, replaced, repair, message)


def _replace(ctx: Context, instance: str) -> tuple[Reconciled | None, str]:
    """Passes until ``instance`` is gone (the watcher's may do it first), for at most
    :data:`REPLACE_WITHIN_S`; a pass that cannot take the lock is tried again."""
    deadline = time.monotonic() + REPLACE_WITHIN_S
    last: Reconciled | None = None
    while time.monotonic() < deadline:
        try:
            last = reconcile(ctx)
        except CorralError as exc:
            return last, f"the replacement failed: {exc.message}; it stays tainted"
        if ctx.engine.inspect(instance) is None:
            return last, ""
        if last.status == "no-release":
            return last, "no release is active to replace it from: it stays tainted"
        time.sleep(1.0)
    return last, "not replaced yet: it stays tainted, and the next reconcile pass burns it"
