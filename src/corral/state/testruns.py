"""SQL for test runs; :class:`corral.state.store.State` wraps these in transactions.

A test run is the result of ``corral test`` for one role: the image it tested (id,
digest and version), passed or failed, the checks it made and an excerpt of its log.
The deploy gate asks for a *passed* run of the exact digest about to go live
(:func:`passing_run`). Rows are append-only: triggers abort UPDATE and DELETE.

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
from datetime import UTC, datetime, timedelta
from typing import Any

from corral.scrub import Scrubber, scrub_assignments
from corral.state.db import newest_row, newest_rows
from corral.state.records import TEST_RUN_OUTCOMES, TestRunRecord, from_test_runs_row

#: ``password=...`` and the like replaced, line by line (the fleet's values are not known
#: here: the state's scrubber removes those too).
scrub_text = scrub_assignments


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
    return (finished - timedelta(seconds=seconds)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def insert_run(conn: sqlite3.Connection, values: Mapping[str, Any]) -> TestRunRecord:
    """Insert one test run and return it.

    ``values`` has fleet, role, image_id, image_digest, image_version, outcome, checks
    (JSON text), seconds, log_excerpt (already scrubbed), started_at and user.
    """
    cursor = conn.execute(
        "INSERT INTO test_runs (fleet, role, image_id, image_digest, image_version, outcome,"
        " checks, seconds, log_excerpt, started_at, user) VALUES (:fleet, :role, :image_id,"
        " :image_digest, :image_version, :outcome, :checks, :seconds, :log_excerpt,"
        " :started_at, :user)",
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


def passing_run(
    conn: sqlite3.Connection, fleet: str, role: str, image_digest: str
) -> TestRunRecord | None:
    """The newest passed run of exactly ``image_digest``, or None."""
    row = newest_row(
        conn, "test_runs", "id", fleet=fleet, role=role, image_digest=image_digest, outcome="passed"
    )
    return None if row is None else from_test_runs_row(row)


def query_runs(
    conn: sqlite3.Connection, fleet: str, role: str | None, limit: int
) -> list[TestRunRecord]:
    """The newest ``limit`` runs of ``fleet`` (or one role), oldest first."""
    return [from_test_runs_row(r) for r in newest_rows(conn, "test_runs", fleet, role, limit)]
