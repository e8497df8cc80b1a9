"""The smoke test runs beside the settling watch (``orchestrate.side_by_side``)."""

from __future__ import annotations

import threading
import time

import pytest

from corral.deploy.orchestrate import side_by_side
from corral.errors import DeployError


def test_both_run_at_once_and_both_end_before_it_returns() -> None:
    both = threading.Barrier(2, timeout=5)  # broken unless both wait at the same time
    ended: list[str] = []
    side_by_side(lambda: (both.wait(), ended.append("beside")), lambda: both.wait())
    assert ended == ["beside"]


def test_an_error_beside_is_raised_once_here_is_done() -> None:
    done: list[str] = []

    def smoke() -> None:
        raise DeployError("smoke test failed")

    with pytest.raises(DeployError, match="smoke test failed"):
        side_by_side(smoke, lambda: (time.sleep(0.2), done.append("settled")))
    assert done == ["settled"]


def test_an_error_here_wins_and_waits_for_the_one_beside() -> None:
    ended: list[str] = []

    def smoke() -> None:
        time.sleep(0.3)
        ended.append("smoke")
        raise DeployError("smoke test failed")

    def settle() -> None:
        raise DeployError("role web: 2 of 3 replicas serving")

    with pytest.raises(DeployError, match="2 of 3"):
        side_by_side(smoke, settle)
    assert ended == ["smoke"]  # it ended before the caller could undo anything
