"""Builds and images in SQLite: the SQL, and :class:`SqliteBuilds` and :class:`SqliteImages`,
which implement :class:`~corral.state.protocols.BuildStore` and
:class:`~corral.state.protocols.ImageStore` with it.

Build numbers are per (fleet, role): ``max(number) + 1`` over *all* builds, including
failed ones, taken inside a ``BEGIN IMMEDIATE`` transaction so concurrent bakes never
get the same number. Image versions therefore may skip numbers of failed builds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from corral.errors import StateError
from corral.scrub import Scrubber
from corral.state.ancestry import insert_base, insert_packages
from corral.state.db import Conn, Handle, newest_row, newest_rows
from corral.state.records import (
    FAILED_STATUSES,
    BaseRecord,
    BuildRecord,
    ImageRecord,
    build_from_row,
    current_host,
    current_user,
    image_from_row,
    image_version,
    utc_now,
)


def get_build(conn: Conn, build_id: int) -> BuildRecord:
    """The build with ``build_id``; :class:`StateError` if there is none."""
    row = conn.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
    if row is None:
        raise StateError(f"there is no build with id {build_id}", record=f"build id {build_id}")
    return build_from_row(row)


def get_running_build(conn: Conn, build_id: int) -> BuildRecord:
    """The build with ``build_id``; :class:`StateError` unless it is still running."""
    build = get_build(conn, build_id)
    if build.status != "running":
        raise StateError(
            f"build {build.fleet}/{build.role} #{build.number} is already {build.status}",
            record=f"build id {build_id}",
            status=build.status,
        )
    return build


def insert_build(conn: Conn, values: dict[str, Any]) -> BuildRecord:
    """Insert a running build with the next number for its (fleet, role)."""
    (number,) = conn.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE fleet = ? AND role = ?",
        (values["fleet"], values["role"]),
    ).fetchone()
    cursor = conn.execute(
        "INSERT INTO builds (fleet, role, number, content_hash, status, started_at, pid,"
        " \"user\", host) VALUES (:fleet, :role, :number, :content_hash, 'running', :started_at,"
        " :pid, :user, :host) RETURNING id",
        {**values, "number": number},
    )
    return get_build(conn, int(cursor.fetchone()[0]))


def check_image_matches(build: BuildRecord, image: ImageRecord) -> None:
    """Raise ValueError if ``image`` does not describe what ``build`` baked."""
    expected = (build.fleet, build.role, build.number, build.content_hash)
    actual = (image.fleet, image.role, image.number, image.content_hash)
    if actual != expected:
        raise ValueError(f"image {actual} does not belong to build {expected}")
    version = image_version(image.number, image.content_hash)
    if image.version != version:
        raise ValueError(f"image version {image.version!r} should be {version!r}")


def insert_image(conn: Conn, build_id: int, image: ImageRecord) -> None:
    """Insert the image row for ``build_id``."""
    conn.execute(
        "INSERT INTO images (build_id, fleet, role, number, content_hash, version, tag,"
        " image_id, digest, built_at, git_commit, git_dirty, labels, base_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            image.base_id,
        ),
    )


def end_build(conn: Conn, build_id: int, finished_at: str, **fields: str | None) -> None:
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
    conn: Conn, fleet: str, role: str | None, content_hash: str | None = None
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


def query_builds(conn: Conn, fleet: str, role: str | None, limit: int) -> list[BuildRecord]:
    """The newest ``limit`` builds of ``fleet`` (optionally one role), oldest first."""
    return [build_from_row(row) for row in newest_rows(conn, "builds", fleet, role, limit)]


def newest_image(
    conn: Conn, fleet: str, role: str, content_hash: str | None = None
) -> ImageRecord | None:
    """The highest-numbered image of (fleet, role), optionally with ``content_hash``."""
    row = newest_row(conn, "images", "number", fleet=fleet, role=role, content_hash=content_hash)
    return None if row is None else image_from_row(row)


class SqliteBuilds:
    """:class:`~corral.state.protocols.BuildStore` over one SQLite connection."""

    def __init__(self, db: Handle, scrubber: Scrubber) -> None:
        self._db = db
        self._scrubber = scrubber

    def start(self, fleet: str, role: str, content_hash: str) -> BuildRecord:
        """Record a new running build with the next build number for (fleet, role).

        Args:
            fleet: the fleet name.
            role: the role being baked.
            content_hash: hash of everything that goes into the image.

        Returns:
            The new build; its ``pid``, ``user`` and ``host`` are this process's.

        Raises:
            StateError: the database cannot be written.
        """
        values = {
            "fleet": fleet,
            "role": role,
            "content_hash": content_hash,
            "started_at": utc_now(),
            "pid": os.getpid(),
            "user": current_user(),
            "host": current_host(),
        }
        with self._db.write("starting a build") as conn:
            return insert_build(conn, values)

    def finish(
        self,
        build_id: int,
        image: ImageRecord,
        *,
        base: BaseRecord | None = None,
        packages: Mapping[str, str] | None = None,
    ) -> None:
        """Mark a running build ok and record its image, in one transaction.

        Args:
            build_id: the ``id`` from :meth:`start`.
            image: the baked image; fleet, role, number and hash must match the build.
            base: the base it was built on (recorded once per engine id); its
                ``image_id`` must be ``image.base_id``.
            packages: the image's Debian packages, name to version.

        Raises:
            StateError: no such build, it is not running, or the write failed.
            ValueError: ``image`` does not belong to the build or its version is wrong.
        """
        with self._db.write("finishing a build") as conn:
            build = get_running_build(conn, build_id)
            check_image_matches(build, image)
            end_build(
                conn, build_id, utc_now(), status="ok", image_id=image.image_id, tag=image.tag
            )
            insert_image(conn, build_id, image)
            if base is not None:
                if base.image_id != image.base_id:
                    raise ValueError(f"image {image.tag} is not built on base {base.image_id}")
                insert_base(conn, base)
            insert_packages(conn, image, packages or {})

    def fail(self, build_id: int, status: str, error: str) -> None:
        """Mark a running build failed or interrupted.

        Args:
            build_id: the ``id`` from :meth:`start`.
            status: ``"failed"`` or ``"interrupted"``.
            error: what went wrong, shown by ``corral builds``.

        Raises:
            StateError: no such build, it is not running, or the write failed.
            ValueError: ``status`` is not failed or interrupted.
        """
        if status not in FAILED_STATUSES:
            raise ValueError(f"a build can only fail as {FAILED_STATUSES}, not {status!r}")
        with self._db.write("failing a build") as conn:
            get_running_build(conn, build_id)
            end_build(conn, build_id, utc_now(), status=status, error=self._scrubber.text(error))

    def sweep_stale(self) -> int:
        """Mark interrupted the running builds of this host whose process has died.

        Builds started on other hosts are left alone: their pids mean nothing here.

        Returns:
            How many builds were marked interrupted.

        Raises:
            StateError: the database cannot be written.
        """
        host = current_host()
        with self._db.write("sweeping stale builds") as conn:
            rows = conn.execute(
                "SELECT id, pid FROM builds WHERE status = 'running' AND host = ?", (host,)
            ).fetchall()
            dead = [(int(r["id"]), int(r["pid"])) for r in rows if not pid_alive(r["pid"])]
            now = utc_now()
            for build_id, pid in dead:
                error = f"the build process (pid {pid} on {host}) died before finishing"
                end_build(conn, build_id, now, status="interrupted", error=error)
        return len(dead)

    def recent(self, fleet: str, role: str | None = None, limit: int = 50) -> list[BuildRecord]:
        """The newest ``limit`` builds of a fleet (or one role), oldest first.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("listing builds"):
            return query_builds(self._db.conn, fleet, role, limit)


class SqliteImages:
    """:class:`~corral.state.protocols.ImageStore` over one SQLite connection."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def find(self, fleet: str, role: str, content_hash: str) -> ImageRecord | None:
        """The newest image of (fleet, role) baked from exactly ``content_hash``.

        Returns:
            The image, or None if nothing with that hash was ever baked successfully.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("looking up an image"):
            return newest_image(self._db.conn, fleet, role, content_hash)

    def latest(self, fleet: str, role: str) -> ImageRecord | None:
        """The highest-numbered image of (fleet, role), or None if there is none.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("looking up the latest image"):
            return newest_image(self._db.conn, fleet, role)

    def all(self, fleet: str, role: str | None = None) -> list[ImageRecord]:
        """All images of a fleet (or one role), ordered by role, then number.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("listing images"):
            return query_images(self._db.conn, fleet, role)
