"""Moving a state between backends: every table as one versioned JSON document.

``corral state export`` writes :func:`export_state`'s document; ``corral state import``
loads one into another state with :func:`import_state` (SQLite to PostgreSQL and back).
The document is ``{"format": "corral-state", "version": 1, "schema_version": N,
"tables": {name: [row, ...]}}``: every table of the schema, rows as column -> value, ids
included, so references between rows (an image's build, an instance's release) survive.
The ``locks`` table is the one left out: a lock belongs to a running process of the
source, never to the copy.

Import writes into a state that holds nothing yet, in one transaction, so a failed import
leaves the target as it was. The audit trail and test records are append-only in the
database itself; replacing a state that holds rows is therefore a new file, never
rows deleted: :func:`replace_sqlite` for a SQLite target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corral.errors import StateError
from corral.state.db import POSTGRESQL, SQLITE, Conn, Handle, schema_version
from corral.state.records import utc_now

FORMAT = "corral-state"
VERSION = 1
SKIPPED = ("locks", "corral_schema")
# The order rows go in: a table after the ones its rows reference. Tables added by a
# later migration that are not listed go after these, by name.
ORDER = (
    "fleets",
    "builds",
    "images",
    "releases",
    "instances",
    "test_runs",
    "replacements",
    "audit",
)

Document = dict[str, Any]


def table_names(conn: Conn) -> list[str]:
    """corral's tables in the database, in :data:`ORDER` (unknown ones after, by name)."""
    if conn.dialect == SQLITE:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    names = {str(row[0]) for row in conn.execute(sql)} - set(SKIPPED)
    known = [name for name in ORDER if name in names]
    return known + sorted(names - set(ORDER))


def export_state(db: Handle) -> Document:
    """Every row of every table (but ``locks``) of the state, as one document.

    Raises:
        StateError: the state cannot be read.
    """
    with db.read("exporting the state"):
        conn = db.conn
        tables = {name: _rows(conn, name) for name in table_names(conn)}
        version = schema_version(conn)
    return {
        "format": FORMAT,
        "version": VERSION,
        "schema_version": version,
        "exported_at": utc_now(),
        "source": str(db.path),
        "tables": tables,
    }


def _rows(conn: Conn, table: str) -> list[dict[str, Any]]:
    order = " ORDER BY id" if "id" in _columns(conn, table) else ""
    result = conn.execute(f'SELECT * FROM "{table}"{order}')
    return [dict(zip(row.keys(), row, strict=True)) for row in result]


def _columns(conn: Conn, table: str) -> list[str]:
    if conn.dialect == SQLITE:
        return [str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")')]
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return [str(row[0]) for row in rows]


def check_document(document: Any, source: str, ours: int) -> Mapping[str, Sequence[Any]]:
    """The tables of ``document``, if it is an export this corral can import.

    Raises:
        StateError: it is not a corral export, is of another format version, or of
            another schema version than the target's (the message says which to use).
    """
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise StateError(f"{source} is not a corral state export", path=source)
    if document.get("version") != VERSION:
        raise StateError(
            f"{source} is a corral state export of format version "
            f"{document.get('version')!r}; this corral reads version {VERSION}",
            path=source,
        )
    theirs = document.get("schema_version")
    if theirs != ours:
        newer = isinstance(theirs, int) and theirs > ours
        advice = "upgrade corral" if newer else "open the source state with this corral first"
        raise StateError(
            f"{source} was exported at schema version {theirs!r}, the target is at {ours}: "
            f"{advice}, then export again",
            path=source,
            schema_version=theirs if isinstance(theirs, int) else None,
        )
    tables = document.get("tables")
    if not isinstance(tables, Mapping) or not all(
        isinstance(rows, list) and all(isinstance(r, Mapping) for r in rows)
        for rows in tables.values()
    ):
        raise StateError(f"{source}: 'tables' must map table names to lists of rows", path=source)
    return tables


def holds_rows(conn: Conn, tables: Sequence[str]) -> list[str]:
    """Those of ``tables`` that hold a row."""
    return [t for t in tables if conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()]


def import_state(
    db: Handle, document: Any, source: str = "the export", partial: bool = False
) -> dict[str, int]:
    """Load an export into the state ``db``, which must hold no row; rows per table.

    ``partial``: only the tables the document has rows for must be empty (``corral
    state recover``'s rebuilt state goes beside the audit entries of a lost one).

    Raises:
        StateError: the document is not an importable export (see
            :func:`check_document`), names a table or column the target does not have,
            the target holds rows, or a row breaks a rule of the schema (nothing is
            written then).
    """
    with db.read("reading the target's schema"):
        conn = db.conn
        present = table_names(conn)
        tables = check_document(document, source, schema_version(conn))
        checked = [t for t in present if not partial or tables.get(t)]
        full = holds_rows(conn, checked)
    unknown = sorted(set(tables) - set(present))
    if unknown:
        raise StateError(
            f"{source} holds tables the state {db.path} does not have: {', '.join(unknown)}",
            path=source,
        )
    if full:
        raise StateError(
            f"the state {db.path} is not empty (it holds rows in {', '.join(full)}): import "
            f"into a new state, or replace it (`corral state import --replace`, a file only)",
            path=str(db.path),
        )
    counts: dict[str, int] = {}
    with db.write(f"importing {source}") as conn:
        for table in present:
            rows = tables.get(table, [])
            columns = set(_columns(conn, table))
            for row in rows:
                _insert(conn, table, row, columns, source)
            counts[table] = len(rows)
            if conn.dialect == POSTGRESQL and "id" in columns and rows:
                # Explicit ids leave the identity behind them: the next row would clash.
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f' (SELECT max(id) FROM "{table}"))'
                )
    return counts


def _insert(conn: Conn, table: str, row: Mapping[str, Any], columns: set[str], source: str) -> None:
    extra = sorted(set(row) - columns)
    if extra:
        raise StateError(
            f"{source}: table {table} has no column {', '.join(extra)} in this state",
            path=source,
        )
    names = list(row)
    quoted = ", ".join(f'"{name}"' for name in names)
    marks = ", ".join(f":c{i}" for i in range(len(names)))
    values = {f"c{i}": row[name] for i, name in enumerate(names)}
    conn.execute(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})', values)


def replace_sqlite(path: Path) -> Path:
    """Move the SQLite state at ``path`` (and its journal files) aside, so a new one is
    made there; where the old one went (``<name>.replaced-<UTC time>``)."""
    aside = path.with_name(f"{path.name}.replaced-{utc_now().replace(':', '')}")
    try:
        os.replace(path, aside)
        for suffix in ("-wal", "-shm", "-journal"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{aside}{suffix}"))
    except OSError as exc:
        raise StateError(f"cannot move the state {path} aside: {exc}", path=str(path)) from exc
    return aside
