"""Every error corral raises on purpose, in one shallow tree.

    CorralError                      root: the CLI maps each kind to an exit code
    ├── SpecError                    the fleet spec is unreadable or invalid
    ├── UsageError                   the command line asks for something impossible
    ├── MissingToolError             a system program corral needs is not installed
    ├── EngineError                  the container engine (or the edge) refused or failed
    │   ├── NotFoundError            an engine object that should exist does not
    │   └── NotSupportedError        the engine cannot do this at all (a capability it lacks)
    ├── BuildError                   a bake failed; carries the build log
    ├── StateError                   the state database is unusable, or a record is not as expected
    │   └── LockedError              another corral holds the lock; names the holder
    ├── BackupError                  a backup, restore, drill or prune failed; names the volume
    ├── GateError                    a safety gate refused (untested image, SSH server...)
    │   └── RevokedError             ... an image to start is revoked, or built on a revoked base
    │   └── OwnershipError           the fleet belongs to another state; names it
    │   └── DataGuardError           the data guard refused (data cut off or deleted)
    └── DeployError                  a deploy failed; says which roles and why
        └── ReleaseFailed            ... and was recorded, and the fleet went back if it could

Foreign exceptions (subprocess, sqlite3, OSError) are caught at the boundary where they
happen and re-raised as one of these with ``raise ... from exc``.

Each error is a dataclass: its fields are typed, keyword-only attributes (``role``,
``reason``, ``log``, ``command``, the object concerned...), never a bag of details.
``to_dict`` (what ``--json`` prints and what a failed release stores) has ``error`` (the
kind), ``message`` and every field, always, so a kind has one JSON shape. Which exit code
a kind means is the CLI's to say: ``corral.cli.exitcodes``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from corral.scrub import Scrubber


@dataclass(eq=False)  # eq=False: an error is equal only to itself, and stays hashable
class CorralError(Exception):
    """Root of every error corral raises on purpose; ``message`` says what happened."""

    message: str
    kind: ClassVar[str] = "error"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The error as plain JSON-able data: ``error``, ``message`` and every field."""
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"error": self.kind, **fields}

    def scrub(self, scrubber: Scrubber) -> None:
        """Remove secrets (see corral.scrub) from the message and every text field, in place.

        The CLI calls it on every error before it is shown, logged or printed as JSON: an
        engine's stderr or a test's log may quote a secret's value.
        """
        for f in dataclasses.fields(self):
            setattr(self, f.name, _scrubbed(getattr(self, f.name), scrubber))
        self.args = (self.message,)


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data: errors and diagnostics as dicts, sequences as lists."""
    if isinstance(value, CorralError | Diagnostic):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _scrubbed(value: Any, scrubber: Scrubber) -> Any:
    """``value`` without secrets, of the same type (a tuple stays a tuple)."""
    if isinstance(value, str):
        return scrubber.text(value)
    if isinstance(value, CorralError):
        value.scrub(scrubber)
        return value
    if isinstance(value, Diagnostic):
        return dataclasses.replace(value, message=scrubber.text(value.message))
    if isinstance(value, Mapping):
        return scrubber.data(value)
    if isinstance(value, list | tuple):
        return type(value)(_scrubbed(v, scrubber) for v in value)
    return value


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


@dataclass(eq=False, init=False)
class SpecError(CorralError):
    """The spec could not be read or is invalid; ``diagnostics`` lists every problem."""

    diagnostics: Sequence[Diagnostic]
    kind: ClassVar[str] = "spec"

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        count = len(diagnostics)
        self.message = f"{count} problem{'s' if count != 1 else ''} in the spec"
        self.diagnostics = tuple(diagnostics)
        self.__post_init__()


@dataclass(eq=False)
class UsageError(CorralError):
    """The command line (or a caller) asks for something that cannot mean anything."""

    kind: ClassVar[str] = "usage"


@dataclass(eq=False, init=False)
class MissingToolError(CorralError):
    """A system program is missing: ``tool``, and ``install`` says how to install it."""

    tool: str
    install: str
    kind: ClassVar[str] = "missing-tool"

    def __init__(self, tool: str, install: str) -> None:
        self.message = f"{tool} is not installed; install it with: {install}"
        self.tool, self.install = tool, install
        self.__post_init__()


@dataclass(eq=False, kw_only=True)
class EngineError(CorralError):
    """The engine (or the edge's runtime API) failed.

    Attributes:
        command: the argv run, or the line sent to the edge's runtime API.
        stderr: what the engine answered (cut to its last part where it is long).
        log: the last lines a container (the edge) printed before it failed.
        path: the host file or folder concerned, if any.
    """

    command: Sequence[str] | str | None = None
    stderr: str = ""
    log: Sequence[str] = ()
    path: str | None = None
    kind: ClassVar[str] = "engine"


@dataclass(eq=False, kw_only=True)
class NotFoundError(EngineError):
    """An engine object that should exist does not; ``name`` is that object's name
    (an image reference, a container's name, an edge server as ``backend/server``)."""

    name: str | None = None
    kind: ClassVar[str] = "not-found"


@dataclass(eq=False, kw_only=True)
class NotSupportedError(EngineError):
    """The engine cannot do this at all: ``engine`` lacks ``capability``."""

    engine: str | None = None
    capability: str | None = None
    kind: ClassVar[str] = "not-supported"


@dataclass(eq=False, kw_only=True)
class BuildError(CorralError):
    """A bake failed; ``log`` holds the last lines of the build output."""

    log: Sequence[str] = ()
    kind: ClassVar[str] = "build"


@dataclass(eq=False, kw_only=True)
class BackupError(CorralError):
    """A backup, restore, restore drill or prune failed (restic, the dump or restore
    command, the repository server); ``volume`` is ``role/volume`` where one is concerned,
    ``stderr`` what the program said (secret values scrubbed like any error's text)."""

    volume: str | None = None
    snapshot: str | None = None
    stderr: str = ""
    kind: ClassVar[str] = "backup"


@dataclass(eq=False, kw_only=True)
class StateError(CorralError):
    """The state database (or a file beside it) is unusable, or a record is not as expected.

    Attributes:
        path: the database or file concerned.
        fleet: the fleet the record belongs to.
        record: the record concerned, e.g. ``build 12``, ``release 3``, ``instance web-1``.
        status: that record's status, when its status is the problem.
        schema_version: the database's schema version, when it is newer than corral knows.
    """

    path: str | None = None
    fleet: str | None = None
    record: str | None = None
    status: str | None = None
    schema_version: int | None = None
    kind: ClassVar[str] = "state"


@dataclass(eq=False, kw_only=True)
class LockedError(StateError):
    """Another corral holds the lock ``lock``; ``holder`` is its holder record as data
    (user, host, purpose, since...), empty when the holder has not written it yet."""

    lock: str
    holder: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: ClassVar[str] = "locked"


@dataclass(eq=False, kw_only=True)
class GateError(CorralError):
    """A safety gate refused; nothing was changed.

    Attributes:
        role: the role refused, when there is one.
        roles: the roles refused, when there are several (the test gate).
        secrets: the secrets concerned (not set, or changed), by name: never a value.
        packages: what the image holds that the gate refuses (an SSH server).
        failures: each problem in words (an instance the new edge would see unhealthy).
    """

    role: str | None = None
    roles: Sequence[str] = ()
    secrets: Sequence[str] = ()
    packages: Sequence[str] = ()
    failures: Sequence[str] = ()
    kind: ClassVar[str] = "gate"


@dataclass(eq=False, kw_only=True)
class RevokedError(GateError):
    """A deploy or rollback would start a revoked image (or one built on a revoked base).

    Attributes:
        revoked: per refused role: ``role``, ``image`` (its tag), and the revocation's
            ``kind`` (image or base), ``target`` (engine id), ``reason``, ``user``, ``at``.
    """

    revoked: Sequence[Mapping[str, Any]] = ()
    kind: ClassVar[str] = "revoked"


@dataclass(eq=False, kw_only=True)
class OwnershipError(GateError):
    """The fleet's engine objects belong to another state; nothing was changed.

    Attributes:
        fleet_id: the fleet id the objects carry (None: they carry none).
        owner: the state that made them, as their labels name it (None: not recorded).
        state: this corral's state, which does not hold that id.
        instances: the containers concerned, by name.
    """

    fleet_id: str | None = None
    owner: str | None = None
    state: str | None = None
    instances: Sequence[str] = ()
    kind: ClassVar[str] = "ownership"


@dataclass(eq=False, kw_only=True)
class DataGuardError(GateError):
    """The data guard refused: a change that could cut data off, or delete it, was not
    approved (or may not be made); nothing was changed.

    Attributes:
        volumes: the engine volumes concerned.
        failures: each concern in words (inherited).
    """

    volumes: Sequence[str] = ()
    kind: ClassVar[str] = "data-guard"


@dataclass(eq=False, kw_only=True)
class DeployError(CorralError):
    """A deploy did not complete.

    One role's failure has ``role``, ``reason`` and ``log``; the failure of several roles
    (or of one smoke test per role) has ``roles`` and one DeployError per role in
    ``failures``.

    Attributes:
        role: the role that failed.
        reason: why, in words, without the role's name (a failed health check's answer).
        log: the last lines the failing instances printed (``name: line``), or a smoke
            test's failed tests then those lines.
        checks: a smoke test's failed checks, as data (name, kind, outcome, message...).
        roles: the roles that failed, when this error stands for several.
        failures: one DeployError per failing role.
        volume: the single-writer volume that was in use, and ``holder`` the instance using it.
        cause: the kind of the error that failed the deploy, when it was not a DeployError
            (``engine``, ``state``...).
    """

    role: str | None = None
    reason: str | None = None
    log: Sequence[str] = ()
    checks: Sequence[Mapping[str, Any]] = ()
    roles: Sequence[str] = ()
    failures: Sequence[DeployError] = ()
    volume: str | None = None
    holder: str | None = None
    cause: str | None = None
    kind: ClassVar[str] = "deploy"

    @classmethod
    def of_roles(cls, failures: Sequence[DeployError]) -> DeployError:
        """One error for the failures of several roles (each with its ``role``)."""
        return cls(
            "; ".join(f.message for f in failures),
            roles=[f.role for f in failures if f.role is not None],
            failures=tuple(failures),
        )

    def for_role(self, role: str) -> DeployError:
        """This failure as ``role``'s: itself if it names the role already, else a copy."""
        return self if self.role == role else dataclasses.replace(self, role=role)


@dataclass(eq=False, kw_only=True)
class ReleaseFailed(DeployError):
    """A release failed and was recorded and audited as such (rolled-back or failed).

    Attributes:
        release: the failed release's number.
        rolled_back_to: the release the fleet is back on; None when there was none to go
            back to (its instances were removed) or going back failed.
        undo_error: why going back failed, when it did.
    """

    release: int | None = None
    rolled_back_to: int | None = None
    undo_error: str | None = None
