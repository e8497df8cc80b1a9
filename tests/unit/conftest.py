"""Fixtures shared by the unit tests: a fresh state database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.state import State
from tests.pgcluster import Cluster, private_cluster


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".corral" / "state.db"


@pytest.fixture
def state(db_path: Path) -> Iterator[State]:
    with State.open(db_path) as st:
        yield st


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every fleet's default state in a folder of the test's own, never /var/lib/corral
    or the user's data folder; ``CORRAL_STATE`` of the caller's shell does not leak in."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("CORRAL_STATE_HOME", str(home))
    monkeypatch.delenv("CORRAL_STATE", raising=False)
    return home


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A private PostgreSQL cluster for the whole session (fails if PostgreSQL is missing)."""
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, db_path: Path) -> Path | str:
    """A fresh state location on each backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return db_path
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()
