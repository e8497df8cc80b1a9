"""Instances due to be burned, kept in the state: :class:`SqlTaints` implements
:class:`~corral.state.protocols.TaintStore` (see migration 0009 for why).
"""

from __future__ import annotations

import math

from corral.scrub import Scrubber
from corral.state.db import Handle
from corral.state.records import TaintRecord, utc_now


class SqlTaints:
    """:class:`~corral.state.protocols.TaintStore` over one connection (both dialects)."""

    def __init__(self, db: Handle, scrubber: Scrubber) -> None:
        self._db = db
        self._scrubber = scrubber

    def taint(self, fleet: str, instance: str, reason: str, who: str, due: float) -> None:
        """Taint ``instance``, due for replacement from ``due`` (Unix seconds); a second
        taint of the same instance replaces the first.

        Raises:
            ValueError: ``due`` is not a finite number.
            StateError: the database cannot be written.
        """
        if not math.isfinite(due):
            raise ValueError(f"a taint's due time must be a finite number, not {due!r}")
        reason, who = self._scrubber.values(reason), self._scrubber.values(who)
        with self._db.write("recording a taint") as conn:
            conn.execute(
                "INSERT INTO taints (fleet, instance, reason, who, since, due)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fleet, instance) DO UPDATE SET"
                " reason = excluded.reason, who = excluded.who, since = excluded.since,"
                " due = excluded.due",
                (fleet, instance, reason, who, utc_now(), float(due)),
            )

    def set_due(self, fleet: str, instance: str, due: float) -> None:
        """Move the due time of ``instance``'s taint (a session ended early); no taint:
        nothing to do."""
        with self._db.write("moving a taint's due time") as conn:
            conn.execute(
                "UPDATE taints SET due = ? WHERE fleet = ? AND instance = ?",
                (float(due), fleet, instance),
            )

    def all(self, fleet: str) -> list[TaintRecord]:
        """Every taint of ``fleet``, by instance."""
        with self._db.read("reading taints"):
            rows = self._db.conn.execute(
                "SELECT instance, reason, who, since, due FROM taints WHERE fleet = ?"
                " ORDER BY instance",
                (fleet,),
            ).fetchall()
        return [
            TaintRecord(fleet, str(i), str(r), str(w), str(s), float(d)) for i, r, w, s, d in rows
        ]

    def clear(self, fleet: str, instances: list[str]) -> None:
        """Forget the taints of ``instances`` (burned, or gone)."""
        if not instances:
            return
        with self._db.write("clearing taints") as conn:
            for name in instances:
                conn.execute("DELETE FROM taints WHERE fleet = ? AND instance = ?", (fleet, name))
