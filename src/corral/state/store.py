"""The :class:`State` facade: builds, images, releases, instances, test runs, audit, locks."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from corral.errors import StateError
from corral.scrub import Scrubber
from corral.state import audit, builds, db, releases, testruns
from corral.state.lock import file_lock
from corral.state.records import (
    FAILED_STATUSES,
    RELEASE_FINISH_STATUSES,
    AuditEntry,
    BuildRecord,
    ImageRecord,
    InstanceRecord,
    ReleaseRecord,
    TestRunRecord,
    current_host,
    current_user,
    utc_now,
)


class State:
    """corral's embedded state database (one SQLite file, usually ``.corral/state.db``).

    Use :meth:`open` to get one, and close it (or use it as a context manager). A
    ``State`` belongs to one process and thread; other processes open their own.
    """

    def __init__(
        self, path: Path, conn: sqlite3.Connection, scrubber: Scrubber | None = None
    ) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        #: What every text this state writes goes through (test records, audit, errors).
        self.scrubber = scrubber or Scrubber()

    @classmethod
    def open(
        cls,
        path: Path,
        migrations: list[db.Migration] | None = None,
        scrubber: Scrubber | None = None,
    ) -> State:
        """Open the database at ``path``, creating it and applying pending migrations.

        Args:
            path: the database file; its parent directory is created if missing.
            migrations: the schema steps to apply; corral's bundled ones by default
                (tests pass their own).
            scrubber: removes secrets from every text written (the fleet's secret
                values and what looks secret); by default only what looks secret.

        Returns:
            An open ``State``.

        Raises:
            StateError: the file is not a SQLite database or not corral's, cannot be
                created or written, or was written by a newer corral.
        """
        steps = db.bundled_migrations() if migrations is None else migrations
        conn = db.connect(path)
        try:
            db.migrate(conn, path, steps)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, scrubber)

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; :class:`StateError` after :meth:`close`."""
        if self._conn is None:
            raise StateError(f"the state database {self.path} is closed", path=str(self.path))
        return self._conn

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._translated("reading the schema version"):
            return db.schema_version(self.conn)

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _translated(self, doing: str) -> AbstractContextManager[None]:
        return db.translated(self.path, doing)

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._translated(doing), db.write_transaction(self.conn) as conn:
            yield conn

    # -- builds -------------------------------------------------------------------

    def start_build(self, fleet: str, role: str, content_hash: str) -> BuildRecord:
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
        with self._write("starting a build") as conn:
            return builds.insert_build(conn, values)

    def finish_build(self, build_id: int, image: ImageRecord) -> None:
        """Mark a running build ok and record its image, in one transaction.

        Args:
            build_id: the ``id`` from :meth:`start_build`.
            image: the baked image; fleet, role, number and hash must match the build.

        Raises:
            StateError: no such build, it is not running, or the write failed.
            ValueError: ``image`` does not belong to the build or its version is wrong.
        """
        with self._write("finishing a build") as conn:
            build = builds.get_running_build(conn, build_id)
            builds.check_image_matches(build, image)
            builds.end_build(
                conn, build_id, utc_now(), status="ok", image_id=image.image_id, tag=image.tag
            )
            builds.insert_image(conn, build_id, image)

    def fail_build(self, build_id: int, status: str, error: str) -> None:
        """Mark a running build failed or interrupted.

        Args:
            build_id: the ``id`` from :meth:`start_build`.
            status: ``"failed"`` or ``"interrupted"``.
            error: what went wrong, shown by ``corral builds``.

        Raises:
            StateError: no such build, it is not running, or the write failed.
            ValueError: ``status`` is not failed or interrupted.
        """
        if status not in FAILED_STATUSES:
            raise ValueError(f"a build can only fail as {FAILED_STATUSES}, not {status!r}")
        with self._write("failing a build") as conn:
            builds.get_running_build(conn, build_id)
            builds.end_build(
                conn, build_id, utc_now(), status=status, error=self.scrubber.text(error)
            )

    def sweep_stale_builds(self) -> int:
        """Mark interrupted the running builds of this host whose process has died.

        Builds started on other hosts are left alone: their pids mean nothing here.

        Returns:
            How many builds were marked interrupted.

        Raises:
            StateError: the database cannot be written.
        """
        host = current_host()
        with self._write("sweeping stale builds") as conn:
            rows = conn.execute(
                "SELECT id, pid FROM builds WHERE status = 'running' AND host = ?", (host,)
            ).fetchall()
            dead = [(int(r["id"]), int(r["pid"])) for r in rows if not builds.pid_alive(r["pid"])]
            now = utc_now()
            for build_id, pid in dead:
                error = f"the build process (pid {pid} on {host}) died before finishing"
                builds.end_build(conn, build_id, now, status="interrupted", error=error)
        return len(dead)

    def builds(self, fleet: str, role: str | None = None, limit: int = 50) -> list[BuildRecord]:
        """The newest ``limit`` builds of a fleet (or one role), oldest first.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("listing builds"):
            return builds.query_builds(self.conn, fleet, role, limit)

    # -- images -------------------------------------------------------------------

    def find_image(self, fleet: str, role: str, content_hash: str) -> ImageRecord | None:
        """The newest image of (fleet, role) baked from exactly ``content_hash``.

        Returns:
            The image, or None if nothing with that hash was ever baked successfully.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("looking up an image"):
            return builds.newest_image(self.conn, fleet, role, content_hash)

    def latest_image(self, fleet: str, role: str) -> ImageRecord | None:
        """The highest-numbered image of (fleet, role), or None if there is none.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("looking up the latest image"):
            return builds.newest_image(self.conn, fleet, role)

    def images(self, fleet: str, role: str | None = None) -> list[ImageRecord]:
        """All images of a fleet (or one role), ordered by role, then number.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("listing images"):
            return builds.query_images(self.conn, fleet, role)

    # -- releases -----------------------------------------------------------------

    def start_release(
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
            "kind": releases.check_kind(kind, source),
            "roles": releases.roles_json(roles),
            "source": source,
            "started_at": utc_now(),
            "pid": os.getpid(),
            "user": current_user(),
            "host": current_host(),
        }
        with self._write("starting a release") as conn:
            return releases.insert_release(conn, values)

    def finish_release(
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
            release_id: the ``id`` from :meth:`start_release`.
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
        why = json.dumps(self.scrubber.data(plain), sort_keys=True)
        with self._write("finishing a release") as conn:
            text = None if message is None else self.scrubber.text(message)
            return releases.finish_release(conn, release_id, status, text, utc_now(), why)

    def sweep_stale_releases(self, fleet: str) -> list[ReleaseRecord]:
        """Abort the fleet's deploying releases of this host whose process has died.

        Releases started on other hosts are left alone. Returns the aborted releases
        (as updated); raises StateError if the database cannot be written.
        """
        with self._write("sweeping stale releases") as conn:
            return releases.abort_dead(conn, fleet, current_host(), utc_now())

    def active_release(self, fleet: str) -> ReleaseRecord | None:
        """The fleet's active release, or None. Raises StateError if unreadable."""
        with self._translated("looking up the active release"):
            return releases.active_release(self.conn, fleet)

    def get_release(self, fleet: str, number: int) -> ReleaseRecord | None:
        """Release ``number`` of ``fleet``, or None. Raises StateError if unreadable."""
        with self._translated("looking up a release"):
            return releases.find_release(self.conn, fleet, number)

    def predecessor(self, fleet: str, number: int, statuses: Sequence[str]) -> ReleaseRecord | None:
        """The newest release below ``number`` whose status is one of ``statuses``
        (what a release changed is measured against it). StateError if unreadable."""
        with self._translated("looking up a release"):
            return releases.predecessor(self.conn, fleet, number, tuple(statuses))

    def releases(self, fleet: str, limit: int = 50) -> list[ReleaseRecord]:
        """The newest ``limit`` releases of a fleet, oldest first. StateError if unreadable."""
        with self._translated("listing releases"):
            return releases.query_releases(self.conn, fleet, limit)

    # -- instances ----------------------------------------------------------------

    def record_instance(
        self, fleet: str, name: str, role: str, release: int, image_id: str
    ) -> None:
        """Record a live container; recording the same live instance again is a no-op.

        A name may be reused once the instance that had it is retired.

        Raises:
            StateError: ``release`` is not a release of the fleet, a *different* live
                instance already has ``name``, or the write failed.
        """
        instance = InstanceRecord(fleet, name, role, release, image_id, utc_now(), None, None)
        with self._write("recording an instance") as conn:
            releases.insert_instance(conn, instance)

    def retire_instance(self, fleet: str, name: str, outcome: str) -> None:
        """Retire the live instance ``name`` with ``outcome`` (e.g. ``"replaced"``).

        An unknown (or already retired) name is a no-op. StateError if unwritable.
        """
        with self._write("retiring an instance") as conn:
            releases.retire_instance(conn, fleet, name, outcome, utc_now())

    def instances(self, fleet: str, live_only: bool = True) -> list[InstanceRecord]:
        """The fleet's live (or all) instances in the order recorded. StateError if unreadable."""
        with self._translated("listing instances"):
            return releases.query_instances(self.conn, fleet, live_only)

    def record_replacement(self, fleet: str, role: str, release: int, unavailable_s: float) -> None:
        """Record that a stop-first replacement left ``role`` unavailable ``unavailable_s``.

        Raises:
            ValueError: ``unavailable_s`` is negative or not finite.
            StateError: the database cannot be written.
        """
        seconds = float(unavailable_s)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"an unavailable time must be >= 0 seconds, not {unavailable_s!r}")
        with self._write("recording a replacement") as conn:
            conn.execute(
                'INSERT INTO replacements (fleet, role, "release", unavailable_s, at)'
                " VALUES (?, ?, ?, ?, ?)",
                (fleet, role, release, seconds, utc_now()),
            )

    def last_unavailable(self, fleet: str) -> dict[str, float]:
        """Per role, how long its newest stop-first replacement left it unavailable.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("reading replacements"):
            rows = self.conn.execute(
                "SELECT role, unavailable_s FROM replacements WHERE id IN"
                " (SELECT MAX(id) FROM replacements WHERE fleet = ? GROUP BY role)",
                (fleet,),
            ).fetchall()
        return {str(role): float(seconds) for role, seconds in rows}

    # -- test runs ----------------------------------------------------------------

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
    ) -> TestRunRecord:
        """Append the result of testing one role's image (test runs are never changed).

        Secrets are scrubbed first (by :attr:`scrubber`): in the log excerpt and in every
        string of the checks, the fleet's secret values become ``***``, and
        ``password=...``, ``token: ...``, ``API_KEY=...`` (any word containing password,
        secret, token or key, then ``=`` or ``:`` and a value) become ``<word>=***``; the
        values of secret-looking keys in the checks become ``***``.

        Args:
            fleet: the fleet name.
            role: the role tested.
            image_id: the engine's id of the image tested.
            image_digest: the image's digest; the deploy gate looks results up by it.
            image_version: the image's version, e.g. ``7-3f9c2a1b04de``.
            outcome: ``"passed"`` or ``"failed"``.
            checks: one JSON-able mapping per check (name, kind, outcome, seconds,
                message).
            seconds: how long the run took; ``started_at`` is now minus this.
            log_excerpt: the tail of the test log.
            user: who ran it; the OS user by default.
            test_key: the hash of the test files and settings the run used
                (:func:`corral.testing.key.test_key`); the gate looks runs up by it.

        Returns:
            The stored run (scrubbed), with its id.

        Raises:
            ValueError: ``outcome`` is not passed or failed, ``seconds`` is negative,
                ``test_key`` is not a sha256 hex digest, or ``checks`` is not a sequence
                of JSON-able mappings.
            StateError: the database cannot be written.
        """
        finished = datetime.now(UTC)
        duration = testruns.check_seconds(seconds)
        values = {
            "fleet": fleet,
            "role": role,
            "image_id": image_id,
            "image_digest": image_digest,
            "image_version": image_version,
            "test_key": testruns.check_key(test_key),
            "outcome": testruns.check_outcome(outcome),
            "checks": testruns.checks_json(checks, self.scrubber),
            "seconds": duration,
            "log_excerpt": self.scrubber.text(log_excerpt),
            "started_at": testruns.started_at(finished, duration),
            "user": current_user() if user is None else user,
        }
        with self._write("recording a test run") as conn:
            return testruns.insert_run(conn, values)

    def latest_test_run(
        self, fleet: str, role: str, image_digest: str | None = None
    ) -> TestRunRecord | None:
        """The newest test run of (fleet, role), passed or not; of ``image_digest`` if given.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("looking up the latest test run"):
            return testruns.latest_run(self.conn, fleet, role, image_digest)

    def test_run_for_key(
        self, fleet: str, role: str, image_digest: str, test_key: str
    ) -> TestRunRecord | None:
        """The newest test run, passed or failed, of exactly ``image_digest`` under
        ``test_key``, or None (always None for an empty key).

        This is what the deploy gate asks: the image is tested only if that run passed,
        so a later failure of the same digest and key wins over an earlier pass.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("looking up a test run"):
            return testruns.run_for_key(self.conn, fleet, role, image_digest, test_key)

    def standing_test_pass(self, fleet: str, role: str, image_digest: str) -> TestRunRecord | None:
        """The newest passed run of exactly ``image_digest`` that no later run of the same
        digest and test key failed, or None: how the gate judges an image a release
        recorded (a rollback, or a role a partial deploy keeps), whose key is not known.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("looking up a standing test pass"):
            return testruns.standing_pass(self.conn, fleet, role, image_digest)

    def test_runs(
        self, fleet: str, role: str | None = None, limit: int = 50
    ) -> list[TestRunRecord]:
        """The newest ``limit`` test runs of a fleet (or one role), oldest first.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("listing test runs"):
            return testruns.query_runs(self.conn, fleet, role, limit)

    # -- audit --------------------------------------------------------------------

    def record_audit(
        self,
        fleet: str,
        action: str,
        target: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> AuditEntry:
        """Append one entry to the audit log.

        Values of ``details`` keys that look secret (containing password, passwd,
        secret, token or key, at any depth) are stored as ``"***"``; in every text the
        fleet's secret values (and ``token=...`` assignments) become ``***``.

        Args:
            fleet: the fleet acted on.
            action: what was done, e.g. ``"deploy"``.
            target: what it was done to, e.g. ``"web"``.
            outcome: how it went, e.g. ``"ok"`` or ``"failed"``.
            details: extra JSON-able facts; non-JSON values are stored as ``str()``.
            user: who did it; the OS user by default.

        Returns:
            The stored entry (scrubbed), with its id and UTC time.

        Raises:
            StateError: the database cannot be written.
        """
        who = current_user() if user is None else user
        fields = (fleet, action, target, outcome)
        with self._write("writing the audit log") as conn:
            return audit.insert_entry(conn, utc_now(), who, fields, details or {}, self.scrubber)

    def audit_log(
        self, fleet: str | None = None, limit: int = 100, action: str | None = None
    ) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, optionally filtered; newest last.

        Raises:
            StateError: the database cannot be read.
        """
        with self._translated("reading the audit log"):
            return audit.query_entries(self.conn, fleet, action, limit)

    # -- locks --------------------------------------------------------------------

    @contextmanager
    def lock(self, name: str, wait: float = 0.0, purpose: str = "") -> Iterator[None]:
        """Hold the exclusive OS-level lock ``name`` (file ``<db dir>/<name>.lock``).

        The kernel frees the lock if this process dies, even by kill -9.

        Args:
            name: the lock's name, e.g. ``"deploy"``.
            wait: seconds to keep trying before giving up; 0 tries once.
            purpose: shown to whoever is refused, e.g. ``"deploy web"``.

        Raises:
            LockedError: someone else holds it; the message and ``holder`` name them.
            StateError: the lock file cannot be created or written.
        """
        with file_lock(self.path.parent, name, wait=wait, purpose=purpose):
            yield
