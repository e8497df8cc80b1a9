"""Every error corral raises on purpose, in one shallow tree.

    CorralError                      root: the CLI maps each kind to an exit code
    ├── SpecError                    the fleet spec is unreadable or invalid (exit 2)
    ├── UsageError                   the command line asks for something impossible (exit 2)
    ├── MissingToolError             a system program corral needs is not installed (exit 1)
    ├── EngineError                  the container engine refused or failed (exit 1)
    │   └── NotFoundError            an engine object that should exist does not
    ├── BuildError                   a bake failed; carries the build log (exit 1)
    ├── StateError                   the state database is unusable or locked (exit 1)
    │   └── LockedError              another corral holds the lock; names the holder
    ├── GateError                    a safety gate refused (untested image, SSH server...) (exit 1)
    └── DeployError                  a deploy failed and was rolled back; says why (exit 1)

Foreign exceptions (subprocess, sqlite3, OSError) are caught at the boundary where they
happen and re-raised as one of these with ``raise ... from exc``. Each error carries
structured fields so ``--json`` can show them; ``to_dict`` is what the JSON view prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CorralError(Exception):
    """Root of every error corral raises on purpose."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The error as plain data, for ``--json`` output."""
        return {"error": self.kind, "message": self.message, **self.details}


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec, located as precisely as the YAML allows.

    ``line`` and ``column`` are 1-based; 0 means unknown (for example a missing file).
    ``path`` is the field path inside the document, e.g. ``roles.web.run.port``.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


class SpecError(CorralError):
    """The spec could not be read or is invalid; ``diagnostics`` lists every problem."""

    exit_code = 2
    kind = "spec"

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        count = len(diagnostics)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the spec",
            diagnostics=[d.to_dict() for d in diagnostics],
        )
        self.diagnostics = diagnostics


class UsageError(CorralError):
    exit_code = 2
    kind = "usage"


class MissingToolError(CorralError):
    """A system program is missing; ``install`` says what to install."""

    kind = "missing-tool"

    def __init__(self, tool: str, install: str) -> None:
        super().__init__(
            f"{tool} is not installed; install it with: {install}", tool=tool, install=install
        )


class EngineError(CorralError):
    """The engine failed; ``command`` and ``stderr`` say how."""

    kind = "engine"


class NotFoundError(EngineError):
    kind = "not-found"


class BuildError(CorralError):
    """A bake failed; ``log`` holds the tail of the build output."""

    kind = "build"


class StateError(CorralError):
    kind = "state"


class LockedError(StateError):
    """Another corral process holds a lock; ``holder`` describes it."""

    kind = "locked"


class GateError(CorralError):
    kind = "gate"


class DeployError(CorralError):
    """A deploy did not complete; ``role``, ``reason`` and ``log`` say why."""

    kind = "deploy"
