"""The state's behaviour on both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from corral.errors import LockedError, StateError
from corral.state import State
from corral.state.db import bundled_migrations
from corral.state.records import ImageRecord, image_version


def _raw(st: State, sql: str) -> None:
    """Run ``sql`` through the driver itself, past corral's own rules."""
    if st.dialect == "sqlite":
        st.conn.execute(sql)
    else:
        with st.conn.cursor() as cur:
            cur.execute(sql)


def test_open_applies_every_migration(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        assert st.schema_version == len(bundled_migrations())
    with State.open(state_location) as st:  # a second open applies nothing
        assert st.schema_version == len(bundled_migrations())


def test_build_numbers_continue_and_images_are_found(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        first = st.start_build("f", "web", "h1")
        second = st.start_build("f", "web", "h2")
        assert (first.number, second.number) == (1, 2)
        image = ImageRecord(
            fleet="f",
            role="web",
            number=1,
            content_hash="h1",
            version=image_version(1, "h1"),
            tag="t",
            image_id="i",
            digest="d",
            built_at="2026-01-01T00:00:00Z",
            git_commit=None,
            git_dirty=False,
            labels={},
        )
        st.finish_build(first.id, image)
        assert st.find_image("f", "web", "h1") == image
        assert [b.status for b in st.builds("f")] == ["ok", "running"]


def test_concurrent_build_numbers_are_unique(state_location: Path | str) -> None:
    State.open(state_location).close()
    numbers: list[int] = []

    def bake() -> None:
        with State.open(state_location) as st:
            for _ in range(5):
                numbers.append(st.start_build("f", "web", "h").number)

    threads = [threading.Thread(target=bake) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 16))


def test_releases_and_instances(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        release = st.start_release("f", "deploy", {"web": {"image": "x"}})
        st.record_instance("f", "f-web-r1-1", "web", release.number, "img")
        st.finish_release(release.id, "active")
        assert st.active_release("f").number == 1  # type: ignore[union-attr]
        assert [i.name for i in st.instances("f")] == ["f-web-r1-1"]
        st.retire_instance("f", "f-web-r1-1", "replaced")
        assert st.instances("f") == []
        st.record_replacement("f", "db", 1, 1.25)
        assert st.last_unavailable("f") == {"db": 1.25}


def test_the_database_keeps_the_audit_log_append_only(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        st.record_audit("f", "deploy", "web", "ok", {"token": "s3cret-value"})
        with pytest.raises(Exception, match="append-only"):
            _raw(st, "UPDATE audit SET outcome = 'failed'")
        if st.dialect == "postgresql":
            st.conn.rollback()
        with pytest.raises(Exception, match="append-only"):
            _raw(st, "DELETE FROM audit")
        if st.dialect == "postgresql":
            st.conn.rollback()
        assert [e.outcome for e in st.audit_log("f")] == ["ok"]


def test_a_release_status_only_moves_forward(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        release = st.start_release("f", "deploy", {})
        st.finish_release(release.id, "failed")
        with pytest.raises(Exception, match="only moves"):
            _raw(st, f"UPDATE releases SET status = 'active' WHERE id = {release.id}")


def test_a_lock_names_its_holder_and_refuses_another(state_location: Path | str) -> None:
    with State.open(state_location) as a, State.open(state_location) as b:
        with (
            a.lock("deploy", purpose="deploy web"),
            pytest.raises(LockedError, match="deploy web"),
            b.lock("deploy"),
        ):
            pass
        with b.lock("deploy"):
            pass


def test_a_newer_schema_is_refused(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        if st.dialect == "sqlite":
            _raw(st, "PRAGMA user_version = 99")
        else:
            _raw(st, "UPDATE corral_schema SET version = 99")
    with pytest.raises(StateError, match="newer corral"):
        State.open(state_location)


def test_a_password_in_the_url_is_refused_and_never_shown() -> None:
    with pytest.raises(StateError) as info:
        State.open("postgresql://corral:hunter2@db.example/corral")
    assert "hunter2" not in str(info.value)
    assert "PGPASSWORD" in str(info.value)


def test_a_server_that_does_not_answer_is_named(pg_cluster: object) -> None:
    with pytest.raises(StateError, match="does not answer") as info:
        State.open("postgresql://corral@/corral?host=/nonexistent-socket-dir&port=1")
    assert "postgresql://corral@" in str(info.value)


def test_wrong_credentials_are_named(pg_cluster: object) -> None:
    from tests.pgcluster import Cluster

    assert isinstance(pg_cluster, Cluster)
    url = pg_cluster.new_database().replace(f"{pg_cluster.user}@", "nobody@")
    with pytest.raises(StateError, match="nobody"):
        State.open(url)


def test_postgres_locks_hold_a_session_advisory_lock(pg_cluster: object) -> None:
    from tests.pgcluster import Cluster

    assert isinstance(pg_cluster, Cluster)
    url = pg_cluster.new_database()
    with State.open(url) as st, st.lock("deploy", purpose="deploy web"):
        with st.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            row = cur.fetchone()
        assert row is not None and row[0] == 1


def test_taints_are_kept_moved_and_cleared(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        taints = st.stores.taints
        taints.taint("f", "f-web-r1-1", "break-glass by a@h: look", "a@h", 2000.0)
        taints.taint("f", "f-web-r1-1", "break-glass by b@h: again", "b@h", 3000.5)  # replaces
        taints.taint("g", "g-web-r1-1", "other fleet", "a@h", 1.0)
        [kept] = taints.all("f")
        assert (kept.instance, kept.who, kept.due) == ("f-web-r1-1", "b@h", 3000.5)
        assert kept.reason == "break-glass by b@h: again" and kept.since.endswith("Z")
        taints.set_due("f", "f-web-r1-1", 10.0)
        taints.set_due("f", "never-tainted", 10.0)  # nothing to move
        assert [t.due for t in taints.all("f")] == [10.0]
        taints.clear("f", ["f-web-r1-1", "never-tainted"])
        assert taints.all("f") == [] and len(taints.all("g")) == 1
        with pytest.raises(ValueError):
            taints.taint("f", "x", "y", "z", float("nan"))
