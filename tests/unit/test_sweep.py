"""Sweeping what dead test runs left, with the fake engine: owner files decide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.deploy.scope import LABEL, Scope
from corral.engines.base import ContainerSpec
from corral.engines.fake import FakeEngine
from corral.state.records import current_host
from corral.testing.environment import sweep

FLEET = "shop"


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _leave(engine: FakeEngine, owners: Path, env: str, pid: int | None) -> None:
    """What a test run of ``env`` leaves: a container, a network, a scratch volume."""
    scope = Scope(FLEET, env)
    engine.start(
        ContainerSpec(
            name=f"{scope.prefix}-web-r1-1",
            image="img",
            labels=scope.labels("instance"),
            network=scope.network,
        )
    )
    engine.ensure_network(scope.network, scope.labels("network"))
    engine.ensure_volume(scope.volume_name("web", "data"), scope.labels("volume"))
    if pid is not None:
        owners.mkdir(exist_ok=True)
        (owners / f"{env}.json").write_text(json.dumps({"pid": pid, "host": current_host()}))


def _envs(engine: FakeEngine) -> set[str]:
    return {c.labels[LABEL + "env"] for c in engine.list_containers({LABEL + "fleet": FLEET})}


def test_only_environments_of_dead_owners_are_swept(tmp_path: Path) -> None:
    engine, owners = FakeEngine(), tmp_path / "tests"
    _leave(engine, owners, "test-dead", _dead_pid())
    _leave(engine, owners, "test-alive", os.getpid())
    live = Scope(FLEET)
    engine.ensure_volume(live.volume_name("web", "data"), live.labels("volume"))

    assert sweep(engine, FLEET, owners) == ["test-dead"]

    assert _envs(engine) == {"test-alive"}
    assert not (owners / "test-dead.json").exists()
    assert engine.list_networks({LABEL + "env": "test-dead"}) == []
    assert engine.list_volumes({LABEL + "env": "test-dead"}) == []
    assert engine.list_volumes(live.labels("volume")) == ["shop-web-data"]  # live data stays


def test_without_dead_owners_the_sweep_asks_the_engine_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, owners = FakeEngine(), tmp_path / "tests"
    _leave(engine, owners, "test-alive", os.getpid())
    for method in ("list_containers", "list_networks", "list_volumes", "remove"):
        monkeypatch.setattr(engine, method, lambda *a, m=method: pytest.fail(f"{m} called"))
    assert sweep(engine, FLEET, owners) == []
    assert sweep(engine, FLEET, tmp_path / "no-such-folder") == []


def test_objects_whose_owner_file_vanished_are_swept_only_on_request(tmp_path: Path) -> None:
    engine, owners = FakeEngine(), tmp_path / "tests"
    _leave(engine, owners, "test-lost", None)
    _leave(engine, owners, "test-alive", os.getpid())

    assert sweep(engine, FLEET, owners) == []
    assert _envs(engine) == {"test-lost", "test-alive"}

    assert sweep(engine, FLEET, owners, orphans=True) == ["test-lost"]
    assert _envs(engine) == {"test-alive"}
