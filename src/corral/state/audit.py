"""The append-only audit log: who did what to which fleet, and how it went.

Secrets never reach the log. Before a row is written, every value in ``details``
(at any depth, including dicts inside lists) whose key *looks* secret is replaced by
``"***"``. A key looks secret when its name contains ``password``, ``passwd``,
``secret``, ``token`` or ``key`` (case-insensitive), so ``api_key``, ``DB_PASSWORD``
and ``auth-token`` are all scrubbed. Values that are not JSON types are stored as
their ``str()``.

Rows can only be inserted: triggers in the schema abort any UPDATE or DELETE.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from corral.state.records import AuditEntry, audit_from_row

SCRUBBED = "***"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|key", re.IGNORECASE)


def looks_secret(key: str) -> bool:
    """Whether a details key names something that must not be logged."""
    return bool(_SECRET_KEY.search(key))


def scrub(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced by ``***``."""
    if isinstance(value, Mapping):
        return {str(k): SCRUBBED if looks_secret(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def insert_entry(
    conn: sqlite3.Connection,
    at: str,
    user: str,
    fields: tuple[str, str, str, str],
    details: Mapping[str, Any],
) -> AuditEntry:
    """Insert one audit row (``fields`` = fleet, action, target, outcome) and return it."""
    text = json.dumps(scrub(details), sort_keys=True, default=str)
    cursor = conn.execute(
        "INSERT INTO audit (at, user, fleet, action, target, outcome, details)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, user, *fields, text),
    )
    row = conn.execute("SELECT * FROM audit WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return audit_from_row(row)


def query_entries(
    conn: sqlite3.Connection, fleet: str | None, action: str | None, limit: int
) -> list[AuditEntry]:
    """The newest ``limit`` entries matching the filters, oldest first."""
    where: list[str] = []
    params: list[Any] = []
    if fleet is not None:
        where.append("fleet = ?")
        params.append(fleet)
    if action is not None:
        where.append("action = ?")
        params.append(action)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT * FROM audit {clause} ORDER BY id DESC LIMIT ?", (*params, limit)
    ).fetchall()
    return [audit_from_row(row) for row in reversed(rows)]
