"""A command that waits for the deploy lock says once who holds it (both backends)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from corral.state import State


def test_a_waiter_is_told_the_holder_once(state_location: Path | str) -> None:
    told: list[str] = []
    with State.open(state_location) as holder, State.open(state_location) as waiter:
        held = holder.lock("deploy", purpose="deploy web")
        held.__enter__()
        timer = threading.Timer(1.0, held.__exit__, (None, None, None))
        timer.start()
        started = time.monotonic()
        with waiter.lock("deploy", wait=30, purpose="deploy api", waiting=told.append):
            waited = time.monotonic() - started
        timer.join()
    assert waited >= 0.9
    assert len(told) == 1 and told[0].startswith("deploy lock is held by")
    assert "for deploy web" in told[0]


def test_no_word_without_a_wait(state_location: Path | str) -> None:
    told: list[str] = []
    with State.open(state_location) as st, st.lock("deploy", waiting=told.append):
        pass
    assert told == []
