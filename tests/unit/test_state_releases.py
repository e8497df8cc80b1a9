"""The state database: releases (numbering, status moves, immutability) and instances."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from corral.errors import StateError
from corral.state import InstanceRecord, ReleaseRecord, State, bundled_migrations

CTX = multiprocessing.get_context("spawn")
UTC_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ROLES: dict[str, Any] = {
    "web": {"image": "corral/prod-web:3-abcdef012345", "run": {"replicas": 2, "env": {"A": "1"}}},
    "db": {"image": "corral/prod-db:1-0123456789ab", "run": {"replicas": 1}},
}


def deploy(state: State, fleet: str = "prod", status: str = "active") -> ReleaseRecord:
    release = state.start_release(fleet, "deploy", ROLES)
    return state.finish_release(release.id, status)


# -- starting and numbering ------------------------------------------------------------


def test_start_release_records_a_deploying_release(state: State) -> None:
    release = state.start_release("prod", "deploy", ROLES)
    assert release.fleet == "prod"
    assert release.number == 1
    assert release.kind == "deploy"
    assert release.status == "deploying"
    assert release.roles == ROLES
    assert release.source is None
    assert release.message is None
    assert release.finished_at is None
    assert UTC_SECONDS.match(release.started_at)
    assert release.pid == os.getpid()
    assert release.user and release.host
    stored = state.conn.execute("SELECT roles FROM releases WHERE id = ?", (release.id,))
    assert stored.fetchone()[0] == json.dumps(ROLES, sort_keys=True)


def test_numbers_are_per_fleet_and_failed_attempts_keep_theirs(state: State) -> None:
    assert deploy(state, status="failed").number == 1
    assert deploy(state, status="aborted").number == 2
    assert deploy(state).number == 3
    assert deploy(state, fleet="staging").number == 1
    assert state.start_release("prod", "deploy", {}).number == 4


def test_rollback_names_its_source(state: State) -> None:
    first = deploy(state)
    deploy(state)
    back = state.start_release("prod", "rollback", first.roles, source=first.number)
    assert (back.kind, back.source, back.number) == ("rollback", 1, 3)
    with pytest.raises(ValueError, match="rollback needs"):
        state.start_release("prod", "rollback", ROLES)
    with pytest.raises(ValueError, match="rollback needs"):
        state.start_release("prod", "deploy", ROLES, source=1)
    with pytest.raises(StateError, match="no release #9"):
        state.start_release("prod", "rollback", ROLES, source=9)
    assert len(state.releases("prod")) == 3


@pytest.mark.parametrize(
    "roles",
    [{"web": object()}, {"web": float("nan")}, {1: "x"}, ["web"]],
)
def test_roles_must_be_a_json_object(state: State, roles: Any) -> None:
    with pytest.raises(ValueError):
        state.start_release("prod", "deploy", roles)
    assert state.releases("prod") == []


def test_unknown_kind_is_a_value_error(state: State) -> None:
    with pytest.raises(ValueError, match="not 'redeploy'"):
        state.start_release("prod", "redeploy", ROLES)


def _start_releases(path: str, results: Any) -> None:
    try:
        with State.open(Path(path)) as st:
            numbers = [st.start_release("prod", "deploy", ROLES).number for _ in range(10)]
        results.put(("ok", numbers))
    except Exception as exc:
        results.put(("error", repr(exc)))


def test_concurrent_start_release_gets_distinct_numbers(db_path: Path) -> None:
    State.open(db_path).close()
    results = CTX.Queue()
    workers = [CTX.Process(target=_start_releases, args=(str(db_path), results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
    assert sorted(n for _, got in outcomes for n in got) == list(range(1, 41))


# -- finishing -------------------------------------------------------------------------


def test_activating_supersedes_the_previous_active_release(state: State) -> None:
    assert state.active_release("prod") is None
    first = deploy(state)
    assert first.status == "active"
    assert first.finished_at is not None and UTC_SECONDS.match(first.finished_at)
    assert state.active_release("prod") == first
    staging = deploy(state, fleet="staging")
    second = state.start_release("prod", "deploy", ROLES)
    assert state.active_release("prod") == first  # still active while deploying
    second = state.finish_release(second.id, "active", "all healthy")
    assert second.message == "all healthy"
    assert state.active_release("prod") == second
    old = state.get_release("prod", 1)
    assert old is not None
    assert old.status == "superseded"
    assert old.finished_at == first.finished_at
    assert state.active_release("staging") == staging
    statuses = [r.status for r in state.releases("prod")]
    assert statuses == ["superseded", "active"]


def test_only_one_active_release_per_fleet_in_the_schema(state: State) -> None:
    deploy(state)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        state.conn.execute(
            "INSERT INTO releases (fleet, number, kind, status, started_at, user, pid, host)"
            " VALUES ('prod', 99, 'deploy', 'active', 'now', 'me', 1, 'here')"
        )


@pytest.mark.parametrize("status", ["failed", "aborted"])
def test_failed_and_aborted_releases(state: State, status: str) -> None:
    active = deploy(state)
    release = state.start_release("prod", "deploy", ROLES)
    ended = state.finish_release(release.id, status, "web did not get healthy")
    assert (ended.status, ended.message) == (status, "web did not get healthy")
    assert ended.finished_at is not None
    assert state.active_release("prod") == active
    with pytest.raises(StateError, match=f"release prod #2 is already {status}") as info:
        state.finish_release(release.id, "active")
    assert info.value.status == status
    assert state.active_release("prod") == active


def test_finishing_twice_or_unknown_is_refused(state: State) -> None:
    active = deploy(state)
    with pytest.raises(StateError, match="already active"):
        state.finish_release(active.id, "failed", "too late")
    with pytest.raises(StateError, match="no release with id 42"):
        state.finish_release(42, "active")
    release = state.start_release("prod", "deploy", ROLES)
    for status in ("superseded", "deploying", "ok"):
        with pytest.raises(ValueError):
            state.finish_release(release.id, status)
    assert state.get_release("prod", release.number) == release


# -- immutability ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("fleet", "'other'"),
        ("number", "7"),
        ("kind", "'rollback'"),
        ("roles", "'{}'"),
        ("source", "1"),
        ("started_at", "'2000-01-01T00:00:00Z'"),
    ],
)
def test_release_fields_cannot_be_changed(state: State, column: str, value: str) -> None:
    release = state.start_release("prod", "deploy", ROLES)
    with pytest.raises(sqlite3.IntegrityError, match="releases are immutable"):
        state.conn.execute(f"UPDATE releases SET {column} = {value} WHERE id = ?", (release.id,))
    assert state.get_release("prod", 1) == release


def test_release_status_only_moves_forward(state: State) -> None:
    failed = deploy(state, status="failed")
    active = deploy(state)
    for release_id, status in [(failed.id, "active"), (active.id, "deploying")]:
        with pytest.raises(sqlite3.IntegrityError, match="only moves"):
            state.conn.execute("UPDATE releases SET status = ? WHERE id = ?", (status, release_id))
    state.conn.execute("UPDATE releases SET message = 'noted' WHERE id = ?", (failed.id,))
    assert [r.status for r in state.releases("prod")] == ["failed", "active"]


# -- sweeping --------------------------------------------------------------------------------


def _start_release_and_exit(path: str) -> None:
    with State.open(Path(path)) as st:
        st.start_release("prod", "deploy", ROLES)


def test_sweep_stale_releases(db_path: Path) -> None:
    State.open(db_path).close()
    child = CTX.Process(target=_start_release_and_exit, args=(str(db_path),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with State.open(db_path) as st:
        mine = st.start_release("prod", "deploy", ROLES)
        other_fleet = st.start_release("staging", "deploy", ROLES)
        st.conn.execute(
            "INSERT INTO releases (fleet, number, kind, status, started_at, user, pid, host)"
            " VALUES ('prod', 3, 'deploy', 'deploying', 'then', 'them', ?, 'far-away')",
            (child.pid,),
        )
        swept = st.sweep_stale_releases("prod")
        assert st.sweep_stale_releases("prod") == []
        assert [r.number for r in swept] == [1]
        dead = swept[0]
        assert dead.pid == child.pid
        assert dead.status == "aborted"
        assert dead.finished_at is not None
        host = dead.host
        expected = f"the deploy process (pid {child.pid} on {host}) died before finishing"
        assert dead.message == expected
        assert st.get_release("prod", 1) == dead
        assert st.get_release("prod", mine.number) == mine
        far = st.get_release("prod", 3)
        assert far is not None and far.status == "deploying"
        assert st.get_release("staging", other_fleet.number) == other_fleet


# -- reading ---------------------------------------------------------------------------------


def test_get_and_list_releases(state: State) -> None:
    assert state.get_release("prod", 1) is None
    assert state.releases("prod") == []
    made = [deploy(state) for _ in range(5)]
    deploy(state, fleet="staging")
    current = {r.number: r for r in state.releases("prod")}
    assert list(current) == [1, 2, 3, 4, 5]
    assert current[5] == made[-1]
    assert state.get_release("prod", 3) == current[3]
    assert state.get_release("prod", 6) is None
    assert [r.number for r in state.releases("prod", limit=2)] == [4, 5]
    assert [r.fleet for r in state.releases("staging")] == ["staging"]


# -- instances -------------------------------------------------------------------------------


def test_record_retire_and_list_instances(state: State) -> None:
    one = deploy(state)
    two = deploy(state)
    assert state.instances("prod") == []
    state.record_instance("prod", "prod-web-1", "web", one.number, "sha256:aaa")
    state.record_instance("prod", "prod-db-1", "db", one.number, "sha256:ddd")
    state.record_instance("prod", "prod-web-1", "web", one.number, "sha256:aaa")  # no-op
    live = state.instances("prod")
    assert [(i.name, i.role, i.release, i.image_id) for i in live] == [
        ("prod-web-1", "web", 1, "sha256:aaa"),
        ("prod-db-1", "db", 1, "sha256:ddd"),
    ]
    assert all(isinstance(i, InstanceRecord) and i.retired_at is None for i in live)
    assert all(UTC_SECONDS.match(i.started_at) and i.outcome is None for i in live)

    state.retire_instance("prod", "prod-web-1", "replaced")
    state.retire_instance("prod", "no-such", "destroyed")  # no-op
    state.retire_instance("prod", "prod-web-1", "destroyed")  # already retired: no-op
    state.record_instance("prod", "prod-web-1", "web", two.number, "sha256:bbb")
    assert [(i.name, i.release) for i in state.instances("prod")] == [
        ("prod-db-1", 1),
        ("prod-web-1", 2),
    ]
    history = state.instances("prod", live_only=False)
    assert [(i.name, i.release, i.outcome) for i in history] == [
        ("prod-web-1", 1, "replaced"),
        ("prod-db-1", 1, None),
        ("prod-web-1", 2, None),
    ]
    assert history[0].retired_at is not None and UTC_SECONDS.match(history[0].retired_at)
    assert state.instances("staging", live_only=False) == []


def test_record_instance_refuses_conflicts_and_unknown_releases(state: State) -> None:
    release = deploy(state)
    state.record_instance("prod", "prod-web-1", "web", release.number, "sha256:aaa")
    with pytest.raises(StateError, match="already live as role web of release #1"):
        state.record_instance("prod", "prod-web-1", "web", release.number, "sha256:zzz")
    with pytest.raises(StateError, match="no release #7"):
        state.record_instance("prod", "prod-web-2", "web", 7, "sha256:aaa")
    with pytest.raises(StateError, match="no release #1"):
        state.record_instance("staging", "prod-web-1", "web", 1, "sha256:aaa")
    assert [i.image_id for i in state.instances("prod", live_only=False)] == ["sha256:aaa"]


def test_live_instance_names_are_unique_in_the_schema(state: State) -> None:
    release = deploy(state)
    state.record_instance("prod", "web-1", "web", release.number, "sha256:aaa")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        state.conn.execute(
            'INSERT INTO instances (fleet, name, role, "release", image_id, started_at)'
            " VALUES ('prod', 'web-1', 'web', 1, 'sha256:bbb', 'now')"
        )


# -- migration -------------------------------------------------------------------------------


def test_migrating_a_version_1_database_keeps_its_data(db_path: Path) -> None:
    first, *_ = bundled_migrations()
    with State.open(db_path, migrations=[first]) as st:
        assert st.schema_version == 1
        build = st.start_build("prod", "web", "ab" * 32)
        st.record_audit("prod", "bake", "web", "ok", {"n": 1})
        tables = {r[0] for r in st.conn.execute("SELECT name FROM sqlite_master")}
        assert "releases" not in tables
    with State.open(db_path) as st:
        assert st.schema_version == len(bundled_migrations()) >= 2
        assert [b.id for b in st.builds("prod")] == [build.id]
        assert [(e.action, e.details) for e in st.audit_log()] == [("bake", {"n": 1})]
        release = st.start_release("prod", "deploy", ROLES)
        assert release.number == 1
        st.record_instance("prod", "prod-web-1", "web", 1, "sha256:aaa")
        assert len(st.instances("prod")) == 1
    with State.open(db_path) as st:  # reopening applies nothing more
        assert st.get_release("prod", 1) == release
