"""Data volumes in the state: :class:`SqliteVolumes` implements
:class:`~corral.state.protocols.VolumeStore`.

A volume is recorded when a deploy creates it (or first mounts one an earlier corral
made), marked retained when the spec stops mounting it, and marked deleted only when the
operator deleted it by name. Rows are never removed: the state remembers every volume a
fleet had, so a spec that forgets one cannot make corral forget it.
"""

from __future__ import annotations

from corral.state.db import Conn, Handle
from corral.state.records import VolumeRecord, utc_now, volume_from_row


class SqliteVolumes:
    """:class:`~corral.state.protocols.VolumeStore` over one connection (either backend)."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def record(
        self,
        fleet: str,
        name: str,
        role: str,
        volume: str,
        path: str,
        release: int | None = None,
    ) -> VolumeRecord:
        """Record that ``role`` mounts engine volume ``name`` (its ``volume``) at ``path``.

        A new (or deleted, then made again) volume gets a fresh row; a known one keeps its
        creation, takes the new owner and path, and is no longer retained.
        """
        now = utc_now()
        with self._db.write("recording a volume") as conn:
            found = _get(conn, fleet, name)
            if found is None:
                conn.execute(
                    "INSERT INTO volumes (fleet, name, role, volume, path, created_at,"
                    " created_release) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (fleet, name, role, volume, path, now, release),
                )
            elif found.deleted_at is not None:
                conn.execute(
                    "UPDATE volumes SET role = ?, volume = ?, path = ?, created_at = ?,"
                    " created_release = ?, retained = 0, retained_reason = NULL,"
                    " retained_at = NULL, deleted_at = NULL WHERE fleet = ? AND name = ?",
                    (role, volume, path, now, release, fleet, name),
                )
            else:
                # The role that mounts it now owns it (the plan asked before a role's
                # volume went to another); its creation stays.
                conn.execute(
                    "UPDATE volumes SET role = ?, volume = ?, path = ?, retained = 0,"
                    " retained_reason = NULL, retained_at = NULL WHERE fleet = ? AND name = ?",
                    (role, volume, path, fleet, name),
                )
            record = _get(conn, fleet, name)
        assert record is not None
        return record

    def retain(self, fleet: str, name: str, reason: str) -> None:
        """Mark a live volume retained: no role mounts it any more, its data stays.

        Raises:
            ValueError: the fleet has no such volume.
        """
        with self._db.write("marking a volume retained") as conn:
            changed = conn.execute(
                "UPDATE volumes SET retained = 1, retained_reason = ?,"
                " retained_at = COALESCE(retained_at, ?)"
                " WHERE fleet = ? AND name = ? AND deleted_at IS NULL",
                (reason, utc_now(), fleet, name),
            ).rowcount
        _found(changed, fleet, name)

    def deleted(self, fleet: str, name: str) -> None:
        """Mark volume ``name`` deleted (the operator named it); its row stays.

        Raises:
            ValueError: the fleet has no such live volume.
        """
        with self._db.write("marking a volume deleted") as conn:
            changed = conn.execute(
                "UPDATE volumes SET deleted_at = ? WHERE fleet = ? AND name = ?"
                " AND deleted_at IS NULL",
                (utc_now(), fleet, name),
            ).rowcount
        _found(changed, fleet, name)

    def get(self, fleet: str, name: str) -> VolumeRecord | None:
        """The record of volume ``name`` (deleted ones too), or None."""
        with self._db.read("reading a volume"):
            return _get(self._db.conn, fleet, name)

    def all(self, fleet: str, deleted: bool = False) -> list[VolumeRecord]:
        """The fleet's volumes by name; with ``deleted``, the deleted ones too."""
        with self._db.read("listing volumes"):
            rows = self._db.conn.execute(
                "SELECT * FROM volumes WHERE fleet = ? ORDER BY name", (fleet,)
            ).fetchall()
        records = [volume_from_row(row) for row in rows]
        return [r for r in records if deleted or r.deleted_at is None]


def _get(conn: Conn, fleet: str, name: str) -> VolumeRecord | None:
    row = conn.execute(
        "SELECT * FROM volumes WHERE fleet = ? AND name = ?", (fleet, name)
    ).fetchone()
    return None if row is None else volume_from_row(row)


def _found(changed: int, fleet: str, name: str) -> None:
    if changed == 0:
        raise ValueError(f"fleet {fleet} has no recorded volume {name}")
