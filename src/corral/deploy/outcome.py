"""How a failed release ends: the fleet goes back, the release is recorded with its whole
reason, the failure is audited; always all three, whatever happens while going back.

A release left ``deploying`` by a process that exited would be taken, by the next run's
sweep, for the release of a killed deploy and labelled "aborted ... the deploy process
died": that is what happened when going back raised. Statuses: ``rolled-back`` (the fleet
is back on the previous release), ``failed`` (nothing to go back to, or going back failed
too), ``aborted`` (interrupted; written by ``service.converge``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from corral.errors import BuildError, CorralError, DeployError, EngineError
from corral.errors import ReleaseFailed as ReleaseFailed  # re-exported: callers import it here
from corral.state import ReleaseRecord, State


@dataclass(frozen=True)
class Failed:
    """A release that failed: why, what the fleet goes back to, and how to go back
    (``undo`` returns the release number gone back to, None when there was none)."""

    release: ReleaseRecord
    previous: ReleaseRecord | None
    error: DeployError
    kind: str  # deploy | rollback
    undo: Callable[[], int | None]


def as_deploy_error(exc: CorralError) -> DeployError:
    """``exc`` as a DeployError (an engine or state error while deploying fails the
    release: it is not an interruption), keeping its kind and the log it carries."""
    if isinstance(exc, DeployError):
        return exc
    log = exc.log if isinstance(exc, EngineError | BuildError) else ()
    return DeployError(exc.message, reason=exc.message, log=log, cause=exc.kind)


def fail(state: State, failed: Failed) -> NoReturn:
    """Go back, then record and audit the release as rolled-back or failed; always raises.

    Raises:
        ReleaseFailed: saying what failed and where the fleet is now.
        BaseException: an interruption while going back, after the release was recorded.
    """
    exc, number = failed.error, failed.release.number
    try:
        undo_to = failed.undo()
    except CorralError as undo:
        back = f"going back to r{failed.previous.number if failed.previous else 0} failed too"
        record(state, failed, "failed", f"{exc.message}; {back}: {undo.message}")
        message = f"release r{number} failed: {exc.message}; {back}: {undo.message}"
        raise _failed(exc, message, number, undo_error=undo.message) from exc
    except BaseException:
        record(state, failed, "failed", f"{exc.message}; going back was interrupted")
        raise
    record(state, failed, "rolled-back" if undo_to else "failed", exc.message, undo_to)
    where = (
        f"the fleet is back on release r{undo_to}"
        if undo_to
        else "no earlier release to go back to: the failed instances were removed"
    )
    raise _failed(
        exc, f"release r{number} failed: {exc.message}; {where}", number, undo_to
    ) from exc


def _failed(
    exc: DeployError,
    message: str,
    number: int,
    undo_to: int | None = None,
    undo_error: str | None = None,
) -> ReleaseFailed:
    """``exc`` as the ReleaseFailed of release ``number``, with every field it had."""
    fields = {f.name: getattr(exc, f.name) for f in dataclasses.fields(DeployError)}
    return ReleaseFailed(
        **{**fields, "message": message},
        release=number,
        rolled_back_to=undo_to,
        undo_error=undo_error,
    )


def record(
    state: State, failed: Failed, status: str, message: str, undo_to: int | None = None
) -> None:
    """The release's end with its whole reason (scrubbed by ``state``), and its audit entry."""
    reason = {**failed.error.to_dict(), "rolled_back_to": undo_to}
    state.finish_release(failed.release.id, status, message, reason)
    details = {
        "release": failed.release.number,
        "kind": failed.kind,
        "error": message,
        "roles": list(failed.error.roles),
        "rolled_back_to": undo_to,
    }
    state.record_audit(failed.release.fleet, failed.kind, "fleet", status, details)
