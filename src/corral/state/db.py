"""Opening the SQLite state database, translating its errors, and schema migrations.

Migrations live in ``corral/state/migrations/NNNN_<name>.sql``. They are applied in
order, each in its own ``BEGIN IMMEDIATE`` transaction that also sets
``PRAGMA user_version`` to the migration's number, so a crash never leaves half a
migration behind and two processes opening a fresh database cannot both apply one.
To change the schema add the next file (``0003_<name>.sql``); never edit a shipped one.

Connections use WAL journaling, a 10 s busy timeout, ``isolation_level=None`` (no
implicit transactions) and explicit ``BEGIN IMMEDIATE`` transactions for every write.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from corral.errors import StateError
from corral.hostfiles import create_private, private_dir, tighten_private

BUSY_TIMEOUT_S = 10.0
SIDE_FILES = ("-wal", "-shm")  # SQLite's WAL journal and shared-memory index
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema step: after it runs, ``PRAGMA user_version`` equals ``version``."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The SQL split into complete statements (trigger bodies stay whole)."""
        result: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                result.append(pending.strip())
                pending = ""
        if _strip_comments(pending):
            raise StateError(
                f"migration {self.version:04d}_{self.name} ends with an incomplete statement"
            )
        return [s for s in result if _strip_comments(s)]


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines()).strip()


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with corral, in order.

    Returns:
        The migrations numbered 1..N without gaps.

    Raises:
        StateError: the migration files are misnumbered (a packaging bug).
    """
    return list(_read_migrations())


@functools.cache
def _read_migrations() -> tuple[Migration, ...]:
    """The package's migration files, read once per process: they never change while it
    runs, and every ``State.open`` needs them."""
    folder = resources.files("corral.state").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StateError("corral's schema migrations are not numbered 1..N; reinstall corral")
    return tuple(found)


def state_error(path: Path, doing: str, exc: BaseException) -> StateError:
    """A :class:`StateError` explaining a sqlite3 or OS failure in plain words."""
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        message = f"{path} is not a corral state database (or it is corrupt): {text}"
    elif "readonly" in text or "unable to open" in text or isinstance(exc, OSError):
        message = f"cannot write the state database {path}: {text}"
    elif "locked" in text or "busy" in text:
        message = f"the state database {path} stayed busy for {BUSY_TIMEOUT_S:g}s while {doing}"
    else:
        message = f"state database {path}: {doing} failed: {text}"
    return StateError(message, path=str(path))


@contextmanager
def translated(path: Path, doing: str) -> Iterator[None]:
    """Re-raise sqlite3 errors inside the block as :class:`StateError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise state_error(path, doing, exc) from exc


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Handle:
    """One open SQLite connection shared by the parts of a state (builds, releases...).

    Each part reads through :meth:`read` and writes through :meth:`write`, so every
    sqlite3 error becomes a :class:`StateError` and every write is one ``BEGIN
    IMMEDIATE`` transaction. After :meth:`close`, using it raises :class:`StateError`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; :class:`StateError` after :meth:`close`."""
        if self._conn is None:
            raise StateError(f"the state database {self.path} is closed", path=str(self.path))
        return self._conn

    def read(self, doing: str) -> AbstractContextManager[None]:
        """A block whose sqlite3 errors become :class:`StateError` naming ``doing``."""
        return translated(self.path, doing)

    @contextmanager
    def write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, its errors translated; rolled back if the block raises."""
        with translated(self.path, doing), write_transaction(self.conn) as conn:
            yield conn

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database file and configure the connection.

    The database and its ``-wal`` and ``-shm`` files are 0600 in a 0700 folder whatever
    the umask (see :mod:`corral.hostfiles`); looser ones left by an older corral are
    tightened. A symbolic link at any of those paths is refused, never followed. A folder
    that also holds other files keeps its mode (see :func:`_holds_only_state`).

    Raises:
        StateError: the directory or file cannot be created, is a link, or is not a
            database.
    """
    try:
        private_dir(path.parent, take_over=_holds_only_state(path))
    except OSError as exc:
        raise state_error(path, "creating its directory", exc) from exc
    if path.is_dir() and not path.is_symlink():
        raise StateError(f"the state database path {path} is a directory", path=str(path))
    seen = _prepare_files(path)
    conn = _open_sqlite(path)
    _check_same_file(conn, path, seen)
    return conn


def _holds_only_state(path: Path) -> bool:
    """Whether the database's folder holds nothing but corral's files (or nothing yet).

    Only such a folder is corral's to make 0700 (``.corral`` by default); a folder such as
    the spec's own or ``/etc`` (``state: /etc/corral.db``) keeps the mode its owner chose.
    """
    ours = {path.name, *(path.name + suffix for suffix in (*SIDE_FILES, "-journal")), "tests"}
    try:
        return all(name in ours or name.endswith(".lock") for name in os.listdir(path.parent))
    except OSError:
        return True  # missing (it is made 0700) or unreadable (private_dir reports it)


def _prepare_files(path: Path) -> os.stat_result:
    """Create the database 0600 and check its files before SQLite opens them.

    Python's sqlite3 cannot pass ``SQLITE_OPEN_NOFOLLOW`` (and SQLite ignores a
    ``nofollow`` URI parameter), so corral checks the files itself: no link, 0600. The
    journal files SQLite makes later take the database's own mode. The files are never
    opened for I/O here: closing such a descriptor would drop the POSIX locks of any other
    connection of this process to the same database.

    Returns:
        The status of the database file, to check that SQLite opened that very file.
    """
    try:
        create_private(path)
        seen = tighten_private(path)
        for suffix in SIDE_FILES:
            with suppress(FileNotFoundError):
                tighten_private(Path(f"{path}{suffix}"))
    except OSError as exc:
        raise state_error(path, "opening", exc) from exc
    return seen


def _open_sqlite(path: Path) -> sqlite3.Connection:
    with translated(path, "opening"):
        # The deploy executor writes from worker threads, one at a time behind a lock
        # (corral.deploy.apply.Journal); the connection itself may cross threads.
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    try:
        with translated(path, "opening"):
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_same_file(conn: sqlite3.Connection, path: Path, seen: os.stat_result) -> None:
    """SQLite opened the very file corral checked: no link was swapped in meanwhile."""
    try:
        now = os.lstat(path)
    except OSError as exc:
        conn.close()
        raise state_error(path, "opening", exc) from exc
    if (seen.st_dev, seen.st_ino) != (now.st_dev, now.st_ino):
        conn.close()
        raise StateError(
            f"the state database {path} was replaced while corral opened it", path=str(path)
        )


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of the last migration applied (``PRAGMA user_version``)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_not_newer(path: Path, version: int, known: int) -> None:
    if version > known:
        raise StateError(
            f"the state database {path} has schema version {version}, but this corral only "
            f"knows versions up to {known}: it was written by a newer corral; upgrade corral",
            path=str(path),
            schema_version=version,
        )


def _check_is_ours(conn: sqlite3.Connection, path: Path) -> None:
    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    if tables[0]:
        raise StateError(
            f"{path} is a SQLite database but not a corral state database", path=str(path)
        )


def _apply(conn: sqlite3.Connection, path: Path, migration: Migration, known: int) -> None:
    doing = f"applying migration {migration.version:04d}_{migration.name}"
    with translated(path, doing), write_transaction(conn):
        current = schema_version(conn)
        _check_not_newer(path, current, known)  # another process may have upgraded it
        if current >= migration.version:
            return
        if current == 0:
            _check_is_ours(conn, path)
        for statement in migration.statements():
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {migration.version:d}")


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> int:
    """Apply every migration newer than the database, each in one transaction.

    Args:
        conn: a connection from :func:`connect`.
        path: the database file, for messages.
        migrations: all known migrations, numbered 1..N in order.

    Returns:
        The schema version afterwards.

    Raises:
        StateError: the database is newer than ``migrations``, is not corral's, or a
            migration failed (it is rolled back).
    """
    known = len(migrations)
    with translated(path, "reading the schema version"):
        _check_not_newer(path, schema_version(conn), known)
    for migration in migrations:
        _apply(conn, path, migration, known)
    with translated(path, "reading the schema version"):
        return schema_version(conn)


def newest_rows(
    conn: sqlite3.Connection, table: str, fleet: str, role: str | None, limit: int
) -> list[sqlite3.Row]:
    """The newest ``limit`` rows of ``table`` for ``fleet`` (or one role), oldest first.

    ``table`` is one of corral's own table names, never user input.
    """
    sql = f"SELECT * FROM {table} WHERE fleet = ?"
    params: list[Any] = [fleet]
    if role is not None:
        sql += " AND role = ?"
        params.append(role)
    rows = conn.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    return list(reversed(rows))


def newest_row(
    conn: sqlite3.Connection, table: str, order: str, **match: Any
) -> sqlite3.Row | None:
    """The row of ``table`` highest in ``order`` whose columns equal ``match`` (a None
    value matches anything), or None. Table and column names are corral's own."""
    wanted = {column: value for column, value in match.items() if value is not None}
    where = " AND ".join(f"{column} = ?" for column in wanted) or "1"
    sql = f"SELECT * FROM {table} WHERE {where} ORDER BY {order} DESC LIMIT 1"
    row: sqlite3.Row | None = conn.execute(sql, tuple(wanted.values())).fetchone()
    return row
