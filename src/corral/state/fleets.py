"""Fleet ids: :class:`SqlFleets` implements :class:`~corral.state.protocols.FleetStore`.

A fleet's first deploy gives it an id, kept here and put as a label on every engine
object corral creates for it (see :mod:`corral.deploy.ownership`). One id per fleet,
written once: claiming a fleet that has one already returns the stored id, so two
corrals sharing one state that deploy at once agree on it.
"""

from __future__ import annotations

from corral.state.db import Handle
from corral.state.records import utc_now

ORIGINS = ("deploy", "adopt", "recover")


class SqlFleets:
    """:class:`~corral.state.protocols.FleetStore` over one connection (either backend)."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def fleet_id(self, fleet: str) -> str | None:
        """The id of ``fleet``, or None before its first deploy."""
        with self._db.read("reading the fleet's id"):
            row = self._db.conn.execute(
                "SELECT fleet_id FROM fleets WHERE fleet = ?", (fleet,)
            ).fetchone()
        return None if row is None else str(row[0])

    def claim(self, fleet: str, fleet_id: str, origin: str) -> str:
        """Give ``fleet`` the id ``fleet_id`` unless it has one; the id it has afterwards.

        Raises:
            ValueError: ``origin`` is not one of :data:`ORIGINS`.
        """
        if origin not in ORIGINS:
            raise ValueError(f"a fleet id's origin is one of {ORIGINS}, not {origin!r}")
        with self._db.write("recording the fleet's id") as conn:
            row = conn.execute("SELECT fleet_id FROM fleets WHERE fleet = ?", (fleet,)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(
                "INSERT INTO fleets (fleet, fleet_id, origin, created_at) VALUES (?, ?, ?, ?)",
                (fleet, fleet_id, origin, utc_now()),
            )
        return fleet_id
