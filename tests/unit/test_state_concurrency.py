"""The state database under concurrent processes: build numbers and named locks."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

from corral.errors import LockedError, StateError
from corral.state import State

CTX = multiprocessing.get_context("spawn")
PROCESSES = 8
BUILDS_EACH = 20


def _start_builds(path: str, results: Any) -> None:
    try:
        with State.open(Path(path)) as st:
            numbers = [st.start_build("prod", "web", "h" * 64).number for _ in range(BUILDS_EACH)]
        results.put(("ok", numbers))
    except Exception as exc:
        results.put(("error", repr(exc)))


def test_concurrent_start_build_gets_distinct_numbers(tmp_path: Path) -> None:
    path = tmp_path / ".corral" / "state.db"
    results = CTX.Queue()
    workers = [
        CTX.Process(target=_start_builds, args=(str(path), results)) for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [kind for kind, _ in outcomes] == ["ok"] * PROCESSES, outcomes
    numbers = sorted(n for _, got in outcomes for n in got)
    assert numbers == list(range(1, PROCESSES * BUILDS_EACH + 1))
    with State.open(path) as st:
        assert len(st.builds("prod", limit=1000)) == PROCESSES * BUILDS_EACH


def _hold_lock(path: str, ready: Event, release: Event, purpose: str) -> None:
    with State.open(Path(path)) as st, st.lock("deploy", purpose=purpose):
        ready.set()
        release.wait(60)


def _spawn_holder(path: Path, purpose: str = "deploy web") -> tuple[Any, Event]:
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(str(path), ready, release, purpose))
    holder.start()
    assert ready.wait(30), "the holder never got the lock"
    return holder, release


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / ".corral" / "state.db"
    State.open(path).close()
    return path


def test_lock_held_by_another_process_names_the_holder(db_path: Path) -> None:
    holder, release = _spawn_holder(db_path)
    try:
        with State.open(db_path) as st:
            started = time.monotonic()
            with pytest.raises(LockedError) as info, st.lock("deploy", wait=0.3):
                pass
            assert time.monotonic() - started >= 0.3
    finally:
        release.set()
        holder.join(30)
    err = info.value
    assert isinstance(err, StateError)
    who = err.holder
    assert who["pid"] == holder.pid
    assert who["command"] == who["purpose"] == "deploy web"
    assert err.message.startswith(
        f"deploy lock is held by {who['user']} on {who['host']} since {who['since']}"
        f" for deploy web (pid {holder.pid}; "
    )
    assert err.to_dict()["error"] == "locked"


def test_lock_is_freed_when_holder_is_killed(db_path: Path) -> None:
    holder, _ = _spawn_holder(db_path)
    with State.open(db_path) as st:
        with pytest.raises(LockedError), st.lock("deploy"):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        assert holder.exitcode == -signal.SIGKILL
        with st.lock("deploy", purpose="after the crash"):
            now = st.stores.locks.holder("deploy")
            assert now is not None
            assert (now.command, now.pid) == ("after the crash", os.getpid())


def test_lock_waits_for_release(db_path: Path) -> None:
    holder, release = _spawn_holder(db_path)
    try:
        with State.open(db_path) as st:
            timer = _release_later(release, 0.5)
            with st.lock("deploy", wait=30):
                pass
            timer.join()
    finally:
        release.set()
        holder.join(30)


def _release_later(release: Event, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, release.set)
    timer.start()
    return timer


def test_lock_in_process_is_exclusive_and_reusable(db_path: Path) -> None:
    with State.open(db_path) as st:
        with st.lock("deploy", purpose="first"):
            with (
                pytest.raises(LockedError, match=r"since \S+Z for first \(pid "),
                st.lock("deploy"),
            ):
                pass
            with st.lock("other"):
                pass
        with st.lock("deploy"):
            pass
        assert st.stores.locks.holder("deploy") is None


def test_lock_rejects_path_like_names(db_path: Path) -> None:
    with State.open(db_path) as st, pytest.raises(ValueError), st.lock("../evil"):
        pass
