"""Files corral keeps on the host are private: 0600 files in 0700 folders, never a link."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.cli.main import _write_debug_log
from corral.engines.fake import FakeEngine
from corral.errors import StateError
from corral.hostfiles import private_dir, read_private, write_private
from corral.state import State
from corral.state.filelock import file_lock
from corral.testing.environment import sweep, write_owner_file


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """The usual umask (022) would leave new files world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_state_database_and_journal_files_are_private(db_path: Path) -> None:
    with State.open(db_path) as st:
        st.record_audit("prod", "deploy", "web", "ok")  # the -wal and -shm files exist now
        files = sorted(p.name for p in db_path.parent.iterdir())
        assert files == ["state.db", "state.db-shm", "state.db-wal"]
        assert {p.name: mode(p) for p in db_path.parent.iterdir()} == dict.fromkeys(files, 0o600)
    assert mode(db_path.parent) == 0o700


def test_missing_parents_of_the_state_folder_are_private_too(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    State.open(path).close()
    assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(path)) == (0o700, 0o700, 0o600)


def test_loose_state_files_left_by_an_older_corral_are_tightened(db_path: Path) -> None:
    with State.open(db_path) as st, st.lock("deploy"):
        pass
    (db_path.parent / "tests").mkdir(mode=0o755)  # the owner files of test runs
    (db_path.parent / "deploy.lock").write_text("")  # the flock file of a corral before 0007
    db_path.chmod(0o644)
    db_path.parent.chmod(0o755)
    Path(f"{db_path}-wal").write_bytes(b"")  # an empty journal is no journal to SQLite
    Path(f"{db_path}-wal").chmod(0o666)
    with State.open(db_path) as st, st.lock("deploy"):
        assert st.schema_version > 0
        assert mode(Path(f"{db_path}-wal")) == 0o600
    assert (mode(db_path.parent), mode(db_path)) == (0o700, 0o600)


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_link_planted_at_the_state_database_is_refused(tmp_path: Path, suffix: str) -> None:
    db_path = tmp_path / ".corral" / "state.db"
    State.open(db_path).close()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = Path(f"{db_path}{suffix}")
    planted.unlink(missing_ok=True)
    planted.symlink_to(victim)
    with pytest.raises(StateError, match=f"{planted} is a symbolic link") as caught:
        State.open(db_path)
    assert caught.value.path == str(planted)
    assert victim.read_text() == "precious\n"
    assert mode(victim) == 0o644  # not tightened through the link either


def test_a_dangling_link_is_not_followed_to_create_its_target(tmp_path: Path) -> None:
    db_path = tmp_path / ".corral" / "state.db"
    db_path.parent.mkdir()
    db_path.symlink_to(tmp_path / "created-elsewhere.db")
    with pytest.raises(StateError, match="is a symbolic link"):
        State.open(db_path)
    assert not (tmp_path / "created-elsewhere.db").exists()


def test_a_state_folder_every_user_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(StateError, match="writable by other users"):
        State.open(shared / "state.db")
    assert mode(shared) == 0o1777


def test_a_folder_that_is_not_only_corrals_keeps_its_mode(tmp_path: Path) -> None:
    # state: state.db beside the spec, or state: /etc/corral.db: never chmod such a folder
    (tmp_path / "corral.yaml").write_text("fleet: shop\n")
    tmp_path.chmod(0o755)
    with State.open(tmp_path / "state.db") as st, st.lock("deploy"):
        assert mode(tmp_path / "state.db") == 0o600
        assert not (tmp_path / "deploy.lock").exists()  # a lock is a row of the database
    assert mode(tmp_path) == 0o755
    tmp_path.chmod(0o775)  # a group may write there: it could swap the database
    with pytest.raises(StateError, match="writable by other users"):
        State.open(tmp_path / "state.db")


def test_a_linked_state_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / ".corral").symlink_to(tmp_path / "real")
    with pytest.raises(StateError, match=r"\.corral is a symbolic link"):
        State.open(tmp_path / ".corral" / "state.db")


def test_lock_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "locks"
    with file_lock(folder, "deploy", purpose="deploy web"):
        assert (mode(folder), mode(folder / "deploy.lock")) == (0o700, 0o600)


def test_a_loose_lock_file_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "deploy.lock").write_text("")
    (tmp_path / "deploy.lock").chmod(0o666)
    with file_lock(tmp_path, "deploy"):
        assert mode(tmp_path / "deploy.lock") == 0o600


def test_a_link_planted_at_a_lock_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "deploy.lock").symlink_to(victim)
    with (
        pytest.raises(StateError, match=r"deploy\.lock is a symbolic link"),
        file_lock(tmp_path / "locks", "deploy"),
    ):
        pass
    assert victim.read_text() == "precious\n"


def test_owner_files_of_test_runs_are_private(tmp_path: Path) -> None:
    owners = tmp_path / ".corral" / "tests"
    write_owner_file(owners, owners / "test-abc.json")
    assert (mode(owners), mode(owners / "test-abc.json")) == (0o700, 0o600)
    assert json.loads((owners / "test-abc.json").read_text())["pid"] == os.getpid()


def test_a_link_planted_at_an_owner_file_is_refused(tmp_path: Path) -> None:
    owners = tmp_path / "tests"
    owners.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (owners / "test-abc.json").symlink_to(victim)
    with pytest.raises(StateError, match=r"test-abc\.json is a symbolic link"):
        write_owner_file(owners, owners / "test-abc.json")
    with pytest.raises(StateError, match=r"test-abc\.json is a symbolic link"):
        sweep(FakeEngine(), "shop", owners)
    assert victim.read_text() == "precious\n"


def test_private_files_are_regular_files_with_one_link(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(StateError, match="not a regular file"):
        write_private(tmp_path / "fifo", b"x")  # and it did not hang waiting for a reader
    (tmp_path / "a").write_text("a")
    os.link(tmp_path / "a", tmp_path / "b")
    with pytest.raises(StateError, match="other hard links"):
        read_private(tmp_path / "b")


def test_private_dir_makes_and_tightens_folders_whatever_the_umask(tmp_path: Path) -> None:
    os.umask(0o777)
    private_dir(tmp_path / "new")
    assert mode(tmp_path / "new") == 0o700
    (tmp_path / "old").mkdir(mode=0o775)
    private_dir(tmp_path / "old")
    assert mode(tmp_path / "old") == 0o700


def _log_an_error(path: Path) -> Path:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return _write_debug_log(path)


def test_the_debug_log_is_private(tmp_path: Path) -> None:
    log = tmp_path / "cache" / "corral" / "debug.log"
    assert _log_an_error(log) == log
    assert (mode(log.parent), mode(log)) == (0o700, 0o600)
    assert "RuntimeError: boom" in log.read_text()
    log.chmod(0o644)  # left by an older corral
    _log_an_error(log)
    assert mode(log) == 0o600 and log.read_text().count("RuntimeError: boom") == 2


def test_the_debug_log_is_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "corral").mkdir()
    (tmp_path / "corral" / "debug.log").symlink_to(victim)
    assert _log_an_error(tmp_path / "corral" / "debug.log") == Path("/dev/null")
    assert victim.read_text() == "precious\n"
