"""The engine contract (tests/contract_suite.py) on the fake engine.

The same checks run on real Podman in tests/engine/test_engine_contract.py: the fake
must answer as Podman does wherever a unit test leans on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.engines.capabilities import Capability
from corral.engines.fake import FakeEngine
from tests.contract_suite import (
    FLEET,
    AccessContract,
    Harness,
    ImagesContract,
    IntrospectionContract,
    NetworksContract,
    PodsContract,
    RuntimeContract,
    VolumesContract,
    unique_fleet,
)


@pytest.fixture
def contract(tmp_path: Path) -> Harness:
    engine = FakeEngine()
    fleet = unique_fleet()
    base = engine.import_rootfs(tmp_path / "none.tar", f"localhost/corral/{fleet}/base:1", {})
    return Harness(engine, base.id, ("sleep", "600"), fleet, tmp_path, port=18080, made=[])


class TestImages(ImagesContract): ...


class TestRuntime(RuntimeContract): ...


class TestNetworks(NetworksContract): ...


class TestPods(PodsContract): ...


class TestVolumes(VolumesContract): ...


class TestIntrospection(IntrospectionContract): ...


class TestAccess(AccessContract): ...


def test_the_fake_declares_what_it_lacks() -> None:
    # Its events and diff are not faked, nor what backups need (pausing, pipes, a volume's
    # host folder): the contract's "says so" path runs here.
    lacking = frozenset(Capability) - FakeEngine().capabilities
    assert lacking == {
        Capability.EVENTS,
        Capability.DIFF,
        Capability.PAUSE,
        Capability.PIPES,
        Capability.HOST_VOLUMES,
    }


def test_every_harness_object_carries_the_fleet_label(contract: Harness) -> None:
    assert contract.labels(role="web")[FLEET] == contract.fleet
