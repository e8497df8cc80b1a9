"""Stop-first replacements in SQLite: :class:`SqliteReplacements` implements
:class:`~corral.state.protocols.ReplacementStore`.

A role with a single-writer volume is replaced stop-first, so it serves nothing between
its old instance leaving and its new one serving; one row per such replacement records
how long, and ``corral plan`` shows a role's newest row as its next outage.
"""

from __future__ import annotations

import math

from corral.state.db import Handle
from corral.state.records import utc_now


class SqliteReplacements:
    """:class:`~corral.state.protocols.ReplacementStore` over one SQLite connection."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def record(self, fleet: str, role: str, release: int, unavailable_s: float) -> None:
        """Record that a stop-first replacement left ``role`` unavailable ``unavailable_s``.

        Raises:
            ValueError: ``unavailable_s`` is negative or not finite.
            StateError: the database cannot be written.
        """
        seconds = float(unavailable_s)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"an unavailable time must be >= 0 seconds, not {unavailable_s!r}")
        with self._db.write("recording a replacement") as conn:
            conn.execute(
                'INSERT INTO replacements (fleet, role, "release", unavailable_s, at)'
                " VALUES (?, ?, ?, ?, ?)",
                (fleet, role, release, seconds, utc_now()),
            )

    def last_unavailable(self, fleet: str) -> dict[str, float]:
        """Per role, how long its newest stop-first replacement left it unavailable.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("reading replacements"):
            rows = self._db.conn.execute(
                "SELECT role, unavailable_s FROM replacements WHERE id IN"
                " (SELECT MAX(id) FROM replacements WHERE fleet = ? GROUP BY role)",
                (fleet,),
            ).fetchall()
        return {str(role): float(seconds) for role, seconds in rows}
