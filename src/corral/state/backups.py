"""Backups in the state: :class:`SqliteBackups` implements
:class:`~corral.state.protocols.BackupStore`.

One row per restic snapshot corral wrote of a volume (a failed or killed backup leaves
none), with the last time a restore of it was proven to work. The repository's password
is never part of a row.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from corral.formats import parse_time
from corral.state.db import Handle, Row
from corral.state.records import utc_now

VERIFY_RESULTS = ("ok", "failed")


@dataclass(frozen=True)
class BackupRecord:
    """One snapshot of one volume, as ``corral backup`` recorded it."""

    id: int
    fleet: str
    role: str
    volume: str
    engine_volume: str
    snapshot_id: str
    mode: str  # files | dump
    release: int | None
    image_version: str
    started: str
    finished: str
    bytes_added: int
    tree_sha256: str
    reason: str
    verified_at: str | None
    verify_result: str | None
    verify_detail: str
    pruned_at: str | None = None  # when ``corral backup --prune`` removed its snapshot

    def to_dict(self) -> dict[str, object]:
        """The record as JSON (``corral backup --json``)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def proven(self) -> bool:
        """Its restore drill (``corral backup verify``) passed."""
        return self.verify_result == "ok"

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the snapshot was taken (None: its time cannot be read)."""
        at = parse_time(self.finished)
        return None if at is None else max(0.0, (now - at).total_seconds())

    def recent(self, now: datetime, max_age: float) -> bool:
        """A *recent verified backup*: proven, and taken less than ``max_age`` seconds ago.
        The one rule behind ``backup.max_age``: the pre-deploy backup is skipped for one,
        ``corral volumes`` warns without one, ``destroy --delete-data`` refuses without."""
        age = self.age_s(now)
        return self.proven and self.pruned_at is None and age is not None and age < max_age


_COLUMNS = (
    'id, fleet, role, volume, engine_volume, snapshot_id, mode, "release", image_version,'
    " started, finished, bytes_added, tree_sha256, reason, verified_at, verify_result,"
    " verify_detail, pruned_at"
)


def _record(row: Row) -> BackupRecord:
    return BackupRecord(*row)


class SqliteBackups:
    """:class:`~corral.state.protocols.BackupStore` over one database handle."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def record(self, made: BackupRecord) -> BackupRecord:
        """Record a finished snapshot (``made.id`` is ignored); the stored row.

        Raises:
            StateError: the database cannot be written.
        """
        values = (
            made.fleet,
            made.role,
            made.volume,
            made.engine_volume,
            made.snapshot_id,
            made.mode,
            made.release,
            made.image_version,
            made.started,
            made.finished,
            int(made.bytes_added),
            made.tree_sha256,
            made.reason,
        )
        with self._db.write("recording a backup") as conn:
            conn.execute(
                "INSERT INTO backups (fleet, role, volume, engine_volume, snapshot_id, mode,"
                ' "release", image_version, started, finished, bytes_added, tree_sha256, reason)'
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM backups WHERE fleet = ? AND snapshot_id = ?"
                " ORDER BY id DESC",
                (made.fleet, made.snapshot_id),
            ).fetchone()
        return _record(row)

    def verified(self, backup_id: int, result: str, detail: str) -> None:
        """Record the outcome of a restore drill of backup ``backup_id``.

        Raises:
            ValueError: ``result`` is not ok or failed.
            StateError: the database cannot be written.
        """
        if result not in VERIFY_RESULTS:
            raise ValueError(f"a verify result is ok or failed, not {result!r}")
        with self._db.write("recording a verified backup") as conn:
            conn.execute(
                "UPDATE backups SET verified_at = ?, verify_result = ?, verify_detail = ?"
                " WHERE id = ?",
                (utc_now(), result, detail[:2000], backup_id),
            )

    def of_fleet(self, fleet: str, limit: int = 1000) -> list[BackupRecord]:
        """The fleet's newest ``limit`` backups, oldest first.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("reading backups"):
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM backups WHERE fleet = ? ORDER BY id DESC LIMIT ?",
                (fleet, limit),
            ).fetchall()
        return [_record(r) for r in reversed(rows)]

    def latest(self, fleet: str) -> dict[str, BackupRecord]:
        """Per engine volume, its newest backup whose snapshot was not pruned. Keyed by
        the engine volume, not the spec's role/volume: a restored copy is another volume,
        which a backup of the one it replaced does not cover."""
        return {r.engine_volume: r for r in self.of_fleet(fleet) if r.pruned_at is None}

    def pruned(self, fleet: str, role: str, volume: str, removed: Collection[str]) -> int:
        """Mark pruned the backups of one volume whose snapshot is among ``removed`` (the
        full ids ``restic forget`` removed); how many it marked.

        Raises:
            StateError: the database cannot be read or written.
        """
        gone = [
            r.id
            for r in self.of_fleet(fleet, limit=1_000_000)
            if (r.role, r.volume) == (role, volume)
            and r.pruned_at is None
            and any(gone.startswith(r.snapshot_id) for gone in removed)
        ]
        if gone:
            with self._db.write("recording pruned backups") as conn:
                for backup_id in gone:
                    conn.execute(
                        "UPDATE backups SET pruned_at = ? WHERE id = ?", (utc_now(), backup_id)
                    )
        return len(gone)
