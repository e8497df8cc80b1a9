"""restic, run by corral: the repository's password goes through the environment (a file
restic reads, or restic's own variable), never an argument, and is scrubbed from every
message restic prints before corral shows or stores it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from corral.errors import BackupError, MissingToolError, UsageError
from corral.scrub import Scrubber

# Where the deploy path's password comes from, first set wins: a file (the safe way), or a
# value in corral's environment (for CI runners that only have variables).
PASSWORD_FILES = ("CORRAL_BACKUP_PASSWORD_FILE", "RESTIC_PASSWORD_FILE")
PASSWORD_VALUE = "CORRAL_BACKUP_PASSWORD"
# The prune credential: where the repository is writable (not the append-only server),
# and its password; only `corral backup --prune` reads them.
PRUNE_REPOSITORY = "CORRAL_BACKUP_PRUNE_REPOSITORY"
PRUNE_PASSWORD_FILE = "CORRAL_BACKUP_PRUNE_PASSWORD_FILE"
DEFAULT_TIMEOUT = 6 * 3600.0
# What restic says when the password opens no key of the repository.
WRONG_PASSWORD = b"wrong password or no key found"


@dataclass(frozen=True)
class Password:
    """A repository password: a file restic reads, or a value handed in its environment."""

    file: Path | None = None
    value: str = field(default="", repr=False)

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        files: Sequence[str] = PASSWORD_FILES,
        value: str | None = PASSWORD_VALUE,
        shared_ok: bool = False,
    ) -> Password:
        """The password named by the first of ``files`` set, else ``value``'s variable.

        Args:
            shared_ok: accept a file other users may read (only to learn the value, so
                that the scrubber hides it even then).

        Raises:
            UsageError: none is set, or the file cannot be read, is empty, or other users
                may read or write it.
        """
        env = os.environ if environ is None else environ
        for name in files:
            if env.get(name):
                return cls._read(Path(env[name]), name, shared_ok)
        if value and env.get(value):
            return cls(value=env[value])
        names = ", ".join([*files, *([value] if value else [])])
        raise UsageError(f"the backup repository's password is not set: set one of {names}")

    @classmethod
    def _read(cls, path: Path, variable: str, shared_ok: bool) -> Password:
        try:
            text = path.read_text("utf-8").rstrip("\n")
        except OSError as exc:
            raise UsageError(f"{variable} names {path}, which cannot be read: {exc}") from exc
        if not text:
            raise UsageError(f"{variable} names {path}, which is empty")
        mode = path.stat().st_mode & 0o777
        # As ssh does with a private key: a secret other users may read is a leaked one.
        if mode & 0o077 and not shared_ok:
            raise UsageError(
                f"{variable} names {path}, which other users may read or write "
                f"(mode {mode:04o}): chmod 600 {path}"
            )
        return cls(file=path, value=text)

    def environment(self) -> dict[str, str]:
        """What restic's environment gets: the file's name, or the value itself."""
        if self.file is not None:
            return {"RESTIC_PASSWORD_FILE": str(self.file)}
        return {"RESTIC_PASSWORD": self.value}


def require_tool(name: str) -> str:
    """The path of program ``name`` (restic, rclone).

    Raises:
        MissingToolError: it is not installed.
    """
    found = shutil.which(name)
    if found is None:
        raise MissingToolError(name, f"apt-get install {name}")
    return found


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as ``restic snapshots`` lists it."""

    id: str
    time: str
    tags: tuple[str, ...]
    paths: tuple[str, ...]

    def tag(self, key: str) -> str:
        """The value of tag ``key=value``, or ""."""
        prefix = f"{key}="
        return next((t[len(prefix) :] for t in self.tags if t.startswith(prefix)), "")


@dataclass(frozen=True)
class Restic:
    """One repository, as restic reaches it; every call runs the ``restic`` program."""

    repository: str  # a restic URL or folder; never holds a secret
    password: Password = field(repr=False)
    scrubber: Scrubber = field(default_factory=Scrubber, repr=False)
    binary: str = "restic"

    def environment(self) -> dict[str, str]:
        """corral's environment without restic's own settings, plus this repository's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(self.password.environment())
        env["RESTIC_REPOSITORY"] = self.repository
        env["RESTIC_PROGRESS_FPS"] = "0.2"
        return env

    def run(
        self,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT,
        cwd: Path | None = None,
        check: bool = True,
        stdout: int | IO[bytes] | None = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``restic ARGS`` to its end.

        Raises:
            BackupError: restic failed (with ``check``) or ran out of time.
        """
        argv = [self.binary, *args]
        try:
            proc = subprocess.run(
                argv,
                env=self.environment(),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BackupError(f"restic {args[0]} ran out of time after {timeout:.0f}s") from exc
        except OSError as exc:
            raise BackupError(f"cannot run restic: {exc}") from exc
        if check and proc.returncode != 0:
            raise self.failure(args[0], proc.stderr)
        return proc

    def start(self, *args: str, stdin: int) -> subprocess.Popen[bytes]:
        """Start ``restic ARGS`` reading ``stdin`` (a dump streamed into ``backup --stdin``)."""
        try:
            return subprocess.Popen(
                [self.binary, *args],
                env=self.environment(),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BackupError(f"cannot run restic: {exc}") from exc

    def failure(self, command: str, stderr: bytes) -> BackupError:
        """The error of a failed ``restic COMMAND``: its last words, secrets scrubbed."""
        text = self.scrubber.text(stderr.decode("utf-8", "replace")).strip()
        last = text.splitlines()[-1] if text else "no message"
        return BackupError(f"restic {command} failed: {last}", stderr=text[-2000:])

    # -- the calls corral makes ------------------------------------------------------
    def wrong_password(self) -> BackupError:
        """The error for a password that opens no key of the repository."""
        return BackupError(
            "the backup password does not open the repository (restic: wrong password or "
            f"no key found); check {PASSWORD_FILES[0]} or {PASSWORD_VALUE}"
        )

    def ensure_initialised(self) -> bool:
        """Create the repository unless it exists; True when it was created.

        Raises:
            BackupError: the repository exists and the password opens none of its keys
                (before, that read as "no repository" and init failed on its config).
        """
        found = self.run("cat", "config", check=False, timeout=120)
        if found.returncode == 0:
            return False
        if WRONG_PASSWORD in found.stderr:
            raise self.wrong_password()
        self.run("init", timeout=120)
        return True

    def snapshots(self, tags: Iterable[str] = ()) -> list[Snapshot]:
        """The snapshots carrying every one of ``tags``, oldest first."""
        wanted = ",".join(tags)
        args = ["snapshots", "--json", *(["--tag", wanted] if wanted else [])]
        data = _json(self.run(*args, timeout=600).stdout) or []
        return [
            Snapshot(str(s["id"]), str(s["time"]), tuple(s.get("tags") or ()), tuple(s["paths"]))
            for s in data
        ]

    def backup_folder(self, folder: Path, tags: Sequence[str], host: str) -> tuple[str, int]:
        """Snapshot ``folder`` (recorded under its own name, with its metadata);
        (snapshot id, bytes added to the repository)."""
        args = ["backup", "--json", "--host", host, *_tag_args(tags), folder.name]
        out = self.run(*args, cwd=folder.parent).stdout
        return _summary(out)

    def restore(self, snapshot: str, target: Path) -> None:
        """Restore ``snapshot`` under ``target`` (a files snapshot: its one folder)."""
        self.run("restore", snapshot, "--target", str(target))

    def dump(self, snapshot: str, path: str, stdout: int) -> subprocess.Popen[bytes]:
        """Start writing file ``path`` of ``snapshot`` to ``stdout`` (a dump's restore)."""
        try:
            return subprocess.Popen(
                [self.binary, "dump", snapshot, path],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BackupError(f"cannot run restic: {exc}") from exc

    def check(self) -> str | None:
        """``restic check``: None when the repository is sound, else restic's words
        (a wrong password raises :class:`BackupError`: nothing can be said of the
        repository then, and a drill must not be recorded as failed for it).

        Stale locks go first (``restic unlock`` removes only those of processes that are
        gone, such as a backup killed with -9): check needs the repository to itself."""
        self.run("unlock", check=False, timeout=120)
        proc = self.run("check", check=False)
        if proc.returncode == 0:
            return None
        if WRONG_PASSWORD in proc.stderr:  # the operator's mistake, not the repository's
            raise self.wrong_password()
        return self.failure("check", proc.stderr).message


def _tag_args(tags: Sequence[str]) -> list[str]:
    for tag in tags:
        if "," in tag or not tag:
            raise BackupError(f"a snapshot tag may not be empty or hold a comma: {tag!r}")
    return [arg for tag in tags for arg in ("--tag", tag)]


def _json(out: bytes) -> Any:
    try:
        return json.loads(out) if out.strip() else None
    except json.JSONDecodeError as exc:
        raise BackupError("restic printed invalid JSON") from exc


def _summary(out: bytes) -> tuple[str, int]:
    """(snapshot id, bytes added) from ``restic backup --json``'s summary line."""
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        if '"summary"' in line:
            data = json.loads(line)
            return str(data["snapshot_id"]), int(data.get("data_added") or 0)
    raise BackupError("restic backup printed no summary: no snapshot was written")


def summary_of(out: bytes) -> tuple[str, int]:
    """:func:`_summary`, for a ``restic backup`` started with :meth:`Restic.start`."""
    return _summary(out)
