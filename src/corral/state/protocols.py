"""The narrow interfaces of corral's state, one per concern.

:class:`corral.state.State` composes one of each (``state.stores.releases``...), and code
that needs only one concern is typed against its protocol, so a second backend (a shared
PostgreSQL database for a fleet run from several hosts) implements these and nothing
else. The SQLite parts live beside their SQL (:mod:`corral.state.builds`,
:mod:`~corral.state.releases`, :mod:`~corral.state.testruns`,
:mod:`~corral.state.audit`, :mod:`~corral.state.replacements`,
:mod:`~corral.state.lock`).

Every method raises :class:`corral.errors.StateError` when the backend cannot be read or
written; only other errors are listed in the docstrings. Records are the frozen
dataclasses of :mod:`corral.state.records`; times are UTC strings from
:func:`corral.state.records.utc_now`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from corral.state.backups import BackupRecord
from corral.state.records import (
    AuditEntry,
    BaseRecord,
    BuildRecord,
    ImageRecord,
    InstanceRecord,
    LockHolder,
    ReleaseRecord,
    RevocationRecord,
    Revoked,
    TaintRecord,
    TestRunRecord,
    VolumeRecord,
)


class BuildStore(Protocol):
    """Attempts to bake an image, numbered per (fleet, role)."""

    def start(self, fleet: str, role: str, content_hash: str) -> BuildRecord:
        """Record a running build with the next build number of (fleet, role)."""
        ...

    def finish(
        self,
        build_id: int,
        image: ImageRecord,
        *,
        base: BaseRecord | None = None,
        packages: Mapping[str, str] | None = None,
    ) -> None:
        """Mark a running build ok and record its image, its base and its packages, at once.

        Raises ValueError if ``image`` does not belong to the build, or is not on ``base``."""
        ...

    def fail(self, build_id: int, status: str, error: str) -> None:
        """Mark a running build ``failed`` or ``interrupted`` (ValueError otherwise)."""
        ...

    def sweep_stale(self) -> int:
        """Mark interrupted the running builds of this host whose process died; how many."""
        ...

    def recent(self, fleet: str, role: str | None = None, limit: int = 50) -> list[BuildRecord]:
        """The newest ``limit`` builds of a fleet (or one role), oldest first."""
        ...


class ImageStore(Protocol):
    """The images successful builds produced."""

    def find(self, fleet: str, role: str, content_hash: str) -> ImageRecord | None:
        """The newest image of (fleet, role) baked from exactly ``content_hash``."""
        ...

    def latest(self, fleet: str, role: str) -> ImageRecord | None:
        """The highest-numbered image of (fleet, role)."""
        ...

    def all(self, fleet: str, role: str | None = None) -> list[ImageRecord]:
        """Every image of a fleet (or one role), by role, then number."""
        ...


class AncestryStore(Protocol):
    """Which base each image was built on, and what each image holds."""

    def record_base(self, base: BaseRecord) -> BaseRecord:
        """Record a base once per engine id (a refreshed one, before a build uses it)."""
        ...

    def base(self, fleet: str, image_id: str) -> BaseRecord | None:
        """The base with engine id ``image_id``."""
        ...

    def bases(self, fleet: str, line: str | None = None) -> list[BaseRecord]:
        """The fleet's bases (of one line), oldest first by creation time."""
        ...

    def packages(self, fleet: str, role: str, number: int) -> dict[str, str]:
        """An image's Debian packages, name to version."""
        ...

    def carrying(self, fleet: str, package: str) -> list[tuple[ImageRecord, str]]:
        """Every image holding ``package``, with its version there."""
        ...

    def descendants(self, fleet: str, base_ids: Collection[str]) -> list[ImageRecord]:
        """The images built on one of ``base_ids``."""
        ...


class RevocationStore(Protocol):
    """Images and bases declared unfit, append-only; an undo is a row of its own."""

    def add(
        self,
        fleet: str,
        kind: str,
        target: str,
        action: str,
        reason: str,
        user: str | None = None,
    ) -> RevocationRecord:
        """Append a revocation (``revoke``) or its undoing (``undo``) of an image or base."""
        ...

    def history(self, fleet: str) -> list[RevocationRecord]:
        """Every revocation and undo, oldest first."""
        ...

    def standing(self, fleet: str) -> Revoked:
        """The revocations not undone since."""
        ...


class ReleaseStore(Protocol):
    """The numbered releases of each fleet; at most one is active."""

    def start(
        self, fleet: str, kind: str, roles: Mapping[str, Any], source: int | None = None
    ) -> ReleaseRecord:
        """Record a deploying release with the fleet's next number (ValueError if
        ``kind``, ``source`` or ``roles`` is wrong)."""
        ...

    def finish(
        self,
        release_id: int,
        status: str,
        message: str | None = None,
        failure: Mapping[str, Any] | None = None,
    ) -> ReleaseRecord:
        """End a deploying release; an active one supersedes the fleet's previous one."""
        ...

    def sweep_stale(self, fleet: str) -> list[ReleaseRecord]:
        """Abort the fleet's deploying releases of this host whose process died."""
        ...

    def end_active(self, fleet: str) -> ReleaseRecord | None:
        """Supersede the active release by none (the fleet destroyed); it, or None."""
        ...

    def active(self, fleet: str) -> ReleaseRecord | None:
        """The fleet's active release."""
        ...

    def get(self, fleet: str, number: int) -> ReleaseRecord | None:
        """Release ``number`` of ``fleet``."""
        ...

    def predecessor(self, fleet: str, number: int, statuses: Sequence[str]) -> ReleaseRecord | None:
        """The newest release below ``number`` whose status is one of ``statuses``."""
        ...

    def recent(self, fleet: str, limit: int = 50) -> list[ReleaseRecord]:
        """The newest ``limit`` releases of a fleet, oldest first."""
        ...

    def numbers(self, fleet: str, statuses: Collection[str]) -> set[int]:
        """The numbers of the fleet's releases whose status is one of ``statuses``."""
        ...

    def with_status(self, fleet: str, statuses: Collection[str]) -> list[ReleaseRecord]:
        """Every release of a fleet whose status is one of ``statuses``, oldest first."""
        ...

    def numbered(self, fleet: str, numbers: Collection[int]) -> list[ReleaseRecord]:
        """The releases of a fleet with those numbers (unknown ones left out), oldest first."""
        ...


class InstanceStore(Protocol):
    """The containers releases started; a name is unique among a fleet's live ones."""

    def record(self, fleet: str, name: str, role: str, release: int, image_id: str) -> None:
        """Record a live instance; the same live one again is a no-op."""
        ...

    def retire(self, fleet: str, name: str, outcome: str) -> None:
        """Retire the live instance ``name``; an unknown name is a no-op."""
        ...

    def all(self, fleet: str, live_only: bool = True) -> list[InstanceRecord]:
        """The fleet's live (or all) instances, in the order recorded."""
        ...


class TestRunStore(Protocol):
    """The append-only results of ``corral test``, bound to image digests."""

    def record(
        self,
        fleet: str,
        role: str,
        image_id: str,
        image_digest: str,
        image_version: str,
        outcome: str,
        checks: Sequence[Mapping[str, Any]],
        seconds: float,
        log_excerpt: str,
        user: str | None = None,
        *,
        test_key: str,
        key_parts: Mapping[str, str] | None = None,
    ) -> TestRunRecord:
        """Append one run, scrubbed (ValueError if a value is malformed)."""
        ...

    def latest(
        self, fleet: str, role: str, image_digest: str | None = None
    ) -> TestRunRecord | None:
        """The newest run of (fleet, role), of ``image_digest`` if given."""
        ...

    def for_key(
        self, fleet: str, role: str, image_digest: str, test_key: str
    ) -> TestRunRecord | None:
        """The newest run of exactly ``image_digest`` under ``test_key`` (the deploy gate)."""
        ...

    def standing_pass(self, fleet: str, role: str, image_digest: str) -> TestRunRecord | None:
        """The newest pass of ``image_digest`` that no later run of its key failed."""
        ...

    def recent(self, fleet: str, role: str | None = None, limit: int = 50) -> list[TestRunRecord]:
        """The newest ``limit`` runs of a fleet (or one role), oldest first."""
        ...


class AuditStore(Protocol):
    """The append-only audit log: when, who, what, target, outcome."""

    def record(
        self,
        fleet: str,
        action: str,
        target: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> AuditEntry:
        """Append one entry, secrets scrubbed."""
        ...

    def recent(
        self, fleet: str | None = None, limit: int = 100, action: str | None = None
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries, optionally filtered; newest last."""
        ...


class BackupStore(Protocol):
    """The snapshots corral wrote of each volume, and the restore drills that proved them
    (``state/backups.py``)."""

    def record(self, made: BackupRecord) -> BackupRecord:
        """Record a finished snapshot; the stored row (with its id)."""
        ...

    def verified(self, backup_id: int, result: str, detail: str) -> None:
        """Record a restore drill's outcome (ok | failed) and why."""
        ...

    def of_fleet(self, fleet: str, limit: int = 1000) -> list[BackupRecord]:
        """The fleet's newest backups, oldest first."""
        ...

    def latest(self, fleet: str) -> dict[str, BackupRecord]:
        """Per engine volume, its newest backup whose snapshot was not pruned."""
        ...

    def pruned(self, fleet: str, role: str, volume: str, removed: Collection[str]) -> int:
        """Mark pruned the volume's backups whose snapshot is in ``removed``; how many."""
        ...


class ReplacementStore(Protocol):
    """How long stop-first replacements (roles with a single-writer volume) left a role
    unavailable: what ``corral plan`` shows as the next outage."""

    def record(self, fleet: str, role: str, release: int, unavailable_s: float) -> None:
        """Record one replacement (ValueError if ``unavailable_s`` is negative)."""
        ...

    def last_unavailable(self, fleet: str) -> dict[str, float]:
        """Per role, the outage of its newest replacement, in seconds."""
        ...


class TaintStore(Protocol):
    """Instances to burn, kept across processes (``corral break-glass``): each is held
    until its due time, then replaced by the next reconcile pass."""

    def taint(self, fleet: str, instance: str, reason: str, who: str, due: float) -> None:
        """Taint ``instance`` from ``due`` (Unix seconds) on; again replaces the first
        (ValueError if ``due`` is not finite)."""
        ...

    def set_due(self, fleet: str, instance: str, due: float) -> None:
        """Move the due time of ``instance``'s taint; none: nothing to do."""
        ...

    def all(self, fleet: str) -> list[TaintRecord]:
        """Every taint of ``fleet``, by instance."""
        ...

    def clear(self, fleet: str, instances: list[str]) -> None:
        """Forget the taints of ``instances``."""


class FleetStore(Protocol):
    """The id each fleet's first deploy gives it (see :mod:`corral.deploy.ownership`)."""

    def fleet_id(self, fleet: str) -> str | None:
        """The fleet's id, or None before its first deploy."""
        ...

    def claim(self, fleet: str, fleet_id: str, origin: str) -> str:
        """Give the fleet ``fleet_id`` unless it has an id; the id it has afterwards."""
        ...


class VolumeStore(Protocol):
    """A fleet's data volumes: recorded when created, retained when no role mounts them,
    never forgotten. Their backups and restore drills are :class:`BackupStore`'s rows (by
    engine volume): one record of them, never a copy here."""

    def record(
        self,
        fleet: str,
        name: str,
        role: str,
        volume: str,
        path: str,
        release: int | None = None,
    ) -> VolumeRecord:
        """Record that ``role`` mounts engine volume ``name`` at ``path`` (not retained)."""
        ...

    def retain(self, fleet: str, name: str, reason: str) -> None:
        """Mark a volume no role mounts any more retained (ValueError if unknown)."""
        ...

    def deleted(self, fleet: str, name: str) -> None:
        """Mark the volume deleted by the operator; the row stays (ValueError if unknown)."""
        ...

    def get(self, fleet: str, name: str) -> VolumeRecord | None:
        """One volume's record, deleted ones included."""
        ...

    def all(self, fleet: str, deleted: bool = False) -> list[VolumeRecord]:
        """The fleet's volumes by name (with ``deleted``, the deleted ones too)."""
        ...


class HeldLock(Protocol):
    """A lock this process holds: what the block of :meth:`LockStore.hold` receives."""

    @property
    def holder(self) -> LockHolder:
        """The record this process wrote when it took the lock."""
        ...

    def check(self) -> None:
        """Raise :class:`~corral.errors.LockedError` if the lock was lost: this process
        stalled past its lease and another took it. A long task calls it between steps
        (the deploy journal, at each step) so it never acts without the lock."""
        ...


class LockStore(Protocol):
    """Named exclusive locks (``deploy``, ``build``) that name their holder.

    A lock is a lease: its holder renews it while it works, and another process may take
    it only once the lease has run out (see :mod:`corral.state.lock` for the rules)."""

    def hold(
        self,
        name: str,
        wait: float = 0.0,
        purpose: str = "",
        waiting: Callable[[str], None] | None = None,
    ) -> AbstractContextManager[HeldLock]:
        """Hold lock ``name`` for the block, trying for ``wait`` seconds; ``waiting`` is
        told once, with the holder in words, when it has to wait.

        Raises:
            LockedError: someone else holds it; the message and ``holder`` name them.
            ValueError: ``name`` is not a plain word.
        """
        ...

    def holder(self, name: str) -> LockHolder | None:
        """Who holds lock ``name`` now, or None if it is free (or its lease ran out)."""
        ...

    def check_held(self, name: str) -> None:
        """Raise :class:`~corral.errors.LockedError` if lock ``name``, held through this
        store, was lost; nothing when it is not held here."""
        ...
