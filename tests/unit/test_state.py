"""The state database: schema migrations, builds, images and the audit log."""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import tempfile
from pathlib import Path

import pytest

from corral.errors import StateError
from corral.state import (
    ImageRecord,
    Migration,
    State,
    bundled_migrations,
    image_version,
    scrub,
)

UTC_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HASH = "ab" * 32


def make_image(build_number: int, content_hash: str = HASH, role: str = "web") -> ImageRecord:
    return ImageRecord(
        fleet="prod",
        role=role,
        number=build_number,
        content_hash=content_hash,
        version=image_version(build_number, content_hash),
        tag=f"corral/prod-{role}:{image_version(build_number, content_hash)}",
        image_id=f"sha256:{build_number:064d}",
        digest=f"sha256:{build_number + 1:064d}",
        built_at="2026-11-29T15:40:00Z",
        git_commit="0123abc",
        git_dirty=False,
        labels={"corral.fleet": "prod"},
    )


def bake(state: State, content_hash: str = HASH, role: str = "web") -> ImageRecord:
    build = state.start_build("prod", role, content_hash)
    image = make_image(build.number, content_hash, role)
    state.finish_build(build.id, image)
    return image


# -- opening and migrations ------------------------------------------------------------


def test_open_creates_parent_dir_and_applies_migrations(db_path: Path) -> None:
    with State.open(db_path) as st:
        assert st.schema_version == len(bundled_migrations()) >= 2
    assert db_path.is_file()
    conn = sqlite3.connect(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"builds", "images", "audit"} <= tables
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(bundled_migrations())
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_reopen_is_idempotent(db_path: Path) -> None:
    with State.open(db_path) as st:
        st.record_audit("prod", "bake", "web", "ok")
    with State.open(db_path) as st:
        assert st.schema_version == len(bundled_migrations())
        assert len(st.audit_log()) == 1


def test_migrations_are_numbered_from_one() -> None:
    migrations = bundled_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "init"
    statements = migrations[0].statements()
    assert any("CREATE TRIGGER audit_no_delete" in s for s in statements)


def test_a_later_migration_is_applied_on_top(db_path: Path) -> None:
    State.open(db_path).close()
    nxt = len(bundled_migrations()) + 1
    extra = Migration(nxt, "extra", "CREATE TABLE extra (x INTEGER);\n-- trailing comment\n")
    with State.open(db_path, [*bundled_migrations(), extra]) as st:
        assert st.schema_version == nxt
        st.conn.execute("INSERT INTO extra VALUES (1)")


def test_failed_migration_is_rolled_back(db_path: Path) -> None:
    State.open(db_path).close()
    nxt = len(bundled_migrations()) + 1
    bad = Migration(nxt, "bad", "CREATE TABLE half (x INTEGER);\nTHIS IS NOT SQL;\n")
    with pytest.raises(StateError, match=f"{nxt:04d}_bad"):
        State.open(db_path, [*bundled_migrations(), bad])
    with State.open(db_path) as st:
        assert st.schema_version == nxt - 1
        names = [r[0] for r in st.conn.execute("SELECT name FROM sqlite_master")]
        assert "half" not in names


def test_refuses_a_newer_schema(db_path: Path) -> None:
    State.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError, match="newer corral") as info:
        State.open(db_path)
    assert info.value.schema_version == 99


def test_corrupt_file_is_a_state_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(StateError, match="not a corral state database") as info:
        State.open(db_path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_foreign_sqlite_db_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE something_else (x)")
    conn.close()
    with pytest.raises(StateError, match="not a corral state database"):
        State.open(db_path)


def test_directory_path_is_a_state_error(db_path: Path) -> None:
    db_path.mkdir(parents=True)
    with pytest.raises(StateError, match="is a directory"):
        State.open(db_path)


def test_uncreatable_directory_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot write"):
        State.open(blocker / ".corral" / "state.db")


NOBODY = 65534


def _write_audit_as(uid: int | None, db_path: Path) -> str:
    """Try an audit write (as ``uid`` in a forked child when given); the error's text."""
    if uid is None:
        try:
            with State.open(db_path) as st:
                st.record_audit("prod", "bake", "web", "ok")
        except StateError as exc:
            return f"StateError: {exc}"
        return "written"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the interpreter is loaded already, it only drops its user
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write, _write_audit_as(None, db_path).encode())
        finally:
            os._exit(0)  # never back into pytest; an exception leaves the answer empty
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return text


def test_unwritable_file_is_a_state_error() -> None:
    # Root ignores file modes, so as root the write is tried by "nobody" in a forked child,
    # in a folder of its own that nobody may enter (pytest's tmp folders are root's only).
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="corral-unwritable-") as top:
        Path(top).chmod(0o711)
        db_path = Path(top) / ".corral" / "state.db"
        State.open(db_path).close()
        for p in db_path.parent.iterdir():
            p.chmod(0o444)
        db_path.parent.chmod(0o555)
        try:
            outcome = _write_audit_as(NOBODY if as_root else None, db_path)
        finally:
            db_path.parent.chmod(0o755)
    assert outcome.startswith("StateError:"), outcome


def test_closed_state_raises(db_path: Path) -> None:
    st = State.open(db_path)
    st.close()
    st.close()
    with pytest.raises(StateError, match="closed"):
        st.images("prod")


# -- audit -----------------------------------------------------------------------------


def test_audit_is_append_only(state: State) -> None:
    state.record_audit("prod", "deploy", "web", "ok")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        state.conn.execute("UPDATE audit SET outcome = 'failed'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        state.conn.execute("DELETE FROM audit")
    assert [e.outcome for e in state.audit_log()] == ["ok"]


def test_audit_entry_fields(state: State) -> None:
    entry = state.record_audit("prod", "deploy", "web", "ok", {"image": "3-abc"}, user="alice")
    assert entry.user == "alice"
    assert (entry.fleet, entry.action, entry.target, entry.outcome) == (
        "prod",
        "deploy",
        "web",
        "ok",
    )
    assert entry.details == {"image": "3-abc"}
    assert UTC_SECONDS.match(entry.at)
    default_user = state.record_audit("prod", "bake", "web", "ok")
    assert default_user.user
    assert default_user.details == {}


def test_audit_scrubs_secrets(state: State) -> None:
    details = {
        "password": "hunter2",
        "API_KEY": "k",
        "auth-token": "t",
        "nested": {"client_secret": "s", "plain": "visible"},
        "list": [{"db_passwd": "p"}, "x"],
        "replicas": 3,
        "path": Path("/srv"),
    }
    entry = state.record_audit("prod", "deploy", "web", "ok", details)
    stored = state.audit_log()[-1]
    assert stored == entry
    assert stored.details == {
        "password": "***",
        "API_KEY": "***",
        "auth-token": "***",
        "nested": {"client_secret": "***", "plain": "visible"},
        "list": [{"db_passwd": "***"}, "x"],
        "replicas": 3,
        "path": "/srv",
    }
    raw = state.conn.execute("SELECT details FROM audit").fetchone()[0]
    assert "hunter2" not in raw
    assert scrub({"token": 1}) == {"token": "***"}


def test_audit_log_filters_and_order(state: State) -> None:
    for i in range(5):
        state.record_audit("prod", "deploy" if i % 2 else "bake", f"t{i}", "ok")
    state.record_audit("staging", "deploy", "other", "ok")
    assert [e.target for e in state.audit_log("prod")] == ["t0", "t1", "t2", "t3", "t4"]
    assert [e.target for e in state.audit_log("prod", limit=2)] == ["t3", "t4"]
    assert [e.target for e in state.audit_log(action="deploy")] == ["t1", "t3", "other"]
    assert len(state.audit_log()) == 6


# -- builds and images -----------------------------------------------------------------


def test_build_numbers_count_per_fleet_and_role(state: State) -> None:
    a1 = state.start_build("prod", "web", HASH)
    a2 = state.start_build("prod", "web", HASH)
    b1 = state.start_build("prod", "db", HASH)
    c1 = state.start_build("staging", "web", HASH)
    assert (a1.number, a2.number, b1.number, c1.number) == (1, 2, 1, 1)
    assert a1.status == "running"
    assert a1.pid == os.getpid()
    assert a1.user and a1.host
    assert UTC_SECONDS.match(a1.started_at)
    assert a1.finished_at is None


def test_failed_builds_still_use_up_numbers(state: State) -> None:
    first = state.start_build("prod", "web", HASH)
    state.fail_build(first.id, "failed", "apt exploded")
    assert bake(state).number == 2


def test_finish_build_records_image(state: State) -> None:
    build = state.start_build("prod", "web", HASH)
    image = make_image(build.number)
    state.finish_build(build.id, image)
    (done,) = state.builds("prod")
    assert done.status == "ok"
    assert done.image_id == image.image_id
    assert done.tag == image.tag
    assert done.finished_at is not None and UTC_SECONDS.match(done.finished_at)
    assert state.images("prod") == [image]
    assert image.version == f"1-{HASH[:12]}"


def test_finish_build_rejects_mismatched_image(state: State) -> None:
    build = state.start_build("prod", "web", HASH)
    with pytest.raises(ValueError, match="does not belong"):
        state.finish_build(build.id, make_image(build.number, role="db"))
    wrong_version = ImageRecord(**{**make_image(build.number).__dict__, "version": "x"})
    with pytest.raises(ValueError, match="version"):
        state.finish_build(build.id, wrong_version)
    assert state.images("prod") == []
    assert state.builds("prod")[0].status == "running"


def test_finish_build_is_one_transaction(state: State) -> None:
    build = state.start_build("prod", "web", HASH)
    image = make_image(build.number)
    # A stray image row holding this number makes the image insert fail after the
    # builds row was updated: the whole transaction must roll back.
    state.conn.execute("PRAGMA foreign_keys = OFF")
    state.conn.execute(
        "INSERT INTO images (build_id, fleet, role, number, content_hash, version, tag,"
        " image_id, digest, built_at, git_dirty) VALUES (999, 'prod', 'web', ?, 'h', 'v',"
        " 't', 'i', 'd', 'b', 0)",
        (build.number,),
    )
    with pytest.raises(StateError, match="finishing a build") as info:
        state.finish_build(build.id, image)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    assert state.builds("prod")[0].status == "running"


def test_fail_build(state: State) -> None:
    one = state.start_build("prod", "web", HASH)
    two = state.start_build("prod", "web", HASH)
    state.fail_build(one.id, "failed", "boom")
    state.fail_build(two.id, "interrupted", "ctrl-c")
    first, second = state.builds("prod")
    assert (first.status, first.error) == ("failed", "boom")
    assert (second.status, second.error) == ("interrupted", "ctrl-c")
    assert first.finished_at is not None
    with pytest.raises(ValueError):
        state.fail_build(one.id, "ok", "nope")
    with pytest.raises(StateError, match="already failed"):
        state.fail_build(one.id, "failed", "again")
    with pytest.raises(StateError, match="no build"):
        state.fail_build(12345, "failed", "ghost")
    with pytest.raises(StateError, match="already"):
        state.finish_build(one.id, make_image(one.number))


def _start_build_and_exit(path: str) -> None:
    with State.open(Path(path)) as st:
        st.start_build("prod", "web", HASH)


def test_sweep_stale_builds(db_path: Path) -> None:
    State.open(db_path).close()
    child = multiprocessing.get_context("spawn").Process(
        target=_start_build_and_exit, args=(str(db_path),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with State.open(db_path) as st:
        mine = st.start_build("prod", "web", HASH)
        elsewhere = st.start_build("prod", "web", HASH)
        st.conn.execute(
            "UPDATE builds SET host = 'far-away', pid = 1 WHERE id = ?", (elsewhere.id,)
        )
        assert st.sweep_stale_builds() == 1
        assert st.sweep_stale_builds() == 0
        by_id = {b.id: b for b in st.builds("prod")}
        dead = next(b for b in by_id.values() if b.pid == child.pid)
        assert dead.status == "interrupted"
        assert f"pid {child.pid}" in (dead.error or "")
        assert by_id[mine.id].status == "running"
        assert by_id[elsewhere.id].status == "running"


def test_find_and_latest_image(state: State) -> None:
    other = "cd" * 32
    assert state.find_image("prod", "web", HASH) is None
    assert state.latest_image("prod", "web") is None
    one = bake(state, HASH)
    two = bake(state, other)
    three = bake(state, HASH)
    failed = state.start_build("prod", "web", HASH)
    state.fail_build(failed.id, "failed", "x")
    db_image = bake(state, HASH, role="db")
    assert state.find_image("prod", "web", HASH) == three
    assert state.find_image("prod", "web", other) == two
    assert state.find_image("prod", "db", other) is None
    assert state.find_image("staging", "web", HASH) is None
    assert state.latest_image("prod", "web") == three
    assert state.images("prod") == [db_image, one, two, three]
    assert state.images("prod", "web") == [one, two, three]


def test_builds_limit_keeps_newest(state: State) -> None:
    for _ in range(5):
        state.start_build("prod", "web", HASH)
    state.start_build("prod", "db", HASH)
    assert [b.number for b in state.builds("prod", "web", limit=2)] == [4, 5]
    assert len(state.builds("prod")) == 6
    assert [b.role for b in state.builds("prod", "db")] == ["db"]


def test_sqlite_errors_are_explained(tmp_path: Path) -> None:
    from corral.state.db import state_error

    path = tmp_path / "state.db"
    readonly = state_error(
        path, "x", sqlite3.OperationalError("attempt to write a readonly database")
    )
    assert readonly.message.startswith(f"the state database {path} is read-only")
    assert "status, plan, history and audit still read it" in readonly.message
    busy = state_error(path, "starting a build", sqlite3.OperationalError("database is locked"))
    assert "busy" in busy.message and "starting a build" in busy.message
    assert busy.path == str(path)
