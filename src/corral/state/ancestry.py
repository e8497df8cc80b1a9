"""Ancestry and revocations in SQL: which base each image was built on, each image's
package list, and which images and bases were revoked (declared unfit).

:class:`SqliteAncestry` implements :class:`~corral.state.protocols.AncestryStore` and
:class:`SqliteRevocations` :class:`~corral.state.protocols.RevocationStore`. A base is
recorded once per engine id (the build that first used it, or ``corral patch`` when it
refreshes one); packages are written with their image, in the build's transaction.
Revocations are append-only: an undo is a row of its own, and the newest row of a target
says whether its revocation stands.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from corral.scrub import Scrubber
from corral.state.db import Conn, Handle
from corral.state.records import (
    REVOCATION_ACTIONS,
    REVOCATION_KINDS,
    BaseRecord,
    ImageRecord,
    RevocationRecord,
    Revoked,
    base_from_row,
    current_user,
    image_from_row,
    revocation_from_row,
    utc_now,
)


def insert_base(conn: Conn, base: BaseRecord) -> None:
    """Record ``base`` unless the fleet knows its engine id already (the first stays)."""
    conn.execute(
        "INSERT INTO bases (fleet, image_id, digest, line, ref, created_at, source, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fleet, image_id) DO NOTHING",
        (
            base.fleet,
            base.image_id,
            base.digest,
            base.line,
            base.ref,
            base.created_at,
            base.source,
            base.recorded_at or utc_now(),
        ),
    )


def insert_packages(conn: Conn, image: ImageRecord, packages: Mapping[str, str]) -> None:
    """Record the package list of ``image`` (name to version)."""
    for name, version in sorted(packages.items()):
        conn.execute(
            "INSERT INTO image_packages (fleet, role, number, name, version)"
            " VALUES (?, ?, ?, ?, ?)",
            (image.fleet, image.role, image.number, name, version),
        )


def parse_packages(lines: Collection[str]) -> dict[str, str]:
    """``name=version`` lines (what a bake's inventory reads) as a mapping."""
    pairs = (line.split("=", 1) for line in lines if "=" in line)
    return {name: version for name, version in pairs if name}


def select_base(conn: Conn, fleet: str, image_id: str) -> BaseRecord | None:
    row = conn.execute(
        "SELECT * FROM bases WHERE fleet = ? AND image_id = ?", (fleet, image_id)
    ).fetchone()
    return None if row is None else base_from_row(row)


class SqliteAncestry:
    """:class:`~corral.state.protocols.AncestryStore` over one connection."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def record_base(self, base: BaseRecord) -> BaseRecord:
        """Record a base (a refreshed one before anything is built on it); the record
        already kept for its engine id if there is one.

        Raises:
            StateError: the database cannot be written.
        """
        with self._db.write("recording a base") as conn:
            insert_base(conn, base)
            found = select_base(conn, base.fleet, base.image_id)
        assert found is not None  # inserted, or there already
        return found

    def base(self, fleet: str, image_id: str) -> BaseRecord | None:
        """The base with engine id ``image_id``, or None if no image was built on it."""
        with self._db.read("looking up a base"):
            return select_base(self._db.conn, fleet, image_id)

    def bases(self, fleet: str, line: str | None = None) -> list[BaseRecord]:
        """The fleet's bases (of one ``line``), oldest first by creation time."""
        sql, params = "SELECT * FROM bases WHERE fleet = ?", [fleet]
        if line is not None:
            sql, params = sql + " AND line = ?", [*params, line]
        with self._db.read("listing bases"):
            rows = self._db.conn.execute(f"{sql} ORDER BY created_at, id", params).fetchall()
        return [base_from_row(row) for row in rows]

    def packages(self, fleet: str, role: str, number: int) -> dict[str, str]:
        """The package list of image ``number`` of (fleet, role): name to version; empty
        for an image baked before corral recorded them."""
        with self._db.read("reading an image's packages"):
            rows = self._db.conn.execute(
                "SELECT name, version FROM image_packages WHERE fleet = ? AND role = ?"
                " AND number = ? ORDER BY name",
                (fleet, role, number),
            ).fetchall()
        return {str(r["name"]): str(r["version"]) for r in rows}

    def carrying(self, fleet: str, package: str) -> list[tuple[ImageRecord, str]]:
        """Every image of the fleet holding ``package``, with its version there; by role,
        then number."""
        with self._db.read("finding the images that carry a package"):
            rows = self._db.conn.execute(
                "SELECT i.*, p.version AS package_version FROM images i JOIN image_packages p"
                " ON p.fleet = i.fleet AND p.role = i.role AND p.number = i.number"
                " WHERE i.fleet = ? AND p.name = ? ORDER BY i.role, i.number",
                (fleet, package),
            ).fetchall()
        return [(image_from_row(row), str(row["package_version"])) for row in rows]

    def descendants(self, fleet: str, base_ids: Collection[str]) -> list[ImageRecord]:
        """The images of the fleet built on one of ``base_ids``; by role, then number."""
        if not base_ids:
            return []
        marks = ", ".join("?" for _ in base_ids)
        with self._db.read("finding the images built on a base"):
            rows = self._db.conn.execute(
                f"SELECT * FROM images WHERE fleet = ? AND base_id IN ({marks})"
                " ORDER BY role, number",
                (fleet, *base_ids),
            ).fetchall()
        return [image_from_row(row) for row in rows]


class SqliteRevocations:
    """:class:`~corral.state.protocols.RevocationStore` over one connection."""

    def __init__(self, db: Handle, scrubber: Scrubber) -> None:
        self._db = db
        self._scrubber = scrubber

    def add(
        self,
        fleet: str,
        kind: str,
        target: str,
        action: str,
        reason: str,
        user: str | None = None,
    ) -> RevocationRecord:
        """Append a revocation (``action`` revoke) or its undoing (``undo``).

        Raises:
            ValueError: ``kind`` or ``action`` is unknown, or ``reason`` is blank.
            StateError: the database cannot be written.
        """
        if kind not in REVOCATION_KINDS or action not in REVOCATION_ACTIONS:
            raise ValueError(f"a revocation is of {REVOCATION_KINDS}, by {REVOCATION_ACTIONS}")
        if not reason.strip():
            raise ValueError("a revocation needs a reason")
        values: dict[str, Any] = {
            "fleet": fleet,
            "kind": kind,
            "target": target,
            "action": action,
            "reason": self._scrubber.text(reason),
            "at": utc_now(),
            "user": user or current_user(),
        }
        with self._db.write("recording a revocation") as conn:
            cursor = conn.execute(
                'INSERT INTO revocations (fleet, kind, target, action, reason, at, "user")'
                " VALUES (:fleet, :kind, :target, :action, :reason, :at, :user) RETURNING id",
                values,
            )
            row = conn.execute(
                "SELECT * FROM revocations WHERE id = ?", (int(cursor.fetchone()[0]),)
            ).fetchone()
        return revocation_from_row(row)

    def history(self, fleet: str) -> list[RevocationRecord]:
        """Every revocation and undo of the fleet, oldest first."""
        with self._db.read("listing revocations"):
            rows = self._db.conn.execute(
                "SELECT * FROM revocations WHERE fleet = ? ORDER BY id", (fleet,)
            ).fetchall()
        return [revocation_from_row(row) for row in rows]

    def standing(self, fleet: str) -> Revoked:
        """The revocations of the fleet that were not undone since."""
        newest: dict[tuple[str, str], RevocationRecord] = {}
        for record in self.history(fleet):
            newest[(record.kind, record.target)] = record
        standing = [r for r in newest.values() if r.action == "revoke"]
        return Revoked(
            images={r.target: r for r in standing if r.kind == "image"},
            bases={r.target: r for r in standing if r.kind == "base"},
        )
