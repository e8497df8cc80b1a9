"""Releases and instances in SQLite: the SQL, and :class:`SqliteReleases` and
:class:`SqliteInstances`, which implement :class:`~corral.state.protocols.ReleaseStore`
and :class:`~corral.state.protocols.InstanceStore` with it.

Release numbers are per fleet: ``max(number) + 1`` over *all* releases, including
failed and aborted ones, taken inside a ``BEGIN IMMEDIATE`` transaction so concurrent
deploys never get the same number. A release starts ``deploying`` and then becomes
``active`` (the fleet's previous active release becoming ``superseded`` in the same
transaction), ``failed``, ``rolled-back`` or ``aborted``. The schema enforces one active
release per fleet, forward-only status moves (a finished release is never relabelled),
and that nothing but status, message, failure and finished_at ever changes.

Only the sweep of dead deploys writes ``aborted`` without being the deploy itself, and
only on releases still ``deploying`` whose process is gone; it runs under the deploy
lock, so it never races the deploy that owns a release.

An instance is one container a release started. Its name is unique per fleet among
live instances; retiring it (with an outcome) frees the name and keeps the row as
history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from corral.errors import StateError
from corral.scrub import Scrubber
from corral.state.builds import pid_alive
from corral.state.db import Conn, Handle
from corral.state.records import (
    RELEASE_FINISH_STATUSES,
    RELEASE_KINDS,
    InstanceRecord,
    ReleaseRecord,
    current_host,
    current_user,
    instance_from_row,
    release_from_row,
    utc_now,
)


def check_kind(kind: str, source: int | None) -> str:
    """``kind``, if it is a release kind that agrees with ``source``; else ValueError."""
    if kind not in RELEASE_KINDS:
        raise ValueError(f"a release is one of {RELEASE_KINDS}, not {kind!r}")
    if (kind == "rollback") != (source is not None):
        raise ValueError("a rollback needs the source release number; a deploy takes none")
    return kind


def roles_json(roles: Mapping[str, Any]) -> str:
    """``roles`` as JSON text with sorted keys; ValueError unless it is a JSON object."""
    if not isinstance(roles, Mapping) or not all(isinstance(k, str) for k in roles):
        raise ValueError("a release's roles must be a mapping from role names (str) to data")
    try:
        return json.dumps(dict(roles), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a release's roles must be JSON-able: {exc}") from exc


def get_release_by_id(conn: Conn, release_id: int) -> ReleaseRecord:
    """The release with ``release_id``; :class:`StateError` if there is none."""
    row = conn.execute("SELECT * FROM releases WHERE id = ?", (release_id,)).fetchone()
    if row is None:
        raise StateError(
            f"there is no release with id {release_id}", record=f"release id {release_id}"
        )
    return release_from_row(row)


def find_release(conn: Conn, fleet: str, number: int) -> ReleaseRecord | None:
    """Release ``number`` of ``fleet``, or None."""
    row = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? AND number = ?", (fleet, number)
    ).fetchone()
    return None if row is None else release_from_row(row)


def active_release(conn: Conn, fleet: str) -> ReleaseRecord | None:
    """The fleet's active release, or None."""
    row = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? AND status = 'active'", (fleet,)
    ).fetchone()
    return None if row is None else release_from_row(row)


def insert_release(conn: Conn, values: dict[str, Any]) -> ReleaseRecord:
    """Insert a deploying release with the next number for its fleet.

    ``values`` has fleet, kind, roles (JSON text), source, started_at, pid, user, host.
    """
    source = values["source"]
    if source is not None and find_release(conn, values["fleet"], source) is None:
        raise StateError(
            f"fleet {values['fleet']} has no release #{source} to roll back to",
            fleet=values["fleet"],
            record=f"release #{source}",
        )
    (number,) = conn.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM releases WHERE fleet = ?", (values["fleet"],)
    ).fetchone()
    cursor = conn.execute(
        'INSERT INTO releases (fleet, number, kind, status, roles, source, started_at, "user",'
        " pid, host) VALUES (:fleet, :number, :kind, 'deploying', :roles, :source,"
        " :started_at, :user, :pid, :host) RETURNING id",
        {**values, "number": number},
    )
    return get_release_by_id(conn, int(cursor.fetchone()[0]))


def finish_release(
    conn: Conn,
    release_id: int,
    status: str,
    message: str | None,
    now: str,
    failure: str = "{}",
) -> ReleaseRecord:
    """Move a deploying release to ``status`` (``failure``: JSON text of why); an active
    one supersedes the old one."""
    release = get_release_by_id(conn, release_id)
    if release.status != "deploying":
        raise StateError(
            f"release {release.fleet} #{release.number} is already {release.status}",
            record=f"release id {release_id}",
            status=release.status,
        )
    if status == "active":
        conn.execute(
            "UPDATE releases SET status = 'superseded' WHERE fleet = ? AND status = 'active'",
            (release.fleet,),
        )
    conn.execute(
        "UPDATE releases SET status = ?, message = ?, failure = ?, finished_at = ? WHERE id = ?",
        (status, message, failure, now, release_id),
    )
    return get_release_by_id(conn, release_id)


def deploying_releases(conn: Conn, fleet: str, host: str) -> list[ReleaseRecord]:
    """The fleet's releases still deploying that were started on ``host``."""
    rows = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? AND host = ? AND status = 'deploying'"
        " ORDER BY number",
        (fleet, host),
    ).fetchall()
    return [release_from_row(row) for row in rows]


def abort_dead(conn: Conn, fleet: str, host: str, now: str) -> list[ReleaseRecord]:
    """Abort the fleet's deploying releases started on ``host`` by now-dead processes."""
    return [
        finish_release(
            conn,
            release.id,
            "aborted",
            f"the deploy process (pid {release.pid} on {host}) died before finishing",
            now,
        )
        for release in deploying_releases(conn, fleet, host)
        if not pid_alive(release.pid)
    ]


def predecessor(
    conn: Conn, fleet: str, number: int, statuses: tuple[str, ...]
) -> ReleaseRecord | None:
    """The newest release of ``fleet`` numbered below ``number`` with one of ``statuses``."""
    marks = ", ".join("?" for _ in statuses)
    row = conn.execute(
        f"SELECT * FROM releases WHERE fleet = ? AND number < ? AND status IN ({marks})"
        " ORDER BY number DESC LIMIT 1",
        (fleet, number, *statuses),
    ).fetchone()
    return None if row is None else release_from_row(row)


def query_releases(conn: Conn, fleet: str, limit: int) -> list[ReleaseRecord]:
    """The newest ``limit`` releases of ``fleet``, oldest first."""
    rows = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? ORDER BY number DESC LIMIT ?", (fleet, limit)
    ).fetchall()
    return [release_from_row(row) for row in reversed(rows)]


def query_with_status(conn: Conn, fleet: str, statuses: Collection[str]) -> list[ReleaseRecord]:
    """The releases of ``fleet`` whose status is one of ``statuses``, oldest first."""
    wanted = sorted(set(statuses))
    marks = ", ".join("?" for _ in wanted)
    rows = conn.execute(
        f"SELECT * FROM releases WHERE fleet = ? AND status IN ({marks}) ORDER BY number",
        (fleet, *wanted),
    ).fetchall()
    return [release_from_row(row) for row in rows]


def query_numbers(conn: Conn, fleet: str, statuses: Collection[str]) -> set[int]:
    """The numbers of the releases of ``fleet`` whose status is one of ``statuses``."""
    wanted = sorted(set(statuses))
    marks = ", ".join("?" for _ in wanted)
    rows = conn.execute(
        f"SELECT number FROM releases WHERE fleet = ? AND status IN ({marks})", (fleet, *wanted)
    ).fetchall()
    return {int(row[0]) for row in rows}


def query_numbered(conn: Conn, fleet: str, numbers: Collection[int]) -> list[ReleaseRecord]:
    """The releases of ``fleet`` with one of ``numbers``, oldest first."""
    wanted = sorted({int(n) for n in numbers})
    # One query per 500 numbers: SQLite caps a statement's parameters (999 in old builds).
    found: list[ReleaseRecord] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            f"SELECT * FROM releases WHERE fleet = ? AND number IN ({marks}) ORDER BY number",
            (fleet, *chunk),
        ).fetchall()
        found.extend(release_from_row(row) for row in rows)
    return found


def live_instance(conn: Conn, fleet: str, name: str) -> InstanceRecord | None:
    """The un-retired instance ``name`` of ``fleet``, or None."""
    row = conn.execute(
        "SELECT * FROM instances WHERE fleet = ? AND name = ? AND retired_at IS NULL",
        (fleet, name),
    ).fetchone()
    return None if row is None else instance_from_row(row)


def insert_instance(conn: Conn, instance: InstanceRecord) -> None:
    """Record a live instance; a no-op if the same one is already live under its name.

    Raises:
        StateError: its release does not exist, or a different live instance has the name.
    """
    if find_release(conn, instance.fleet, instance.release) is None:
        raise StateError(
            f"fleet {instance.fleet} has no release #{instance.release}",
            fleet=instance.fleet,
            record=f"release #{instance.release}",
        )
    live = live_instance(conn, instance.fleet, instance.name)
    if live is not None:
        mine = (instance.role, instance.release, instance.image_id)
        if (live.role, live.release, live.image_id) != mine:
            raise StateError(
                f"instance {instance.fleet}/{instance.name} is already live as role "
                f"{live.role} of release #{live.release} (image {live.image_id})",
                fleet=instance.fleet,
                record=f"instance {instance.name}",
            )
        return
    conn.execute(
        'INSERT INTO instances (fleet, name, role, "release", image_id, started_at)'
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            instance.fleet,
            instance.name,
            instance.role,
            instance.release,
            instance.image_id,
            instance.started_at,
        ),
    )


def retire_instance(conn: Conn, fleet: str, name: str, outcome: str, now: str) -> None:
    """Mark the live instance ``name`` retired with ``outcome``; no-op if none is live."""
    conn.execute(
        "UPDATE instances SET retired_at = ?, outcome = ?"
        " WHERE fleet = ? AND name = ? AND retired_at IS NULL",
        (now, outcome, fleet, name),
    )


def query_instances(conn: Conn, fleet: str, live_only: bool) -> list[InstanceRecord]:
    """The fleet's instances (only live ones if ``live_only``), in the order recorded."""
    sql = "SELECT * FROM instances WHERE fleet = ?"
    if live_only:
        sql += " AND retired_at IS NULL"
    rows = conn.execute(f"{sql} ORDER BY id", (fleet,)).fetchall()
    return [instance_from_row(row) for row in rows]


class SqliteReleases:
    """:class:`~corral.state.protocols.ReleaseStore` over one SQLite connection."""

    def __init__(self, db: Handle, scrubber: Scrubber) -> None:
        self._db = db
        self._scrubber = scrubber

    def start(
        self, fleet: str, kind: str, roles: Mapping[str, Any], source: int | None = None
    ) -> ReleaseRecord:
        """Record a new deploying release with the fleet's next release number.

        Args:
            fleet: the fleet name.
            kind: ``"deploy"`` or ``"rollback"``.
            roles: role name -> the caller's JSON-able data for it (image, run config...).
            source: for a rollback (and only then), the release number rolled back to.

        Raises:
            ValueError: unknown ``kind``, ``source`` given (or missing) wrongly, or
                ``roles`` is not a JSON object.
            StateError: ``source`` is not a release of the fleet, or the write failed.
        """
        values = {
            "fleet": fleet,
            "kind": check_kind(kind, source),
            "roles": roles_json(roles),
            "source": source,
            "started_at": utc_now(),
            "pid": os.getpid(),
            "user": current_user(),
            "host": current_host(),
        }
        with self._db.write("starting a release") as conn:
            return insert_release(conn, values)

    def finish(
        self,
        release_id: int,
        status: str,
        message: str | None = None,
        failure: Mapping[str, Any] | None = None,
    ) -> ReleaseRecord:
        """End a deploying release as active, failed, rolled-back or aborted.

        Making it active supersedes the fleet's previously active release in the same
        transaction, so a fleet never has two active releases.

        Args:
            release_id: the ``id`` from :meth:`start`.
            status: ``"active"``, ``"failed"``, ``"rolled-back"`` or ``"aborted"``.
            message: why, in one line.
            failure: why, in full (JSON-able: the failing roles, assertions, HTTP
                answers, log lines); scrubbed like the audit log's details.

        Raises:
            ValueError: ``status`` is not one of those.
            StateError: no such release, it is not deploying, or the write failed.
        """
        if status not in RELEASE_FINISH_STATUSES:
            raise ValueError(f"a release can only finish as {RELEASE_FINISH_STATUSES}")
        plain = json.loads(json.dumps(dict(failure or {}), default=str))
        why = json.dumps(self._scrubber.data(plain), sort_keys=True)
        text = None if message is None else self._scrubber.text(message)
        with self._db.write("finishing a release") as conn:
            return finish_release(conn, release_id, status, text, utc_now(), why)

    def sweep_stale(self, fleet: str) -> list[ReleaseRecord]:
        """Abort the fleet's deploying releases of this host whose process has died.

        Releases started on other hosts are left alone. Returns the aborted releases
        (as updated); raises StateError if the database cannot be written.
        """
        with self._db.write("sweeping stale releases") as conn:
            return abort_dead(conn, fleet, current_host(), utc_now())

    def end_active(self, fleet: str) -> ReleaseRecord | None:
        """Supersede the fleet's active release by none (``corral destroy``): nothing is
        to run any more, so a watcher brings nothing back. Returns it as it was, or None
        if none was active; raises StateError if the database cannot be written."""
        with self._db.write("ending the active release") as conn:
            active = active_release(conn, fleet)
            conn.execute(
                "UPDATE releases SET status = 'superseded' WHERE fleet = ? AND status = 'active'",
                (fleet,),
            )
            return active

    def active(self, fleet: str) -> ReleaseRecord | None:
        """The fleet's active release, or None. Raises StateError if unreadable."""
        with self._db.read("looking up the active release"):
            return active_release(self._db.conn, fleet)

    def get(self, fleet: str, number: int) -> ReleaseRecord | None:
        """Release ``number`` of ``fleet``, or None. Raises StateError if unreadable."""
        with self._db.read("looking up a release"):
            return find_release(self._db.conn, fleet, number)

    def predecessor(self, fleet: str, number: int, statuses: Sequence[str]) -> ReleaseRecord | None:
        """The newest release below ``number`` whose status is one of ``statuses``
        (what a release changed is measured against it). StateError if unreadable."""
        with self._db.read("looking up a release"):
            return predecessor(self._db.conn, fleet, number, tuple(statuses))

    def recent(self, fleet: str, limit: int = 50) -> list[ReleaseRecord]:
        """The newest ``limit`` releases of a fleet, oldest first. StateError if unreadable."""
        with self._db.read("listing releases"):
            return query_releases(self._db.conn, fleet, limit)

    def numbers(self, fleet: str, statuses: Collection[str]) -> set[int]:
        """The numbers of the fleet's releases whose status is one of ``statuses`` (e.g.
        the good ones, active or superseded). StateError if unreadable."""
        with self._db.read("listing release numbers"):
            return query_numbers(self._db.conn, fleet, statuses)

    def with_status(self, fleet: str, statuses: Collection[str]) -> list[ReleaseRecord]:
        """Every release of a fleet whose status is one of ``statuses``, oldest first.
        StateError if unreadable."""
        with self._db.read("listing releases"):
            return query_with_status(self._db.conn, fleet, statuses)

    def numbered(self, fleet: str, numbers: Collection[int]) -> list[ReleaseRecord]:
        """The fleet's releases with those numbers (unknown ones left out), oldest first.
        StateError if unreadable."""
        with self._db.read("listing releases"):
            return query_numbered(self._db.conn, fleet, numbers)


class SqliteInstances:
    """:class:`~corral.state.protocols.InstanceStore` over one SQLite connection."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def record(self, fleet: str, name: str, role: str, release: int, image_id: str) -> None:
        """Record a live container; recording the same live instance again is a no-op.

        Raises:
            StateError: release ``release`` does not exist, a different live instance
                already has ``name``, or the write failed.
        """
        instance = InstanceRecord(fleet, name, role, release, image_id, utc_now(), None, None)
        with self._db.write("recording an instance") as conn:
            insert_instance(conn, instance)

    def retire(self, fleet: str, name: str, outcome: str) -> None:
        """Retire the live instance ``name`` with ``outcome`` (e.g. ``"replaced"``).

        An unknown (or already retired) name is a no-op. StateError if unwritable.
        """
        with self._db.write("retiring an instance") as conn:
            retire_instance(conn, fleet, name, outcome, utc_now())

    def all(self, fleet: str, live_only: bool = True) -> list[InstanceRecord]:
        """The fleet's live (or all) instances in the order recorded. StateError if unreadable."""
        with self._db.read("listing instances"):
            return query_instances(self._db.conn, fleet, live_only)
