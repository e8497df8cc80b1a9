"""Test runs in SQLite: the SQL, and :class:`SqliteTestRuns`, which implements
:class:`~corral.state.protocols.TestRunStore` with it.

A test run is the result of ``corral test`` for one role: the image it tested (id,
digest and version), the key of what tested it (``test_key``: a hash of the role's test
files and test settings, see :mod:`corral.testing.key`), passed or failed, the checks it
made and an excerpt of its log. The deploy gate asks for the *newest* run of the exact
(digest, key) about to go live (:func:`run_for_key`) and accepts it only if it passed: a
later failure of the same key (``corral test --again``) overrides an earlier pass. Rows
are append-only: triggers abort UPDATE and DELETE.

Secrets never reach the table. The log excerpt and every string inside the checks go
through the state's :class:`~corral.scrub.Scrubber`: the values of the fleet's secrets
become ``***``, and so does what looks like a secret's assignment: a word containing
``password``, ``secret``, ``token`` or ``key`` (any case) followed by ``=`` or ``:`` and
a value becomes ``<word>=***``, so ``DB_PASSWORD=hunter2`` is stored as
``DB_PASSWORD=***`` and ``api_key: abc`` as ``api_key=***``. Keys of the checks'
mappings that look secret have their values replaced by ``***`` as in the audit log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from corral.formats import utc_text
from corral.scrub import Scrubber, scrub_assignments
from corral.state.db import Conn, Handle, Row, newest_row, newest_rows
from corral.state.records import (
    TEST_RUN_OUTCOMES,
    TestRunRecord,
    current_user,
    from_test_runs_row,
)

#: ``password=...`` and the like replaced, line by line (the fleet's values are not known
#: here: the state's scrubber removes those too).
scrub_text = scrub_assignments


def check_key(test_key: str) -> str:
    """``test_key`` if it is a hex hash (64 characters); else ValueError."""
    if len(test_key) != 64 or any(c not in "0123456789abcdef" for c in test_key):
        raise ValueError(f"a test run's key is a sha256 hex digest, not {test_key!r}")
    return test_key


def check_outcome(outcome: str) -> str:
    """``outcome`` if it is passed or failed; else ValueError."""
    if outcome not in TEST_RUN_OUTCOMES:
        raise ValueError(f"a test run is one of {TEST_RUN_OUTCOMES}, not {outcome!r}")
    return outcome


def check_seconds(seconds: float) -> float:
    """``seconds`` as a float if it is finite and not negative; else ValueError."""
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a test run's duration must be >= 0 seconds, not {seconds!r}")
    return value


def checks_json(checks: Sequence[Mapping[str, Any]], scrubber: Scrubber) -> str:
    """The scrubbed checks as JSON text; ValueError unless each is a JSON object."""
    if isinstance(checks, str | bytes | Mapping) or not all(isinstance(c, Mapping) for c in checks):
        raise ValueError("a test run's checks must be a sequence of mappings")
    try:
        return json.dumps([scrubber.data(dict(c)) for c in checks], sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a test run's checks must be JSON-able: {exc}") from exc


def started_at(finished: datetime, seconds: float) -> str:
    """When a run that ended at ``finished`` after ``seconds`` began, as a UTC string."""
    return utc_text(finished - timedelta(seconds=seconds))


def insert_run(conn: Conn, values: Mapping[str, Any]) -> TestRunRecord:
    """Insert one test run and return it.

    ``values`` has fleet, role, image_id, image_digest, image_version, test_key, outcome,
    checks (JSON text), seconds, log_excerpt (already scrubbed), started_at, user and
    key_parts (JSON text).
    """
    cursor = conn.execute(
        "INSERT INTO test_runs (fleet, role, image_id, image_digest, image_version, test_key,"
        ' outcome, checks, seconds, log_excerpt, started_at, "user", key_parts) VALUES'
        " (:fleet, :role, :image_id, :image_digest, :image_version, :test_key, :outcome,"
        " :checks, :seconds, :log_excerpt, :started_at, :user, :key_parts) RETURNING id",
        dict(values),
    )
    row = conn.execute("SELECT * FROM test_runs WHERE id = ?", (cursor.fetchone()[0],)).fetchone()
    return from_test_runs_row(row)


def latest_run(conn: Conn, fleet: str, role: str, image_digest: str | None) -> TestRunRecord | None:
    """The newest run of (fleet, role), of ``image_digest`` if given; None if none."""
    row = newest_row(conn, "test_runs", "id", fleet=fleet, role=role, image_digest=image_digest)
    return None if row is None else from_test_runs_row(row)


def run_for_key(
    conn: Conn, fleet: str, role: str, image_digest: str, test_key: str
) -> TestRunRecord | None:
    """The newest run, passed or failed, of exactly ``image_digest`` tested under
    ``test_key``; None if there is none. An empty key matches nothing (it is what runs
    recorded before keys existed hold)."""
    if not test_key:
        return None
    row = newest_row(
        conn,
        "test_runs",
        "id",
        fleet=fleet,
        role=role,
        image_digest=image_digest,
        test_key=test_key,
    )
    return None if row is None else from_test_runs_row(row)


def standing_pass(conn: Conn, fleet: str, role: str, image_digest: str) -> TestRunRecord | None:
    """The newest passed run of exactly ``image_digest`` that is still the newest run of
    its own key (no later run of the same digest and key failed), or None.

    For an image a release recorded, whose test key at the time is not known: it counts
    as tested if some version of its tests passed it and that pass still stands.
    """
    row: Row | None = conn.execute(
        "SELECT * FROM test_runs AS t WHERE fleet = ? AND role = ? AND image_digest = ?"
        " AND outcome = 'passed' AND id = (SELECT MAX(id) FROM test_runs AS u"
        " WHERE u.fleet = t.fleet AND u.role = t.role AND u.image_digest = t.image_digest"
        " AND u.test_key = t.test_key) ORDER BY id DESC LIMIT 1",
        (fleet, role, image_digest),
    ).fetchone()
    return None if row is None else from_test_runs_row(row)


def query_runs(conn: Conn, fleet: str, role: str | None, limit: int) -> list[TestRunRecord]:
    """The newest ``limit`` runs of ``fleet`` (or one role), oldest first."""
    return [from_test_runs_row(r) for r in newest_rows(conn, "test_runs", fleet, role, limit)]


class SqliteTestRuns:
    """:class:`~corral.state.protocols.TestRunStore` over one SQLite connection."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, db: Handle, scrubber: Scrubber) -> None:
        self._db = db
        self._scrubber = scrubber

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
        """Append the result of testing one role's image (test runs are never changed).

        Secrets are scrubbed first: in the log excerpt and in every string of the checks,
        the fleet's secret values become ``***``, and ``password=...``, ``token: ...``,
        ``API_KEY=...`` (any word containing password, secret, token or key, then ``=`` or
        ``:`` and a value) become ``<word>=***``; the values of secret-looking keys in the
        checks become ``***``.

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
            key_parts: a short hash of each part of that key
                (:func:`corral.testing.key.key_parts`): what the gate names as changed.

        Returns:
            The stored run (scrubbed), with its id.

        Raises:
            ValueError: ``outcome`` is not passed or failed, ``seconds`` is negative,
                ``test_key`` is not a sha256 hex digest, or ``checks`` is not a sequence
                of JSON-able mappings.
            StateError: the database cannot be written.
        """
        finished = datetime.now(UTC)
        duration = check_seconds(seconds)
        values = {
            "fleet": fleet,
            "role": role,
            "image_id": image_id,
            "image_digest": image_digest,
            "image_version": image_version,
            "test_key": check_key(test_key),
            "outcome": check_outcome(outcome),
            "checks": checks_json(checks, self._scrubber),
            "seconds": duration,
            "log_excerpt": self._scrubber.text(log_excerpt),
            "started_at": started_at(finished, duration),
            "user": current_user() if user is None else user,
            "key_parts": json.dumps(dict(key_parts or {}), sort_keys=True),
        }
        with self._db.write("recording a test run") as conn:
            return insert_run(conn, values)

    def latest(
        self, fleet: str, role: str, image_digest: str | None = None
    ) -> TestRunRecord | None:
        """The newest test run of (fleet, role), passed or not; of ``image_digest`` if given.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("looking up the latest test run"):
            return latest_run(self._db.conn, fleet, role, image_digest)

    def for_key(
        self, fleet: str, role: str, image_digest: str, test_key: str
    ) -> TestRunRecord | None:
        """The newest test run, passed or failed, of exactly ``image_digest`` under
        ``test_key``, or None (always None for an empty key).

        This is what the deploy gate asks: the image is tested only if that run passed,
        so a later failure of the same digest and key wins over an earlier pass.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("looking up a test run"):
            return run_for_key(self._db.conn, fleet, role, image_digest, test_key)

    def standing_pass(self, fleet: str, role: str, image_digest: str) -> TestRunRecord | None:
        """The newest passed run of exactly ``image_digest`` that no later run of the same
        digest and test key failed, or None: how the gate judges an image a release
        recorded (a rollback, or a role a partial deploy keeps), whose key is not known.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("looking up a standing test pass"):
            return standing_pass(self._db.conn, fleet, role, image_digest)

    def recent(self, fleet: str, role: str | None = None, limit: int = 50) -> list[TestRunRecord]:
        """The newest ``limit`` test runs of a fleet (or one role), oldest first.

        Raises:
            StateError: the database cannot be read.
        """
        with self._db.read("listing test runs"):
            return query_runs(self._db.conn, fleet, role, limit)
