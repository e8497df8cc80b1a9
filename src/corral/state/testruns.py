"""SQL for test runs; :class:`corral.state.store.State` wraps these in transactions.

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
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from corral.formats import utc_text
from corral.scrub import Scrubber, scrub_assignments
from corral.state.db import newest_row, newest_rows
from corral.state.records import TEST_RUN_OUTCOMES, TestRunRecord, from_test_runs_row

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


def insert_run(conn: sqlite3.Connection, values: Mapping[str, Any]) -> TestRunRecord:
    """Insert one test run and return it.

    ``values`` has fleet, role, image_id, image_digest, image_version, test_key, outcome,
    checks (JSON text), seconds, log_excerpt (already scrubbed), started_at and user.
    """
    cursor = conn.execute(
        "INSERT INTO test_runs (fleet, role, image_id, image_digest, image_version, test_key,"
        " outcome, checks, seconds, log_excerpt, started_at, user) VALUES (:fleet, :role,"
        " :image_id, :image_digest, :image_version, :test_key, :outcome, :checks, :seconds,"
        " :log_excerpt, :started_at, :user)",
        dict(values),
    )
    row = conn.execute("SELECT * FROM test_runs WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return from_test_runs_row(row)


def latest_run(
    conn: sqlite3.Connection, fleet: str, role: str, image_digest: str | None
) -> TestRunRecord | None:
    """The newest run of (fleet, role), of ``image_digest`` if given; None if none."""
    row = newest_row(conn, "test_runs", "id", fleet=fleet, role=role, image_digest=image_digest)
    return None if row is None else from_test_runs_row(row)


def run_for_key(
    conn: sqlite3.Connection, fleet: str, role: str, image_digest: str, test_key: str
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


def standing_pass(
    conn: sqlite3.Connection, fleet: str, role: str, image_digest: str
) -> TestRunRecord | None:
    """The newest passed run of exactly ``image_digest`` that is still the newest run of
    its own key (no later run of the same digest and key failed), or None.

    For an image a release recorded, whose test key at the time is not known: it counts
    as tested if some version of its tests passed it and that pass still stands.
    """
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM test_runs AS t WHERE fleet = ? AND role = ? AND image_digest = ?"
        " AND outcome = 'passed' AND id = (SELECT MAX(id) FROM test_runs AS u"
        " WHERE u.fleet = t.fleet AND u.role = t.role AND u.image_digest = t.image_digest"
        " AND u.test_key = t.test_key) ORDER BY id DESC LIMIT 1",
        (fleet, role, image_digest),
    ).fetchone()
    return None if row is None else from_test_runs_row(row)


def query_runs(
    conn: sqlite3.Connection, fleet: str, role: str | None, limit: int
) -> list[TestRunRecord]:
    """The newest ``limit`` runs of ``fleet`` (or one role), oldest first."""
    return [from_test_runs_row(r) for r in newest_rows(conn, "test_runs", fleet, role, limit)]
