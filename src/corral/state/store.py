"""The :class:`State` of a fleet: one part per concern, behind the protocols of
:mod:`corral.state.protocols`, and thin methods that delegate to them.

New code that needs one concern takes that part (``state.stores.releases``) typed as
its protocol; the delegating methods (``state.active_release(...)``) keep the callers
that existed before the parts did.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from corral.scrub import Scrubber
from corral.state import db, postgres, transfer
from corral.state.ancestry import SqliteAncestry, SqliteRevocations
from corral.state.audit import SqliteAudit
from corral.state.backups import SqliteBackups
from corral.state.builds import SqliteBuilds, SqliteImages
from corral.state.fleets import SqlFleets
from corral.state.lock import LeaseLocks
from corral.state.protocols import (
    AncestryStore,
    AuditStore,
    BackupStore,
    BuildStore,
    FleetStore,
    HeldLock,
    ImageStore,
    InstanceStore,
    LockStore,
    ReleaseStore,
    ReplacementStore,
    RevocationStore,
    TaintStore,
    TestRunStore,
    VolumeStore,
)
from corral.state.records import (
    AuditEntry,
    BaseRecord,
    BuildRecord,
    ImageRecord,
    InstanceRecord,
    ReleaseRecord,
    TestRunRecord,
    VolumeRecord,
)
from corral.state.releases import SqliteInstances, SqliteReleases
from corral.state.replacements import SqliteReplacements
from corral.state.taints import SqlTaints
from corral.state.testruns import SqliteTestRuns
from corral.state.volumes import SqliteVolumes


@dataclass(frozen=True)
class Stores:
    """One implementation of each state protocol: what a backend provides."""

    builds: BuildStore
    images: ImageStore
    releases: ReleaseStore
    instances: InstanceStore
    test_runs: TestRunStore
    audit: AuditStore
    replacements: ReplacementStore
    locks: LockStore
    ancestry: AncestryStore
    revocations: RevocationStore
    taints: TaintStore
    fleets: FleetStore
    backups: BackupStore
    volumes: VolumeStore


def sqlite_stores(handle: db.Handle, scrubber: Scrubber) -> Stores:
    """The SQLite parts over one open connection; each text they write goes through
    ``scrubber``."""
    return Stores(
        builds=SqliteBuilds(handle, scrubber),
        images=SqliteImages(handle),
        releases=SqliteReleases(handle, scrubber),
        instances=SqliteInstances(handle),
        test_runs=SqliteTestRuns(handle, scrubber),
        audit=SqliteAudit(handle, scrubber),
        replacements=SqliteReplacements(handle),
        locks=LeaseLocks(handle, scrubber),
        ancestry=SqliteAncestry(handle),
        revocations=SqliteRevocations(handle, scrubber),
        taints=SqlTaints(handle, scrubber),
        fleets=SqlFleets(handle),
        backups=SqliteBackups(handle),
        volumes=SqliteVolumes(handle),
    )


def _reopen(location: Path | str) -> db.Conn:
    """Another connection to the state at ``location`` (the lock renewer's own)."""
    if postgres.is_url(location):
        return postgres.open_postgres(postgres.parse(str(location)))
    return db.open_sqlite(Path(location))


class State:
    """corral's state database (one SQLite file, usually ``.corral/state.db``).

    Use :meth:`open` to get one, and close it (or use it as a context manager). A
    ``State`` belongs to one process and thread; other processes open their own. Its
    parts are :attr:`stores`; the methods below delegate to them.
    """

    def __init__(
        self,
        path: db.Where,
        conn: db.Conn,
        scrubber: Scrubber | None = None,
        reopen: Callable[[], db.Conn] | None = None,
    ) -> None:
        #: The SQLite file, or the PostgreSQL URL without its password (for messages).
        self.path = path
        self._db = db.Handle(path, conn, reopen or (lambda: _reopen(path)))
        #: What every text this state writes goes through (test records, audit, errors).
        self.scrubber = scrubber or Scrubber()
        #: The parts, one per concern; type a caller against the one it uses.
        self.stores = sqlite_stores(self._db, self.scrubber)

    @classmethod
    def open(
        cls,
        path: Path | str,
        migrations: list[db.Migration] | None = None,
        scrubber: Scrubber | None = None,
    ) -> State:
        """Open the database at ``path``, creating it and applying pending migrations.

        Args:
            path: the SQLite database file (its parent directory is created if
                missing), or a ``postgresql://`` URL without a password (see
                :mod:`corral.state.postgres`; the database must exist).
            migrations: the schema steps to apply; corral's bundled ones by default
                (tests pass their own).
            scrubber: removes secrets from every text written (the fleet's secret
                values and what looks secret); by default only what looks secret.

        Returns:
            An open ``State``.

        Raises:
            StateError: the file is not a SQLite database or not corral's, cannot be
                created or written, or was written by a newer corral; the server does
                not answer, refuses the credentials, or the URL holds a password.
        """
        steps = db.bundled_migrations() if migrations is None else migrations
        where: db.Where = path
        if postgres.is_url(path):
            url = postgres.parse(str(path))
            where = postgres.display(url)
            conn = postgres.open_postgres(url)
        else:
            where = Path(path)
            conn = db.open_sqlite(where)
        try:
            db.migrate(conn, where, steps)
        except BaseException:
            conn.close()
            raise
        return cls(where, conn, scrubber, lambda: _reopen(path))

    @property
    def conn(self) -> Any:
        """The driver's own connection (``sqlite3.Connection``, or psycopg's), for tests
        and tools that inspect the database; :class:`StateError` after :meth:`close`."""
        return self._db.conn.raw

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._db.read("reading the schema version"):
            return db.schema_version(self._db.conn)

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- moving a state: see corral.state.transfer ---------------------------------

    def export(self) -> dict[str, Any]:
        """Every table but ``locks``, as one versioned JSON-able document."""
        return transfer.export_state(self._db)

    def load(
        self, document: Any, source: str = "the export", partial: bool = False
    ) -> dict[str, int]:
        """:func:`corral.state.transfer.import_state` into this state; rows per table."""
        return transfer.import_state(self._db, document, source, partial)

    # -- builds: see BuildStore ---------------------------------------------------

    def start_build(self, fleet: str, role: str, content_hash: str) -> BuildRecord:
        """:meth:`BuildStore.start`."""
        return self.stores.builds.start(fleet, role, content_hash)

    def finish_build(
        self,
        build_id: int,
        image: ImageRecord,
        *,
        base: BaseRecord | None = None,
        packages: Mapping[str, str] | None = None,
    ) -> None:
        """:meth:`BuildStore.finish`."""
        self.stores.builds.finish(build_id, image, base=base, packages=packages)

    def fail_build(self, build_id: int, status: str, error: str) -> None:
        """:meth:`BuildStore.fail`."""
        self.stores.builds.fail(build_id, status, error)

    def sweep_stale_builds(self) -> int:
        """:meth:`BuildStore.sweep_stale`."""
        return self.stores.builds.sweep_stale()

    def builds(self, fleet: str, role: str | None = None, limit: int = 50) -> list[BuildRecord]:
        """:meth:`BuildStore.recent`."""
        return self.stores.builds.recent(fleet, role, limit)

    # -- images: see ImageStore ---------------------------------------------------

    def find_image(self, fleet: str, role: str, content_hash: str) -> ImageRecord | None:
        """:meth:`ImageStore.find`."""
        return self.stores.images.find(fleet, role, content_hash)

    def latest_image(self, fleet: str, role: str) -> ImageRecord | None:
        """:meth:`ImageStore.latest`."""
        return self.stores.images.latest(fleet, role)

    def images(self, fleet: str, role: str | None = None) -> list[ImageRecord]:
        """:meth:`ImageStore.all`."""
        return self.stores.images.all(fleet, role)

    # -- releases: see ReleaseStore -----------------------------------------------

    def start_release(
        self, fleet: str, kind: str, roles: Mapping[str, Any], source: int | None = None
    ) -> ReleaseRecord:
        """:meth:`ReleaseStore.start`."""
        return self.stores.releases.start(fleet, kind, roles, source)

    def finish_release(
        self,
        release_id: int,
        status: str,
        message: str | None = None,
        failure: Mapping[str, Any] | None = None,
    ) -> ReleaseRecord:
        """:meth:`ReleaseStore.finish`."""
        return self.stores.releases.finish(release_id, status, message, failure)

    def sweep_stale_releases(self, fleet: str) -> list[ReleaseRecord]:
        """:meth:`ReleaseStore.sweep_stale`."""
        return self.stores.releases.sweep_stale(fleet)

    def end_active_release(self, fleet: str) -> ReleaseRecord | None:
        """:meth:`ReleaseStore.end_active`."""
        return self.stores.releases.end_active(fleet)

    def active_release(self, fleet: str) -> ReleaseRecord | None:
        """:meth:`ReleaseStore.active`."""
        return self.stores.releases.active(fleet)

    def get_release(self, fleet: str, number: int) -> ReleaseRecord | None:
        """:meth:`ReleaseStore.get`."""
        return self.stores.releases.get(fleet, number)

    def predecessor(self, fleet: str, number: int, statuses: Sequence[str]) -> ReleaseRecord | None:
        """:meth:`ReleaseStore.predecessor`."""
        return self.stores.releases.predecessor(fleet, number, statuses)

    def releases(self, fleet: str, limit: int = 50) -> list[ReleaseRecord]:
        """:meth:`ReleaseStore.recent`."""
        return self.stores.releases.recent(fleet, limit)

    def release_numbers(self, fleet: str, statuses: Collection[str]) -> set[int]:
        """:meth:`ReleaseStore.numbers`: e.g. the good ones, ``("active", "superseded")``."""
        return self.stores.releases.numbers(fleet, statuses)

    def releases_with_status(self, fleet: str, statuses: Collection[str]) -> list[ReleaseRecord]:
        """:meth:`ReleaseStore.with_status`."""
        return self.stores.releases.with_status(fleet, statuses)

    def releases_numbered(self, fleet: str, numbers: Collection[int]) -> list[ReleaseRecord]:
        """:meth:`ReleaseStore.numbered`."""
        return self.stores.releases.numbered(fleet, numbers)

    # -- instances: see InstanceStore ---------------------------------------------

    def record_instance(
        self, fleet: str, name: str, role: str, release: int, image_id: str
    ) -> None:
        """:meth:`InstanceStore.record`."""
        self.stores.instances.record(fleet, name, role, release, image_id)

    def retire_instance(self, fleet: str, name: str, outcome: str) -> None:
        """:meth:`InstanceStore.retire`."""
        self.stores.instances.retire(fleet, name, outcome)

    def instances(self, fleet: str, live_only: bool = True) -> list[InstanceRecord]:
        """:meth:`InstanceStore.all`."""
        return self.stores.instances.all(fleet, live_only)

    # -- replacements: see ReplacementStore ---------------------------------------

    def record_replacement(self, fleet: str, role: str, release: int, unavailable_s: float) -> None:
        """:meth:`ReplacementStore.record`."""
        self.stores.replacements.record(fleet, role, release, unavailable_s)

    def last_unavailable(self, fleet: str) -> dict[str, float]:
        """:meth:`ReplacementStore.last_unavailable`."""
        return self.stores.replacements.last_unavailable(fleet)

    # -- volumes: see VolumeStore -------------------------------------------------

    def record_volume(
        self, fleet: str, name: str, role: str, volume: str, path: str, release: int | None = None
    ) -> VolumeRecord:
        """:meth:`VolumeStore.record`."""
        return self.stores.volumes.record(fleet, name, role, volume, path, release)

    def retain_volume(self, fleet: str, name: str, reason: str) -> None:
        """:meth:`VolumeStore.retain`."""
        self.stores.volumes.retain(fleet, name, reason)

    def volume_deleted(self, fleet: str, name: str) -> None:
        """:meth:`VolumeStore.deleted`."""
        self.stores.volumes.deleted(fleet, name)

    def volume(self, fleet: str, name: str) -> VolumeRecord | None:
        """:meth:`VolumeStore.get`."""
        return self.stores.volumes.get(fleet, name)

    def volumes(self, fleet: str, deleted: bool = False) -> list[VolumeRecord]:
        """:meth:`VolumeStore.all`."""
        return self.stores.volumes.all(fleet, deleted)

    # -- test runs: see TestRunStore ----------------------------------------------

    def record_test_run(
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
        """:meth:`TestRunStore.record`."""
        return self.stores.test_runs.record(
            fleet,
            role,
            image_id,
            image_digest,
            image_version,
            outcome,
            checks,
            seconds,
            log_excerpt,
            user,
            test_key=test_key,
            key_parts=key_parts,
        )

    def latest_test_run(
        self, fleet: str, role: str, image_digest: str | None = None
    ) -> TestRunRecord | None:
        """:meth:`TestRunStore.latest`."""
        return self.stores.test_runs.latest(fleet, role, image_digest)

    def test_run_for_key(
        self, fleet: str, role: str, image_digest: str, test_key: str
    ) -> TestRunRecord | None:
        """:meth:`TestRunStore.for_key`."""
        return self.stores.test_runs.for_key(fleet, role, image_digest, test_key)

    def standing_test_pass(self, fleet: str, role: str, image_digest: str) -> TestRunRecord | None:
        """:meth:`TestRunStore.standing_pass`."""
        return self.stores.test_runs.standing_pass(fleet, role, image_digest)

    def test_runs(
        self, fleet: str, role: str | None = None, limit: int = 50
    ) -> list[TestRunRecord]:
        """:meth:`TestRunStore.recent`."""
        return self.stores.test_runs.recent(fleet, role, limit)

    # -- audit: see AuditStore ----------------------------------------------------

    def record_audit(
        self,
        fleet: str,
        action: str,
        target: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> AuditEntry:
        """:meth:`AuditStore.record`."""
        return self.stores.audit.record(fleet, action, target, outcome, details, user)

    def audit_log(
        self, fleet: str | None = None, limit: int = 100, action: str | None = None
    ) -> list[AuditEntry]:
        """:meth:`AuditStore.recent`."""
        return self.stores.audit.recent(fleet, limit, action)

    # -- fleet ids: see FleetStore ------------------------------------------------

    def fleet_id(self, fleet: str) -> str | None:
        """:meth:`FleetStore.fleet_id`."""
        return self.stores.fleets.fleet_id(fleet)

    def claim_fleet(self, fleet: str, fleet_id: str, origin: str) -> str:
        """:meth:`FleetStore.claim`."""
        return self.stores.fleets.claim(fleet, fleet_id, origin)

    # -- locks: see LockStore -----------------------------------------------------

    def lock(
        self,
        name: str,
        wait: float = 0.0,
        purpose: str = "",
        waiting: Callable[[str], None] | None = None,
    ) -> AbstractContextManager[HeldLock]:
        """:meth:`LockStore.hold`: hold lock ``name`` for the block (e.g. ``"deploy"``),
        trying for ``wait`` seconds; ``purpose`` is shown to whoever is refused. The block
        receives the held lock, whose ``check()`` says whether it is still held.

        Raises:
            LockedError: someone else holds it; the message and ``holder`` name them.
            StateError: the lock cannot be written.
            ValueError: ``name`` is not a plain word.
        """
        return self.stores.locks.hold(name, wait, purpose, waiting)

    def check_held(self, name: str) -> None:
        """:meth:`LockStore.check_held`: between the steps of a long task."""
        self.stores.locks.check_held(name)
