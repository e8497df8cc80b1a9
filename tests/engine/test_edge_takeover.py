"""A new edge image replaces the edge container with no refused connection (issue 10, 3).

The edge's pod holds the published port; the new HAProxy takes the old one's listening
sockets through the shared admin socket before the old one soft-stops. A raw TCP connect
loop counts refusals beside the usual load, whose POSTs the edge never replays.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace, TracebackType

import pytest

from corral import app
from corral.deploy import service
from corral.edge import container as edge_module
from corral.edge.runtime import worker_view
from tests.engine.helpers import Fleet, podman_json
from tests.engine.test_deploy import web_instances


class Refusals:
    """A loop of plain TCP connects to a port, counting the refused ones."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connects = 0
        self.refused = 0
        self.other: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Refusals:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(2)
                try:
                    sock.connect(("127.0.0.1", self.port))
                    self.connects += 1
                    time.sleep(0.002)  # a refusal window of a second is still seen
                except ConnectionRefusedError:
                    self.refused += 1
                    time.sleep(0.001)
                except OSError as exc:
                    self.other.append(type(exc).__name__)


def _edge_info(fleet: Fleet) -> dict[str, object]:
    [info] = podman_json("container", "inspect", f"{fleet.name}-edge")
    return dict(info)


def _another_edge_image(image: str, tmp_path: Path) -> str:
    """The same HAProxy in an image of another id: a change of the edge's frame."""
    (tmp_path / "Containerfile").write_text(f"FROM {image}\nLABEL io.corral.test=takeover\n")
    out = subprocess.run(
        ["podman", "build", "--quiet", "-f", str(tmp_path / "Containerfile"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _use_edge_image(monkeypatch: pytest.MonkeyPatch, image: str) -> None:
    """``corral edge replace`` (in this process) finds ``image`` as the edge's image."""
    baked = SimpleNamespace(image_id=image, status="found")
    monkeypatch.setattr(service, "bake_edge", lambda *args, **kwargs: baked)


def _take_over(fleet: Fleet, image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the edge by one of ``image`` under load: nothing refused, nothing failed."""
    before = _edge_info(fleet)
    old_node, _ = worker_view(fleet.edge_api(), [])
    _use_edge_image(monkeypatch, image)
    with fleet.load() as load, Refusals(fleet.port) as refusals:
        time.sleep(0.5)
        done = app.replace_edge(fleet.spec)
        time.sleep(0.5)
    assert done.handed_over and not done.reloaded
    print(f"\ntake-over: {refusals.refused} refused of {refusals.connects + refusals.refused}")
    assert refusals.refused == 0 and refusals.connects > 0 and refusals.other == []
    # Not assert_no_failures: the new HAProxy counts from zero, so the frontend's requests
    # cannot add up to the clients' across the take-over.
    assert load.failures == 0 and load.outcomes["POST 200"] > 0, load.outcomes
    assert load.edge_problems() == [], load.edge_problems()
    assert load.counters is not None and load.counters.readings > 0
    # The last reading is the new HAProxy's: the load's connection reaches it now.
    assert load.edge is not None
    node, _ = worker_view(load.edge, [])
    assert node.startswith(f"{fleet.name}-edge") and node != old_node, (node, old_node)
    after = _edge_info(fleet)
    assert after["Name"] == f"{fleet.name}-edge"  # the new container has the edge's name
    assert after["Image"] == image and after["Id"] != before["Id"]
    assert after["Pod"] == before["Pod"]  # the same pod kept the port open
    assert {i["health"] for i in web_instances(fleet.status())} == {"up"}


def test_a_new_edge_image_takes_over_the_port_with_no_refused_connection(
    fleet: Fleet, shared_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet.deploy()
    old_image = str(_edge_info(fleet)["Image"])
    new_image = _another_edge_image(old_image, tmp_path)
    _take_over(fleet, new_image, monkeypatch)
    # A second take-over in the same pod: the new HAProxy must be told apart from the one
    # it replaces, although both started in a container that had the same name.
    _take_over(fleet, old_image, monkeypatch)

    # Before pods, a new container meant closing the port: measured with the new pod path.
    pod = _edge_info(fleet)["Pod"]
    monkeypatch.setattr(edge_module.Edge, "can_hand_over", lambda self, desired: False)
    _use_edge_image(monkeypatch, new_image)
    with Refusals(fleet.port) as refusals:
        time.sleep(0.5)
        done = app.replace_edge(fleet.spec)
        time.sleep(0.5)
    assert not done.handed_over and not done.reloaded
    print(f"new pod: {refusals.refused} refused of {refusals.connects + refusals.refused}")
    assert _edge_info(fleet)["Pod"] != pod
    assert {i["health"] for i in web_instances(fleet.status())} == {"up"}
