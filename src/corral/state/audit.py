"""The append-only audit log: who did what to which fleet, and how it went.

Secrets never reach the log. Before a row is written, ``details`` go through the
state's :class:`~corral.scrub.Scrubber`: every value (at any depth, including dicts
inside lists) whose key *looks* secret is replaced by ``"***"`` (a key looks secret when
its name contains ``password``, ``passwd``, ``secret``, ``token`` or ``key``, any case,
so ``api_key``, ``DB_PASSWORD`` and ``auth-token`` are all scrubbed), and in every text
the values of the fleet's secrets and secret-looking assignments (``token=...``) become
``***``. Values that are not JSON types are stored as their ``str()``.

Rows can only be inserted: triggers in the schema abort any UPDATE or DELETE.
:class:`SqliteAudit` implements :class:`~corral.state.protocols.AuditStore` with this SQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from corral.scrub import SCRUBBED, Scrubber, looks_secret
from corral.state.db import Conn, Handle
from corral.state.records import AuditEntry, audit_from_row, current_user, utc_now

__all__ = ["SCRUBBED", "SqliteAudit", "insert_entry", "looks_secret", "query_entries", "scrub"]


def scrub(value: Any) -> Any:
    """A copy of ``value`` with what looks secret replaced by ``***`` (no fleet's values:
    :class:`~corral.scrub.Scrubber` with them does that)."""
    return Scrubber().data(value)


def insert_entry(
    conn: Conn,
    at: str,
    user: str,
    fields: tuple[str, str, str, str],
    details: Mapping[str, Any],
    scrubber: Scrubber,
) -> AuditEntry:
    """Insert one audit row (``fields`` = fleet, action, target, outcome) and return it,
    everything scrubbed."""
    plain = json.loads(json.dumps(details, default=str))  # str() of what JSON cannot hold
    text = json.dumps(scrubber.data(plain), sort_keys=True)
    columns = [scrubber.values(f) for f in (user, *fields)]
    cursor = conn.execute(
        'INSERT INTO audit (at, "user", fleet, action, target, outcome, details)'
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (at, *columns, text),
    )
    row = conn.execute("SELECT * FROM audit WHERE id = ?", (cursor.fetchone()[0],)).fetchone()
    return audit_from_row(row)


def query_entries(
    conn: Conn, fleet: str | None, action: str | None, limit: int
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


class SqliteAudit:
    """:class:`~corral.state.protocols.AuditStore` over one SQLite connection."""

    def __init__(self, db: Handle, scrubber: Scrubber) -> None:
        self._db = db
        self._scrubber = scrubber

    def record(
        self,
        fleet: str,
        action: str,
        target: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> AuditEntry:
        """Append one entry to the audit log.

        Values of ``details`` keys that look secret (containing password, passwd,
        secret, token or key, at any depth) are stored as ``"***"``; in every text the
        fleet's secret values (and ``token=...`` assignments) become ``***``.

        Args:
            fleet: the fleet acted on.
            action: what was done, e.g. ``"deploy"``.
            target: what it was done to, e.g. ``"web"``.
            outcome: how it went, e.g. ``"ok"`` or ``"failed"``.
            details: extra JSON-able facts; non-JSON values are stored as ``str()``.
            user: who did it; the OS user by default.

        Returns:
            The stored entry (scrubbed), with its id and UTC time.

        Raises:
            StateError: the database cannot be written.
        """
        who = current_user() if user is None else user
        fields = (fleet, action, target, outcome)
        with self._db.write("writing the audit log") as conn:
            return insert_entry(conn, utc_now(), who, fields, details or {}, self._scrubber)

    def recent(
        self, fleet: str | None = None, limit: int = 100, action: str | None = None
    ) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, optionally filtered; newest last.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("reading the audit log"):
            return query_entries(self._db.conn, fleet, action, limit)
