"""SQL for builds and images; :class:`corral.state.store.State` wraps these in transactions.

Build numbers are per (fleet, role): ``max(number) + 1`` over *all* builds, including
failed ones, taken inside a ``BEGIN IMMEDIATE`` transaction so concurrent bakes never
get the same number. Image versions therefore may skip numbers of failed builds.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from corral.errors import StateError
from corral.state.db import newest_row, newest_rows
from corral.state.records import (
    BuildRecord,
    ImageRecord,
    build_from_row,
    image_from_row,
    image_version,
)


def get_build(conn: sqlite3.Connection, build_id: int) -> BuildRecord:
    """The build with ``build_id``; :class:`StateError` if there is none."""
    row = conn.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
    if row is None:
        raise StateError(f"there is no build with id {build_id}", record=f"build id {build_id}")
    return build_from_row(row)


def get_running_build(conn: sqlite3.Connection, build_id: int) -> BuildRecord:
    """The build with ``build_id``; :class:`StateError` unless it is still running."""
    build = get_build(conn, build_id)
    if build.status != "running":
        raise StateError(
            f"build {build.fleet}/{build.role} #{build.number} is already {build.status}",
            record=f"build id {build_id}",
            status=build.status,
        )
    return build


def insert_build(conn: sqlite3.Connection, values: dict[str, Any]) -> BuildRecord:
    """Insert a running build with the next number for its (fleet, role)."""
    (number,) = conn.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE fleet = ? AND role = ?",
        (values["fleet"], values["role"]),
    ).fetchone()
    cursor = conn.execute(
        "INSERT INTO builds (fleet, role, number, content_hash, status, started_at, pid,"
        " user, host) VALUES (:fleet, :role, :number, :content_hash, 'running', :started_at,"
        " :pid, :user, :host)",
        {**values, "number": number},
    )
    return get_build(conn, int(cursor.lastrowid or 0))


def check_image_matches(build: BuildRecord, image: ImageRecord) -> None:
    """Raise ValueError if ``image`` does not describe what ``build`` baked."""
    expected = (build.fleet, build.role, build.number, build.content_hash)
    actual = (image.fleet, image.role, image.number, image.content_hash)
    if actual != expected:
        raise ValueError(f"image {actual} does not belong to build {expected}")
    version = image_version(image.number, image.content_hash)
    if image.version != version:
        raise ValueError(f"image version {image.version!r} should be {version!r}")


def insert_image(conn: sqlite3.Connection, build_id: int, image: ImageRecord) -> None:
    """Insert the image row for ``build_id``."""
    conn.execute(
        "INSERT INTO images (build_id, fleet, role, number, content_hash, version, tag,"
        " image_id, digest, built_at, git_commit, git_dirty, labels)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            build_id,
            image.fleet,
            image.role,
            image.number,
            image.content_hash,
            image.version,
            image.tag,
            image.image_id,
            image.digest,
            image.built_at,
            image.git_commit,
            int(image.git_dirty),
            json.dumps(dict(image.labels), sort_keys=True),
        ),
    )


def end_build(
    conn: sqlite3.Connection, build_id: int, finished_at: str, **fields: str | None
) -> None:
    """Set a build's status and result columns (``status``, ``image_id``, ``tag``, ``error``)."""
    columns = ", ".join(f"{name} = :{name}" for name in fields)
    conn.execute(
        f"UPDATE builds SET finished_at = :finished_at, {columns} WHERE id = :id",
        {**fields, "finished_at": finished_at, "id": build_id},
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else
        return True
    return True


def query_images(
    conn: sqlite3.Connection, fleet: str, role: str | None, content_hash: str | None = None
) -> list[ImageRecord]:
    """Images of ``fleet`` (optionally one role / one hash), by role then number."""
    sql = "SELECT * FROM images WHERE fleet = ?"
    params: list[Any] = [fleet]
    if role is not None:
        sql += " AND role = ?"
        params.append(role)
    if content_hash is not None:
        sql += " AND content_hash = ?"
        params.append(content_hash)
    rows = conn.execute(f"{sql} ORDER BY role, number", params).fetchall()
    return [image_from_row(row) for row in rows]


def query_builds(
    conn: sqlite3.Connection, fleet: str, role: str | None, limit: int
) -> list[BuildRecord]:
    """The newest ``limit`` builds of ``fleet`` (optionally one role), oldest first."""
    return [build_from_row(row) for row in newest_rows(conn, "builds", fleet, role, limit)]


def newest_image(
    conn: sqlite3.Connection, fleet: str, role: str, content_hash: str | None = None
) -> ImageRecord | None:
    """The highest-numbered image of (fleet, role), optionally with ``content_hash``."""
    row = newest_row(conn, "images", "number", fleet=fleet, role=role, content_hash=content_hash)
    return None if row is None else image_from_row(row)
