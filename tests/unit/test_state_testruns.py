"""The state database: test runs (append-only, scrubbed, looked up by image digest and
test key; the newest run of a key is the one that counts)."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from corral.errors import StateError
from corral.state import State, TestRunRecord, bundled_migrations, scrub_text

UTC_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
KEY_1 = "1" * 64
KEY_2 = "2" * 64
CHECKS: list[dict[str, Any]] = [
    {"name": "health", "kind": "health", "outcome": "passed", "seconds": 1.5, "message": ""},
    {
        "name": "tests/web/test_web_http.py::test_healthz",
        "kind": "http",
        "outcome": "passed",
        "seconds": 0.02,
        "message": "",
    },
]


def record(
    state: State,
    outcome: str = "passed",
    digest: str = DIGEST_A,
    role: str = "web",
    fleet: str = "prod",
    **kwargs: Any,
) -> TestRunRecord:
    values: dict[str, Any] = {
        "image_id": "sha256:" + digest[-12:],
        "image_version": "3-abcdef012345",
        "checks": CHECKS,
        "seconds": 12.5,
        "log_excerpt": "3 passed in 1.2s",
        **kwargs,
    }
    return state.record_test_run(
        fleet,
        role,
        values["image_id"],
        digest,
        values["image_version"],
        outcome,
        values["checks"],
        values["seconds"],
        values["log_excerpt"],
        **{k: v for k, v in kwargs.items() if k == "user"},
        test_key=kwargs.get("test_key", KEY_1),
    )


# -- recording ---------------------------------------------------------------------------


def test_record_test_run_stores_every_field(state: State) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    run = record(state)
    assert isinstance(run, TestRunRecord)
    assert (run.fleet, run.role, run.outcome) == ("prod", "web", "passed")
    assert (run.image_digest, run.image_version) == (DIGEST_A, "3-abcdef012345")
    assert run.image_id == "sha256:" + "a" * 12
    assert run.checks == tuple(CHECKS)
    assert run.seconds == 12.5
    assert run.log_excerpt == "3 passed in 1.2s"
    assert run.user
    assert run.id > 0
    # started_at is when the run began: now minus its duration, in UTC seconds.
    assert UTC_SECONDS.match(run.started_at)
    started = datetime.strptime(run.started_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before - timedelta(seconds=14) <= started <= before - timedelta(seconds=11)
    assert state.latest_test_run("prod", "web") == run


def test_record_test_run_takes_the_user(state: State) -> None:
    assert record(state, user="ci").user == "ci"


def test_records_are_frozen(state: State) -> None:
    run = record(state)
    with pytest.raises(AttributeError):
        run.outcome = "failed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outcome": "ok"}, "passed"),
        ({"outcome": "skipped"}, "passed"),
        ({"seconds": -1.0}, ">= 0"),
        ({"seconds": float("nan")}, ">= 0"),
        ({"checks": "not a list"}, "sequence of mappings"),
        ({"checks": [["name", "x"]]}, "sequence of mappings"),
        ({"checks": [{"seconds": float("inf")}]}, "JSON-able"),
        ({"checks": [{"obj": object()}]}, "JSON-able"),
        ({"test_key": ""}, "sha256 hex"),
        ({"test_key": "A" * 64}, "sha256 hex"),
        ({"test_key": "1" * 63}, "sha256 hex"),
    ],
)
def test_bad_values_are_refused(state: State, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        record(state, **kwargs)
    assert state.test_runs("prod") == []


def test_test_runs_are_append_only(state: State) -> None:
    run = record(state)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        state.conn.execute("UPDATE test_runs SET outcome = 'failed' WHERE id = ?", (run.id,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        state.conn.execute("DELETE FROM test_runs WHERE id = ?", (run.id,))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        state.conn.execute(
            "INSERT INTO test_runs (fleet, role, image_id, image_digest, image_version, outcome,"
            " seconds, started_at, user) VALUES ('p', 'r', 'i', 'd', 'v', 'maybe', 1, 'now', 'u')"
        )
    assert state.test_runs("prod") == [run]


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "scrubbed"),
    [
        ("DB_PASSWORD=hunter2", "DB_PASSWORD=***"),
        ("password: hunter2 and more", "password=*** and more"),
        ("api_key = abc123", "api_key=***"),
        ("Authorization token:xyz", "Authorization token=***"),
        ("SECRET=s1 TOKEN=t2", "SECRET=*** TOKEN=***"),
        ("my-secret-key: v", "my-secret-key=***"),
        ("3 passed, 1 failed in 2.0s", "3 passed, 1 failed in 2.0s"),
        ("the key is under the mat", "the key is under the mat"),
        ("keyboard=qwerty", "keyboard=qwerty"),  # 'key' must be right before = or :
    ],
)
def test_scrub_text(line: str, scrubbed: str) -> None:
    assert scrub_text(line) == scrubbed


def test_scrubbing_works_line_by_line(state: State) -> None:
    log = "collected 3 items\npassword:\nhunter2\nE   assert token == 'x'\nTOKEN=abc\n"
    run = record(state, log_excerpt=log)
    # "password:" at the end of a line does not swallow the next line; the pattern errs
    # on the safe side ("token == 'x'" looks like an assignment too).
    assert run.log_excerpt == (
        "collected 3 items\npassword:\nhunter2\nE   assert token=*** 'x'\nTOKEN=***\n"
    )
    stored = state.conn.execute("SELECT log_excerpt FROM test_runs").fetchone()[0]
    assert "abc" not in stored


def test_checks_are_scrubbed_too(state: State) -> None:
    checks = [
        {
            "name": "t::test_login",
            "kind": "http",
            "outcome": "failed",
            "seconds": 0.1,
            "message": "AssertionError: login with password=hunter2 failed",
            "env": {"API_TOKEN": "t0k3n", "MODE": "x"},
        }
    ]
    run = record(state, outcome="failed", checks=checks)
    assert run.checks[0]["message"] == "AssertionError: login with password=*** failed"
    assert run.checks[0]["env"] == {"API_TOKEN": "***", "MODE": "x"}
    raw = state.conn.execute("SELECT checks FROM test_runs").fetchone()[0]
    assert "hunter2" not in raw and "t0k3n" not in raw


# -- looking up --------------------------------------------------------------------------


def test_the_newest_run_of_a_digest_and_key_is_the_one_that_counts(state: State) -> None:
    # Before keys, the newest *passed* run counted: a later failure did not hide it.
    assert state.test_run_for_key("prod", "web", DIGEST_A, KEY_1) is None
    record(state, "passed")
    failed = record(state, "failed")  # corral test --again, same tests: it failed
    assert state.test_run_for_key("prod", "web", DIGEST_A, KEY_1) == failed
    passed = record(state, "passed")
    assert state.test_run_for_key("prod", "web", DIGEST_A, KEY_1) == passed


def test_a_run_counts_only_for_its_exact_digest_role_fleet_and_key(state: State) -> None:
    run = record(state, "passed")
    assert run.test_key == KEY_1
    assert state.test_run_for_key("prod", "web", DIGEST_A, KEY_1) == run
    assert state.test_run_for_key("prod", "web", DIGEST_A, KEY_2) is None  # other tests
    assert state.test_run_for_key("prod", "web", DIGEST_B, KEY_1) is None
    assert state.test_run_for_key("prod", "api", DIGEST_A, KEY_1) is None
    assert state.test_run_for_key("staging", "web", DIGEST_A, KEY_1) is None
    assert state.test_run_for_key("prod", "web", DIGEST_A[:20], KEY_1) is None
    assert state.test_run_for_key("prod", "web", DIGEST_A, "") is None


def test_a_standing_pass_is_one_no_later_run_of_its_key_failed(state: State) -> None:
    assert state.standing_test_pass("prod", "web", DIGEST_A) is None
    first = record(state, "passed", test_key=KEY_1)
    record(state, "failed", test_key=KEY_2)  # other tests failed: the first pass stands
    assert state.standing_test_pass("prod", "web", DIGEST_A) == first
    record(state, "failed", test_key=KEY_1)  # the same tests failed later: it does not
    assert state.standing_test_pass("prod", "web", DIGEST_A) is None
    second = record(state, "passed", test_key=KEY_2)
    assert state.standing_test_pass("prod", "web", DIGEST_A) == second
    assert state.standing_test_pass("prod", "web", DIGEST_B) is None
    assert state.standing_test_pass("prod", "api", DIGEST_A) is None


def test_latest_test_run_any_outcome_optionally_by_digest(state: State) -> None:
    assert state.latest_test_run("prod", "web") is None
    a_passed = record(state, "passed", DIGEST_A)
    b_failed = record(state, "failed", DIGEST_B)
    record(state, "passed", DIGEST_A, role="api")
    assert state.latest_test_run("prod", "web") == b_failed
    assert state.latest_test_run("prod", "web", DIGEST_A) == a_passed
    assert state.latest_test_run("prod", "web", DIGEST_B) == b_failed
    assert state.latest_test_run("prod", "web", "sha256:none") is None
    a_failed = record(state, "failed", DIGEST_A)
    assert state.latest_test_run("prod", "web", DIGEST_A) == a_failed


def test_test_runs_lists_the_newest_oldest_first(state: State) -> None:
    runs = [record(state, role=role) for role in ("web", "api", "web", "web", "api")]
    record(state, fleet="staging")
    assert state.test_runs("prod") == runs
    assert state.test_runs("prod", "web") == [runs[0], runs[2], runs[3]]
    assert state.test_runs("prod", limit=2) == runs[-2:]
    assert state.test_runs("prod", "api", limit=1) == [runs[4]]
    assert state.test_runs("nobody") == []


def test_a_closed_state_raises_state_error(db_path: Path) -> None:
    st = State.open(db_path)
    st.close()
    with pytest.raises(StateError, match="closed"):
        st.test_runs("prod")
    with pytest.raises(StateError, match="closed"):
        record(st)


# -- migration ---------------------------------------------------------------------------


def test_migrating_a_version_2_database_keeps_its_data(db_path: Path) -> None:
    migrations = bundled_migrations()
    assert [m.name for m in migrations[:3]] == ["init", "releases", "test_runs"]
    assert migrations[5].name == "test_key"
    with State.open(db_path, migrations=migrations[:2]) as st:
        assert st.schema_version == 2
        st.record_audit("prod", "deploy", "web", "ok")
        # Today's code writes today's schema: a version-2 release is written as SQL.
        st.conn.execute(
            "INSERT INTO releases (fleet, number, kind, status, roles, started_at, user, pid,"
            " host) VALUES ('prod', 1, 'deploy', 'active', '{\"web\": {}}',"
            " '2026-01-01T00:00:00Z', 'ann', 1, 'h')"
        )
        tables = {r[0] for r in st.conn.execute("SELECT name FROM sqlite_master")}
        assert "test_runs" not in tables
    with State.open(db_path) as st:
        assert st.schema_version == len(migrations) >= 6
        release = st.active_release("prod")
        assert release is not None
        assert (release.number, release.roles, release.failure) == (1, {"web": {}}, {})
        assert [e.action for e in st.audit_log()] == ["deploy"]
        run = record(st)
        assert st.test_run_for_key("prod", "web", DIGEST_A, KEY_1) == run
    with State.open(db_path) as st:  # reopening applies nothing more
        assert st.test_runs("prod") == [run]


def test_runs_recorded_before_test_keys_match_no_key(db_path: Path) -> None:
    migrations = bundled_migrations()
    with State.open(db_path, migrations=migrations[:5]) as st:
        st.conn.execute(
            "INSERT INTO test_runs (fleet, role, image_id, image_digest, image_version,"
            " outcome, checks, seconds, log_excerpt, started_at, user) VALUES ('prod', 'web',"
            " 'i', ?, '1-a', 'passed', '[]', 1.0, '', '2026-01-01T00:00:00Z', 'u')",
            (DIGEST_A,),
        )
    with State.open(db_path) as st:
        [old] = st.test_runs("prod")
        assert old.test_key == "" and old.outcome == "passed"
        assert st.test_run_for_key("prod", "web", DIGEST_A, KEY_1) is None
        # A release recorded then went live on that pass: a rollback may still use it.
        assert st.standing_test_pass("prod", "web", DIGEST_A) == old
