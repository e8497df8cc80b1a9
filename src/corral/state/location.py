"""Where a fleet's state lives: on the host, per fleet, never in a checkout.

Every checkout of a spec and every CI runner on a host must share one history (build
numbers, test records, releases, one deploy lock, one audit trail), so the default state
is one SQLite database per fleet in a host-level folder, the fleet's *home*:

- ``$CORRAL_STATE_HOME/<fleet>/`` when that is set (tests, or a host that keeps corral's
  data elsewhere);
- ``/var/lib/corral/<fleet>/`` for root;
- ``$XDG_DATA_HOME/corral/<fleet>/`` (``~/.local/share/corral/<fleet>/``) for other users.

``CORRAL_STATE`` (for CI) or ``state:`` in the spec names another database: a path (the
environment's relative to the current folder, the spec's relative to the spec's folder)
or a URL (``postgresql://...``). The environment wins over the spec, so a pipeline can
point every job at one state without editing the spec.

The fleet's files beside its state (the secret key, the owner files of test runs) live in
the state file's folder, or in the home when the state is a URL: never in the checkout
unless the spec says so. A ``.corral/state.db`` beside the spec, left by an earlier
corral, is taken over once by :func:`take_over_legacy`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from corral.errors import StateError
from corral.hostfiles import private_dir

ENV_STATE = "CORRAL_STATE"
ENV_HOME = "CORRAL_STATE_HOME"
ROOT_HOME = Path("/var/lib/corral")
DB_NAME = "state.db"
LEGACY = Path(".corral") / DB_NAME
KEY_SUFFIX = ".secret-key"  # the fleet's secret key file: <fleet>.secret-key
TAKEN_OVER = ".moved"  # the suffix a legacy database keeps once taken over
SIDE_FILES = ("-wal", "-shm", "-journal")
# What makes a database a history worth keeping: any row in these tables.
HISTORY_TABLES = ("builds", "releases", "test_runs", "audit")


@dataclass(frozen=True)
class StateLocation:
    """Where one fleet's state is, and why there.

    Attributes:
        fleet: the fleet's name.
        target: the database file, or a URL (``postgresql://...``).
        origin: what chose it: ``default``, ``CORRAL_STATE`` or ``spec``.
        home: the fleet's host-level folder (see the module's docstring).
        legacy: a ``.corral/state.db`` an earlier corral kept beside the spec, if the
            default is used (only then is one taken over).
    """

    fleet: str
    target: Path | str
    origin: str
    home: Path
    legacy: Path | None = None

    @property
    def is_url(self) -> bool:
        return isinstance(self.target, str)

    @property
    def path(self) -> Path:
        """The database file.

        Raises:
            StateError: the state is a URL, not a file.
        """
        if isinstance(self.target, str):
            raise StateError(f"the state {self.display} is not a file", path=self.display)
        return self.target

    @property
    def files(self) -> Path:
        """The folder of the fleet's files beside its state: secret key, test owners."""
        return self.home if isinstance(self.target, str) else self.target.parent

    @property
    def display(self) -> str:
        """The state as messages name it: a URL without its password."""
        if isinstance(self.target, Path):
            return str(self.target)
        return redact_url(self.target)

    def hint(self) -> str:
        """How another corral points at this state."""
        if self.origin == "default":
            return f"the default state of fleet {self.fleet} ({self.display})"
        return f"{ENV_STATE}={self.display}"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<a state URL that cannot be parsed>"


def is_url(value: str) -> bool:
    """Whether a ``state`` value names a URL rather than a path."""
    head, sep, _ = value.partition("://")
    return bool(sep) and head.replace("+", "").isalnum()


def state_home(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The host-level folder that holds one folder per fleet (see the module's docstring)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_HOME):
        return Path(env[ENV_HOME]).expanduser().absolute()
    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        return ROOT_HOME
    data = env.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(data).expanduser().absolute() / "corral"


def locate(
    fleet: str,
    spec_root: Path,
    spec_state: str | None,
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
) -> StateLocation:
    """Where ``fleet``'s state is, given the spec's ``state`` and the environment.

    Args:
        fleet: the fleet's (validated) name: a plain folder name.
        spec_root: the spec's folder; the spec's relative paths start there.
        spec_state: ``state`` in the spec, or None.
        environ: the environment (default: the process's).
        euid: the effective user (default: the process's); root's home is /var/lib/corral.
    """
    env = os.environ if environ is None else environ
    home = state_home(env, euid) / fleet
    chosen = env.get(ENV_STATE, "").strip()
    if chosen:
        return StateLocation(fleet, _target(Path.cwd(), chosen), ENV_STATE, home)
    if spec_state is not None:
        return StateLocation(fleet, _target(spec_root, spec_state), "spec", home)
    return StateLocation(fleet, home / DB_NAME, "default", home, spec_root / LEGACY)


def _target(base: Path, value: str) -> Path | str:
    if is_url(value):
        return value
    return base / Path(value).expanduser()


# -- taking over a state an earlier corral kept in the checkout ---------------------------


def take_over_legacy(location: StateLocation) -> str | None:
    """Move a ``.corral/state.db`` left beside the spec to the fleet's home, once.

    The database is copied with SQLite's backup (what its WAL holds included), then the
    old file is renamed ``state.db.moved`` so it is never taken twice; the fleet's secret
    key and the owner files of its test runs move with it. Nothing is lost: an existing
    state at the home with history of its own is never overwritten.

    Returns:
        A message saying what moved where, or None when there was nothing to take over.

    Raises:
        StateError: both the old and the home state hold a history; the message says
            how to keep either.
    """
    legacy = location.legacy
    if legacy is None or location.origin != "default" or not legacy.is_file():
        return None
    target = location.path
    if target.exists() and _has_history(target):
        raise StateError(
            f"fleet {location.fleet} has two histories: {legacy}, kept beside the spec by "
            f"an earlier corral, and {target}, the fleet's state on this host. corral "
            f"takes the old one over only when the new one is empty. To keep using the "
            f"old one, set {ENV_STATE}={legacy} (or 'state:' in the spec); to keep the new "
            f"one, move {legacy} away",
            path=str(target),
        )
    _copy_database(legacy, target)
    _move_side_files(legacy.parent, location)
    os.replace(legacy, legacy.with_name(legacy.name + TAKEN_OVER))
    for suffix in SIDE_FILES:
        Path(f"{legacy}{suffix}").unlink(missing_ok=True)
    return (
        f"took over the state {legacy} kept beside the spec by an earlier corral: "
        f"fleet {location.fleet}'s state is now {target}, shared by every checkout on this "
        f"host (the old file is kept as {legacy.name}{TAKEN_OVER})"
    )


def _has_history(path: Path) -> bool:
    """Whether the database at ``path`` holds any build, release, test run or audit entry."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            return any(
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
                for table in HISTORY_TABLES
                if table in names
            )
    except sqlite3.Error as exc:
        raise StateError(
            f"cannot read the state database {path} to take over {LEGACY}: {exc}",
            path=str(path),
        ) from exc


def _copy_database(source: Path, target: Path) -> None:
    try:
        private_dir(target.parent)
        tmp = target.with_name(target.name + ".taking-over")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as old,
            closing(sqlite3.connect(tmp)) as new,
        ):
            old.backup(new)
        for suffix in SIDE_FILES:
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, target)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(
            f"cannot take over the state {source} into {target}: {exc}", path=str(target)
        ) from exc


def _move_side_files(old: Path, location: StateLocation) -> None:
    """The secret key and the test owner files, unless the home has its own already."""
    new = location.files
    key = f"{location.fleet}{KEY_SUFFIX}"
    try:
        if (old / key).is_file() and not (new / key).exists():
            shutil.move(old / key, new / key)  # another file system: a copy
        if (old / "tests").is_dir():
            private_dir(new / "tests")
            for owner in (old / "tests").iterdir():
                if not (new / "tests" / owner.name).exists():
                    shutil.move(owner, new / "tests" / owner.name)
    except OSError as exc:
        raise StateError(
            f"cannot move the fleet's files from {old} to {new}: {exc}", path=str(new)
        ) from exc
