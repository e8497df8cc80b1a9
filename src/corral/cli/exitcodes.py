"""corral's exit codes: the one contract a script reads (docs/cli.md, "Exit codes").

Each code means one thing, whatever the command, so a CI script can tell "the spec is
wrong" from "the plan has changes" from "the deploy failed". The CLI (``cli/main.py``)
is the only place that turns an exception into one of them, with :func:`for_error`.
"""

from __future__ import annotations

from enum import IntEnum

from corral.errors import CorralError, SpecError, UsageError


class ExitCode(IntEnum):
    """What a ``corral`` process's exit status means."""

    #: Done; for ``plan``: nothing would change.
    OK = 0
    #: The operation failed: the engine, a build, the state database, a deploy, a test.
    FAILED = 1
    #: Bad usage (an unknown role, a bad option) or an invalid spec; nothing was done.
    USAGE = 2
    #: Ctrl-C (or no answer to a question): see docs/cli.md for what is left behind.
    INTERRUPTED = 130


def for_error(error: CorralError) -> ExitCode:
    """The exit code of a command that ended with ``error``."""
    if isinstance(error, SpecError | UsageError):
        return ExitCode.USAGE
    return ExitCode.FAILED
