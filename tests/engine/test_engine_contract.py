"""The engine contract (tests/contract_suite.py) on real Podman, and what only a real
engine can show: that the probe address, the test backend and the control socket work."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from corral.engines.podman import PodmanEngine
from corral.engines.values import Mount
from tests.contract_suite import (
    AccessContract,
    Harness,
    ImagesContract,
    IntrospectionContract,
    NetworksContract,
    PodsContract,
    RuntimeContract,
    VolumesContract,
)
from tests.engine.helpers import free_port, until


@pytest.fixture
def contract(engine: PodmanEngine, shared_base: str, cleanup_fleet: str, tmp_path: Path) -> Harness:
    # cleanup_fleet removes everything labelled with the fleet (and its tags) afterwards.
    return Harness(engine, shared_base, ("sleep", "600"), cleanup_fleet, tmp_path, free_port())


class TestImages(ImagesContract): ...


class TestRuntime(RuntimeContract): ...


class TestNetworks(NetworksContract): ...


class TestPods(PodsContract): ...


class TestVolumes(VolumesContract): ...


class TestIntrospection(IntrospectionContract): ...


class TestAccess(AccessContract): ...


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def test_corral_reaches_an_instance_at_its_probe_address(contract: Harness) -> None:
    net = contract.name("net")
    contract.engine.ensure_network(net, contract.labels())
    serve = ("python3", "-m", "http.server", "8000", "--bind", "0.0.0.0")
    info = contract.start("web-1", network=net, command=serve)
    address = contract.engine.probe_address(info, net)
    assert address is not None
    until(lambda: _answers(address, 8000), 20)


def test_testinfra_runs_commands_through_the_test_backend(contract: Harness) -> None:
    import testinfra  # type: ignore[import-untyped]

    info = contract.start("web-1")
    host = testinfra.get_host(contract.engine.test_backend(info.name))
    result = host.run("echo from-testinfra")
    assert (result.rc, result.stdout) == (0, "from-testinfra\n")


def test_corral_connects_to_a_control_socket(contract: Harness) -> None:
    folder = contract.folder / "sock"
    folder.mkdir()
    mount = Mount(str(folder), "/var/lib/ctl")
    server = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.bind('/var/lib/ctl/ctl.sock')\n"
        "s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(b'hello from the container')\n"
        "    c.close()\n"
    )
    contract.start("ctl", command=("python3", "-c", server), mounts=(mount,))
    path = contract.engine.control_socket(mount, "ctl.sock")
    until(lambda: Path(path).exists(), 20)
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(path)
        assert client.recv(100) == b"hello from the container"
