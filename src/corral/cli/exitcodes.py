"""corral's exit codes: the one contract a script reads (docs/cli.md, "Exit codes").

Each code means one thing, whatever the command, so a CI script can tell "the spec is
wrong" (2) from "the plan has changes" (3), "another deploy holds the lock" (4), "the
gate refused, nothing changed" (5), "the deploy failed and the fleet is back on the
previous release" (6) and "the state cannot be used" (7). As ``terraform plan
-detailed-exitcode`` does, pending changes are a result, not an error. The CLI
(``cli/main.py``) is the only place that turns an exception into one of them, with
:func:`for_error`.
"""

from __future__ import annotations

from enum import IntEnum

from corral.errors import (
    CorralError,
    DeployError,
    GateError,
    LockedError,
    ReleaseFailed,
    SpecError,
    StateError,
    UsageError,
)


class ExitCode(IntEnum):
    """What a ``corral`` process's exit status means."""

    #: Done; for ``plan``: nothing would change.
    OK = 0
    #: The operation failed: the engine, a build, the state database, a deploy that could
    #: not go back (or had nothing to go back to), a role's tests.
    FAILED = 1
    #: Bad usage (an unknown role, a bad option) or an invalid spec; nothing was done.
    USAGE = 2
    #: ``plan`` only: something would change.
    CHANGES = 3
    #: Another corral holds the lock this command needs (a deploy, an edge replacement);
    #: nothing was done. Retrying later (or ``--wait``) may succeed.
    LOCKED = 4
    #: A safety gate refused (an untested image, a secret not set or changed, an SSH
    #: server in an image, an edge that would see an instance unhealthy, a revoked image,
    #: a fleet another state owns, the data guard); nothing changed.
    REFUSED = 5
    #: A deploy or rollback failed and the fleet is back on the release it had before.
    ROLLED_BACK = 6
    #: The state cannot be used: it does not answer, refuses the credentials, was written
    #: by a newer corral, is read-only or its disk is full. The message names the state;
    #: nothing was changed, unless a deploy was under way: then the message says where it
    #: stopped (nothing is undone half-way) and the next deploy finishes it.
    STATE = 7
    #: Ctrl-C (or no answer to a question): see docs/cli.md for what is left behind.
    INTERRUPTED = 130


def for_error(error: CorralError) -> ExitCode:
    """The exit code of a command that ended with ``error``."""
    if isinstance(error, SpecError | UsageError):
        return ExitCode.USAGE
    if isinstance(error, LockedError):
        return ExitCode.LOCKED
    if isinstance(error, GateError):
        return ExitCode.REFUSED
    if isinstance(error, ReleaseFailed) and error.rolled_back_to is not None:
        return ExitCode.ROLLED_BACK
    if isinstance(error, StateError) or (
        isinstance(error, DeployError) and error.cause == StateError.kind
    ):
        return ExitCode.STATE
    return ExitCode.FAILED
