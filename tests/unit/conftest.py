"""Fixtures shared by the unit tests: a fresh state database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.state import State


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".corral" / "state.db"


@pytest.fixture
def state(db_path: Path) -> Iterator[State]:
    with State.open(db_path) as st:
        yield st
