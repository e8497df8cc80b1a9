"""The rows of the state database as frozen dataclasses, and small helpers around them.

Times are UTC ISO-8601 strings with seconds precision and a ``Z`` suffix, for example
``2026-11-29T15:40:00Z``; ``corral.formats`` makes them (``utc_now`` is re-exported here).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from corral.formats import image_version as image_version  # re-exported: state uses them
from corral.formats import utc_now as utc_now
from corral.formats import utc_text
from corral.state.db import Row

BUILD_STATUSES = ("running", "ok", "failed", "interrupted")
FAILED_STATUSES = ("failed", "interrupted")
RELEASE_KINDS = ("deploy", "rollback")
#: ``failed``: a role failed and the fleet could not be taken back (no earlier release, or
#: going back failed too); ``rolled-back``: a role failed and the fleet is back on the
#: previous release; ``aborted``: the deploy was interrupted (Ctrl-C) or its process died.
RELEASE_STATUSES = ("deploying", "active", "superseded", "failed", "rolled-back", "aborted")
RELEASE_FINISH_STATUSES = ("active", "failed", "rolled-back", "aborted")


def utc_at(seconds: float) -> str:
    """The Unix time ``seconds`` in the format of :func:`utc_now`."""
    return utc_text(datetime.fromtimestamp(seconds, UTC))


def current_user() -> str:
    """The OS user running corral; the numeric uid if the name cannot be found."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return str(os.getuid())


def current_host() -> str:
    """This machine's host name."""
    return socket.gethostname()


@dataclass(frozen=True)
class BuildRecord:
    """One attempt to bake an image; ``status`` is running, ok, failed or interrupted.

    ``host`` is the machine the build ran on (needed to tell whether ``pid`` is alive).
    """

    id: int
    fleet: str
    role: str
    number: int
    content_hash: str
    status: str
    started_at: str
    finished_at: str | None
    image_id: str | None
    tag: str | None
    error: str | None
    pid: int
    user: str
    host: str = ""


@dataclass(frozen=True)
class ImageRecord:
    """A successfully baked image; ``version`` is ``image_version(number, content_hash)``."""

    fleet: str
    role: str
    number: int
    content_hash: str
    version: str
    tag: str
    image_id: str
    digest: str
    built_at: str
    git_commit: str | None
    git_dirty: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The engine id of the base it was built on (a :class:`BaseRecord`); None for images
    #: baked before corral recorded ancestry.
    base_id: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One line of the append-only audit log; ``details`` has secrets already scrubbed."""

    id: int
    at: str
    user: str
    fleet: str
    action: str
    target: str
    outcome: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class ReleaseRecord:
    """One numbered deploy or rollback of a fleet; immutable apart from its status.

    ``status`` is deploying, active, superseded, failed, rolled-back or aborted (see
    :data:`RELEASE_STATUSES`); ``roles`` maps each role name to the caller's data for it
    (image, run configuration...); ``source`` is, for a rollback, the number of the
    release rolled back to; ``message`` says in one line why a release failed or was
    aborted, and ``failure`` keeps the whole reason (scrubbed JSON: the failing roles, the
    assertion or HTTP answer, the instances' last log lines), empty when there is none.
    """

    id: int
    fleet: str
    number: int
    kind: str
    status: str
    roles: Mapping[str, Any]
    source: int | None
    message: str | None
    started_at: str
    finished_at: str | None
    user: str
    pid: int
    host: str
    failure: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaintRecord:
    """An instance corral must burn from ``due`` (Unix seconds) on, and why: a
    break-glass session (who is ``user@host``)."""

    fleet: str
    instance: str
    reason: str
    who: str
    since: str
    due: float


@dataclass(frozen=True)
class InstanceRecord:
    """One container started for ``role`` by release number ``release``.

    ``retired_at`` and ``outcome`` (e.g. ``replaced``, ``failed-health``, ``cleaned-up``,
    ``destroyed``) are None while it is live.
    """

    fleet: str
    name: str
    role: str
    release: int
    image_id: str
    started_at: str
    retired_at: str | None
    outcome: str | None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def build_from_row(row: Row) -> BuildRecord:
    """A :class:`BuildRecord` from a ``builds`` row."""
    return BuildRecord(
        id=int(row["id"]),
        fleet=str(row["fleet"]),
        role=str(row["role"]),
        number=int(row["number"]),
        content_hash=str(row["content_hash"]),
        status=str(row["status"]),
        started_at=str(row["started_at"]),
        finished_at=_opt_str(row["finished_at"]),
        image_id=_opt_str(row["image_id"]),
        tag=_opt_str(row["tag"]),
        error=_opt_str(row["error"]),
        pid=int(row["pid"]),
        user=str(row["user"]),
        host=str(row["host"]),
    )


def image_from_row(row: Row) -> ImageRecord:
    """An :class:`ImageRecord` from an ``images`` row."""
    labels = json.loads(row["labels"])
    return ImageRecord(
        fleet=str(row["fleet"]),
        role=str(row["role"]),
        number=int(row["number"]),
        content_hash=str(row["content_hash"]),
        version=str(row["version"]),
        tag=str(row["tag"]),
        image_id=str(row["image_id"]),
        digest=str(row["digest"]),
        built_at=str(row["built_at"]),
        git_commit=_opt_str(row["git_commit"]),
        git_dirty=bool(row["git_dirty"]),
        labels={str(k): str(v) for k, v in labels.items()},
        base_id=_opt_str(row["base_id"]),
    )


def audit_from_row(row: Row) -> AuditEntry:
    """An :class:`AuditEntry` from an ``audit`` row."""
    details = json.loads(row["details"])
    return AuditEntry(
        id=int(row["id"]),
        at=str(row["at"]),
        user=str(row["user"]),
        fleet=str(row["fleet"]),
        action=str(row["action"]),
        target=str(row["target"]),
        outcome=str(row["outcome"]),
        details=dict(details),
    )


def release_from_row(row: Row) -> ReleaseRecord:
    """A :class:`ReleaseRecord` from a ``releases`` row."""
    return ReleaseRecord(
        id=int(row["id"]),
        fleet=str(row["fleet"]),
        number=int(row["number"]),
        kind=str(row["kind"]),
        status=str(row["status"]),
        roles=dict(json.loads(row["roles"])),
        source=None if row["source"] is None else int(row["source"]),
        message=_opt_str(row["message"]),
        started_at=str(row["started_at"]),
        finished_at=_opt_str(row["finished_at"]),
        user=str(row["user"]),
        pid=int(row["pid"]),
        host=str(row["host"]),
        failure=dict(json.loads(row["failure"])),
    )


def instance_from_row(row: Row) -> InstanceRecord:
    """An :class:`InstanceRecord` from an ``instances`` row."""
    return InstanceRecord(
        fleet=str(row["fleet"]),
        name=str(row["name"]),
        role=str(row["role"]),
        release=int(row["release"]),
        image_id=str(row["image_id"]),
        started_at=str(row["started_at"]),
        retired_at=_opt_str(row["retired_at"]),
        outcome=_opt_str(row["outcome"]),
    )


TEST_RUN_OUTCOMES = ("passed", "failed")


@dataclass(frozen=True)
class TestRunRecord:
    """One ``corral test`` result for one role, bound to the exact image digest and to
    ``test_key``, the hash of the test files and settings it ran with (``""`` for runs
    recorded before the key existed: those match no key).

    ``outcome`` is passed or failed; ``checks`` holds one mapping per check (name, kind,
    outcome, seconds, message); ``log_excerpt`` is the tail of the test log with secrets
    scrubbed; ``started_at`` is when the run began (UTC); ``user`` who ran it.
    """

    __test__ = False  # not a pytest test class, despite the name

    id: int
    fleet: str
    role: str
    image_id: str
    image_digest: str
    image_version: str
    outcome: str
    checks: tuple[Mapping[str, Any], ...]
    seconds: float
    log_excerpt: str
    started_at: str
    user: str
    test_key: str
    # A short hash of each part of the key (corral.testing.key.key_parts); {} for runs
    # recorded before corral kept them.
    key_parts: Mapping[str, str] = field(default_factory=dict)


def from_test_runs_row(row: Row) -> TestRunRecord:
    """A :class:`TestRunRecord` from a ``test_runs`` row."""
    checks = json.loads(row["checks"])
    return TestRunRecord(
        id=int(row["id"]),
        fleet=str(row["fleet"]),
        role=str(row["role"]),
        image_id=str(row["image_id"]),
        image_digest=str(row["image_digest"]),
        image_version=str(row["image_version"]),
        outcome=str(row["outcome"]),
        checks=tuple(dict(check) for check in checks),
        seconds=float(row["seconds"]),
        log_excerpt=str(row["log_excerpt"]),
        started_at=str(row["started_at"]),
        user=str(row["user"]),
        test_key=str(row["test_key"]),
        key_parts=dict(json.loads(row["key_parts"] or "{}")),
    )


@dataclass(frozen=True)
class LockHolder:
    """Who holds a named lock, and until when unless they renew it.

    ``holder`` is a random id per process (pids repeat across hosts), ``lease`` a random
    id per acquisition, ``command`` what the holder does (``"deploy web"``),
    ``acquired_at`` a UTC string and ``expires_at`` Unix seconds.
    """

    name: str
    lease: str
    holder: str
    user: str
    host: str
    pid: int
    command: str
    acquired_at: str
    expires_at: float

    def describe(self) -> str:
        """``deploy lock is held by alice on web-1 since 2026-...Z for deploy web (...)``."""
        what = f" for {self.command}" if self.command else ""
        return (
            f"{self.name} lock is held by {self.user} on {self.host} since {self.acquired_at}"
            f"{what} (pid {self.pid}; its lease runs until {utc_at(self.expires_at)}"
            " unless renewed)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``LockedError`` carries as ``holder`` (``purpose`` = ``command``,
        the name older corrals used)."""
        return {
            "id": self.holder,
            "user": self.user,
            "host": self.host,
            "pid": self.pid,
            "command": self.command,
            "purpose": self.command,
            "since": self.acquired_at,
            "expires_at": utc_at(self.expires_at),
        }


def lock_holder_from_row(row: Row) -> LockHolder:
    """A :class:`LockHolder` from a ``locks`` row."""
    return LockHolder(
        name=str(row["name"]),
        lease=str(row["lease"]),
        holder=str(row["holder"]),
        user=str(row["user"]),
        host=str(row["host"]),
        pid=int(row["pid"]),
        command=str(row["command"]),
        acquired_at=str(row["acquired_at"]),
        expires_at=float(row["expires_at"]),
    )


@dataclass(frozen=True)
class BaseRecord:
    """A base image role images of the fleet were built on.

    ``line`` names what it is a base *of* (``debian:bookworm:apt:<packages hash>``,
    ``image:<reference>``, ``containerfile:<fleet>/<role>``): bases of one line replace
    each other, and the newest one that is not revoked is the one images should run on.
    ``created_at`` is when the base was made (UTC), ``source`` the archive or snapshot it
    came from (the apt sources of a Debian base) or the image it names, ``ref`` the tag
    it was found under.
    """

    fleet: str
    image_id: str
    digest: str
    line: str
    ref: str
    created_at: str
    source: str
    recorded_at: str = ""


def base_from_row(row: Row) -> BaseRecord:
    """A :class:`BaseRecord` from a ``bases`` row."""
    return BaseRecord(
        fleet=str(row["fleet"]),
        image_id=str(row["image_id"]),
        digest=str(row["digest"]),
        line=str(row["line"]),
        ref=str(row["ref"]),
        created_at=str(row["created_at"]),
        source=str(row["source"]),
        recorded_at=str(row["recorded_at"]),
    )


REVOCATION_KINDS = ("image", "base")
REVOCATION_ACTIONS = ("revoke", "undo")


@dataclass(frozen=True)
class RevocationRecord:
    """One revocation of an image or a base (``action`` revoke), or the undoing of one
    (``action`` undo); ``target`` is the engine id, ``user`` who did it and why ``reason``."""

    id: int
    fleet: str
    kind: str
    target: str
    action: str
    reason: str
    at: str
    user: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``corral revoke --json`` prints and errors carry."""
        return {
            "kind": self.kind,
            "target": self.target,
            "action": self.action,
            "reason": self.reason,
            "at": self.at,
            "user": self.user,
        }


def revocation_from_row(row: Row) -> RevocationRecord:
    """A :class:`RevocationRecord` from a ``revocations`` row."""
    return RevocationRecord(
        id=int(row["id"]),
        fleet=str(row["fleet"]),
        kind=str(row["kind"]),
        target=str(row["target"]),
        action=str(row["action"]),
        reason=str(row["reason"]),
        at=str(row["at"]),
        user=str(row["user"]),
    )


@dataclass(frozen=True)
class Revoked:
    """The revocations that stand (not undone): per engine id of an image, and of a base.

    :meth:`of` answers for an image whether it is unfit, itself or through its base.
    """

    images: Mapping[str, RevocationRecord] = field(default_factory=dict)
    bases: Mapping[str, RevocationRecord] = field(default_factory=dict)

    def of(self, image_id: str, base_id: str | None = None) -> RevocationRecord | None:
        """The revocation that makes the image ``image_id`` (built on ``base_id``) unfit."""
        found = self.images.get(image_id)
        if found is None and base_id is not None:
            found = self.bases.get(base_id)
        return found


@dataclass(frozen=True)
class VolumeRecord:
    """A fleet's data volume as the state knows it: who owns it, whether the spec still
    mounts it (``retained`` says it does not, and ``retained_reason`` why). Its backups
    are the ``backups`` rows of its engine name (``BackupRecord.engine_volume``).
    ``deleted_at`` is set once the operator deleted it by name (``corral destroy
    --delete-data``); the row stays, as history."""

    fleet: str
    name: str  # the engine's name, <fleet>-<role>-<volume> (or a restored copy's)
    role: str
    volume: str
    path: str
    created_at: str
    created_release: int | None
    protection: str
    retained: bool
    retained_reason: str | None
    retained_at: str | None
    deleted_at: str | None


def volume_from_row(row: Row) -> VolumeRecord:
    """A :class:`VolumeRecord` from a ``volumes`` row."""
    release = row["created_release"]
    return VolumeRecord(
        fleet=str(row["fleet"]),
        name=str(row["name"]),
        role=str(row["role"]),
        volume=str(row["volume"]),
        path=str(row["path"]),
        created_at=str(row["created_at"]),
        created_release=None if release is None else int(release),
        protection=str(row["protection"]),
        retained=bool(row["retained"]),
        retained_reason=_opt_str(row["retained_reason"]),
        retained_at=_opt_str(row["retained_at"]),
        deleted_at=_opt_str(row["deleted_at"]),
    )
