"""SQL for releases and instances; :class:`corral.state.store.State` wraps these in transactions.

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
import sqlite3
from collections.abc import Mapping
from typing import Any

from corral.errors import StateError
from corral.state.builds import pid_alive
from corral.state.records import (
    RELEASE_KINDS,
    InstanceRecord,
    ReleaseRecord,
    instance_from_row,
    release_from_row,
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


def get_release_by_id(conn: sqlite3.Connection, release_id: int) -> ReleaseRecord:
    """The release with ``release_id``; :class:`StateError` if there is none."""
    row = conn.execute("SELECT * FROM releases WHERE id = ?", (release_id,)).fetchone()
    if row is None:
        raise StateError(
            f"there is no release with id {release_id}", record=f"release id {release_id}"
        )
    return release_from_row(row)


def find_release(conn: sqlite3.Connection, fleet: str, number: int) -> ReleaseRecord | None:
    """Release ``number`` of ``fleet``, or None."""
    row = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? AND number = ?", (fleet, number)
    ).fetchone()
    return None if row is None else release_from_row(row)


def active_release(conn: sqlite3.Connection, fleet: str) -> ReleaseRecord | None:
    """The fleet's active release, or None."""
    row = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? AND status = 'active'", (fleet,)
    ).fetchone()
    return None if row is None else release_from_row(row)


def insert_release(conn: sqlite3.Connection, values: dict[str, Any]) -> ReleaseRecord:
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
        "INSERT INTO releases (fleet, number, kind, status, roles, source, started_at, user,"
        " pid, host) VALUES (:fleet, :number, :kind, 'deploying', :roles, :source,"
        " :started_at, :user, :pid, :host)",
        {**values, "number": number},
    )
    return get_release_by_id(conn, int(cursor.lastrowid or 0))


def finish_release(
    conn: sqlite3.Connection,
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


def deploying_releases(conn: sqlite3.Connection, fleet: str, host: str) -> list[ReleaseRecord]:
    """The fleet's releases still deploying that were started on ``host``."""
    rows = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? AND host = ? AND status = 'deploying'"
        " ORDER BY number",
        (fleet, host),
    ).fetchall()
    return [release_from_row(row) for row in rows]


def abort_dead(conn: sqlite3.Connection, fleet: str, host: str, now: str) -> list[ReleaseRecord]:
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
    conn: sqlite3.Connection, fleet: str, number: int, statuses: tuple[str, ...]
) -> ReleaseRecord | None:
    """The newest release of ``fleet`` numbered below ``number`` with one of ``statuses``."""
    marks = ", ".join("?" for _ in statuses)
    row = conn.execute(
        f"SELECT * FROM releases WHERE fleet = ? AND number < ? AND status IN ({marks})"
        " ORDER BY number DESC LIMIT 1",
        (fleet, number, *statuses),
    ).fetchone()
    return None if row is None else release_from_row(row)


def query_releases(conn: sqlite3.Connection, fleet: str, limit: int) -> list[ReleaseRecord]:
    """The newest ``limit`` releases of ``fleet``, oldest first."""
    rows = conn.execute(
        "SELECT * FROM releases WHERE fleet = ? ORDER BY number DESC LIMIT ?", (fleet, limit)
    ).fetchall()
    return [release_from_row(row) for row in reversed(rows)]


def live_instance(conn: sqlite3.Connection, fleet: str, name: str) -> InstanceRecord | None:
    """The un-retired instance ``name`` of ``fleet``, or None."""
    row = conn.execute(
        "SELECT * FROM instances WHERE fleet = ? AND name = ? AND retired_at IS NULL",
        (fleet, name),
    ).fetchone()
    return None if row is None else instance_from_row(row)


def insert_instance(conn: sqlite3.Connection, instance: InstanceRecord) -> None:
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


def retire_instance(
    conn: sqlite3.Connection, fleet: str, name: str, outcome: str, now: str
) -> None:
    """Mark the live instance ``name`` retired with ``outcome``; no-op if none is live."""
    conn.execute(
        "UPDATE instances SET retired_at = ?, outcome = ?"
        " WHERE fleet = ? AND name = ? AND retired_at IS NULL",
        (now, outcome, fleet, name),
    )


def query_instances(conn: sqlite3.Connection, fleet: str, live_only: bool) -> list[InstanceRecord]:
    """The fleet's instances (only live ones if ``live_only``), in the order recorded."""
    sql = "SELECT * FROM instances WHERE fleet = ?"
    if live_only:
        sql += " AND retired_at IS NULL"
    rows = conn.execute(f"{sql} ORDER BY id", (fleet,)).fetchall()
    return [instance_from_row(row) for row in rows]
