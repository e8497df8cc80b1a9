"""Locks as leases in the state: renewal, takeover only after expiry, killed and stalled holders.

Each holder is a separate process with a short lease (2 s, renewed every 0.25 s), so the
rules are seen as another process sees them; a holder "on another host" is one whose
row's host is rewritten, which is what a shared database shows of a remote holder.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

from corral.errors import LockedError, StateError
from corral.scrub import Scrubber
from corral.state import State, db
from corral.state.lock import LeaseLocks, process_id, read_holder, takeable
from corral.state.records import LockHolder, current_host

CTX = multiprocessing.get_context("spawn")
LEASE_S = 2.0
RENEW_S = 0.25


def _locks(path: Path) -> LeaseLocks:
    return LeaseLocks(db.Handle(path, db.open_sqlite(path)), Scrubber(), LEASE_S, RENEW_S)


def _hold(path: str, ready: Event, release: Event, said: Any) -> None:
    with _locks(Path(path)).hold("deploy", purpose="deploy web") as lease:
        ready.set()
        release.wait(60)
        try:
            lease.check()
            said.put("still held")
        except LockedError as exc:
            said.put(exc.message)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / ".corral" / "state.db"
    State.open(path).close()
    return path


@pytest.fixture
def holder(db_path: Path) -> Iterator[tuple[Any, Event, Any]]:
    """A process holding the deploy lock with a short lease until its event is set; it
    then says whether it still held the lock."""
    ready, release, said = CTX.Event(), CTX.Event(), CTX.Queue()
    proc = CTX.Process(target=_hold, args=(str(db_path), ready, release, said))
    proc.start()
    assert proc.pid is not None and ready.wait(30), "the holder never got the lock"
    yield proc, release, said
    if proc.is_alive():  # never set the event of a killed process: it may hold its lock
        os.kill(proc.pid, signal.SIGCONT)
        release.set()
    proc.join(30)


def _row(st: State) -> LockHolder:
    found = read_holder(st.conn, "deploy")
    assert found is not None
    return found


def _move_to_another_host(st: State) -> None:
    st.conn.execute("UPDATE locks SET host = 'far-away' WHERE name = 'deploy'")


def test_a_live_holder_renews_its_lease(db_path: Path, holder: tuple[Any, Event, Any]) -> None:
    with State.open(db_path) as st:
        _move_to_another_host(st)  # only the lease keeps it: its pid means nothing here
        first = _row(st).expires_at
        time.sleep(LEASE_S * 2)
        assert _row(st).expires_at > first + LEASE_S  # renewed, again and again
        named = r"held by \S+ on far-away since \S+Z for deploy web \(pid \d+; its lease"
        refused = pytest.raises(LockedError, match=named)
        with refused, _locks(db_path).hold("deploy"):
            pass


def test_a_killed_holder_on_another_host_is_waited_out(
    db_path: Path, holder: tuple[Any, Event, Any]
) -> None:
    proc, _, _ = holder
    with State.open(db_path) as st:
        _move_to_another_host(st)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        old = _row(st)
        expires = old.expires_at
        with pytest.raises(LockedError), _locks(db_path).hold("deploy"):
            pass  # dead, but nobody here can know: its lease still runs
        with _locks(db_path).hold("deploy", wait=LEASE_S * 5, purpose="after"):
            taken = time.time()
            mine = _row(st)
    assert taken >= expires
    assert taken - expires < LEASE_S  # taken as soon as it ran out, not much later
    assert (mine.pid, mine.host, mine.command) == (os.getpid(), current_host(), "after")
    assert mine.holder == process_id() != old.holder and mine.lease != old.lease


def test_a_killed_holder_on_this_host_frees_the_lock_at_once(
    db_path: Path, holder: tuple[Any, Event, Any]
) -> None:
    proc, _, _ = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    started = time.monotonic()
    with _locks(db_path).hold("deploy", wait=0):
        pass
    assert time.monotonic() - started < LEASE_S / 2


def test_a_stalled_holder_loses_the_lock_and_leaves_the_new_holder_alone(
    db_path: Path, holder: tuple[Any, Event, Any]
) -> None:
    proc, release, said = holder
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but renews nothing (the fixture resumes it)
    with State.open(db_path) as st:
        started = time.monotonic()
        with _locks(db_path).hold("deploy", wait=LEASE_S * 5, purpose="new"):
            assert time.monotonic() - started >= RENEW_S  # it waited for the lease
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(RENEW_S * 4)  # the old holder tries to renew, and finds it lost
            release.set()
            assert "deploy lock was lost" in said.get(timeout=30)  # and it knows it
            proc.join(30)
            assert proc.exitcode == 0
            after = _row(st)  # its release did not delete the new holder's row
            assert (after.pid, after.command) == (os.getpid(), "new")
        assert st.stores.locks.holder("deploy") is None


def test_a_holder_that_renews_in_time_still_holds(holder: tuple[Any, Event, Any]) -> None:
    _, release, said = holder
    time.sleep(LEASE_S * 1.5)
    release.set()
    assert said.get(timeout=30) == "still held"


def test_the_renewing_thread_ends_with_the_lock(db_path: Path) -> None:
    def renewers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("corral-lease-")]

    with _locks(db_path).hold("deploy"):
        assert renewers() == ["corral-lease-deploy"]
    assert renewers() == []


def _holder(host: str, pid: int, expires_at: float) -> LockHolder:
    return LockHolder("deploy", "l", "h", "alice", host, pid, "deploy web", "T", expires_at)


def test_takeover_rules() -> None:
    now, here = 1000.0, current_host()
    gone = 2**22 + 12345  # above Linux's pid_max default: no such process
    assert takeable(_holder("far-away", os.getpid(), now - 1), now, here)  # expired
    assert takeable(_holder(here, gone, now + 10), now, here)  # dead, on this host
    assert not takeable(_holder("far-away", gone, now + 10), now, here)  # a pid elsewhere
    assert not takeable(_holder(here, os.getpid(), now + 10), now, here)  # alive, in lease


def test_a_lease_must_be_renewed_more_often_than_it_lasts(db_path: Path) -> None:
    handle = db.Handle(db_path, db.open_sqlite(db_path))
    with pytest.raises(ValueError, match="renewed more often"):
        LeaseLocks(handle, Scrubber(), lease_s=5, renew_s=5)
    handle.close()


def test_a_version_6_database_gains_the_locks_table(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    migrations = db.bundled_migrations()
    assert [m.version for m in migrations if m.name == "locks"] == [7]
    with State.open(path, migrations=migrations[:6]) as st:
        st.record_audit("prod", "deploy", "web", "ok")
        with pytest.raises(StateError, match="no such table"):
            st.stores.locks.holder("deploy")
    with State.open(path) as st, st.lock("deploy", purpose="after the upgrade"):
        found = st.stores.locks.holder("deploy")
        assert found is not None and found.command == "after the upgrade"
        assert [e.action for e in st.audit_log()] == ["deploy"]
