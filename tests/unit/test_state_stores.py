"""The state as narrow parts: the release queries callers use instead of every release,
and callers typed against one protocol."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.state import ReleaseStore, State

GOOD = ("active", "superseded")


@pytest.fixture
def st(tmp_path: Path) -> Iterator[State]:
    state = State.open(tmp_path / "state.db")
    # r1 superseded, r2 failed, r3 aborted, r4 rolled-back, r5 active, r6 deploying; another fleet
    for status in ("active", "failed", "aborted", "rolled-back", "active"):
        release = state.start_release("prod", "deploy", {"web": {"n": status}})
        state.finish_release(release.id, status)
    state.start_release("prod", "deploy", {"web": {}})
    other = state.start_release("test", "deploy", {"web": {}})
    state.finish_release(other.id, "active")
    yield state
    state.close()


def test_release_numbers_are_those_of_the_statuses(st: State) -> None:
    assert st.release_numbers("prod", GOOD) == {1, 5}
    assert st.release_numbers("prod", ["deploying"]) == {6}
    assert st.release_numbers("test", GOOD) == {1}
    assert st.release_numbers("nobody", GOOD) == set()


def test_releases_with_status_are_whole_records_oldest_first(st: State) -> None:
    found = st.releases_with_status("prod", GOOD)
    assert [(r.number, r.status) for r in found] == [(1, "superseded"), (5, "active")]
    assert found[0] == st.get_release("prod", 1)


def test_releases_numbered_leave_unknown_numbers_out(st: State) -> None:
    found = st.releases_numbered("prod", {6, 2, 99})
    assert [r.number for r in found] == [2, 6]
    assert st.releases_numbered("prod", set()) == []


def test_releases_numbered_past_sqlites_parameter_limit(tmp_path: Path) -> None:
    with State.open(tmp_path / "state.db") as state:
        for _ in range(1100):
            state.start_release("prod", "deploy", {})
        found = state.releases_numbered("prod", range(1, 1201))
    assert [r.number for r in found] == list(range(1, 1101))


def _good(releases: ReleaseStore, fleet: str) -> set[int]:
    """A caller that needs releases only: any backend's release part will do."""
    return releases.numbers(fleet, GOOD)


def test_a_caller_typed_against_one_part_gets_what_the_state_answers(st: State) -> None:
    assert _good(st.stores.releases, "prod") == st.release_numbers("prod", GOOD) == {1, 5}
    assert st.stores.releases.active("prod") == st.active_release("prod")
    assert st.stores.releases.recent("prod", limit=2) == st.releases("prod", limit=2)
