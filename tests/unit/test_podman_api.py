"""The REST API client against a small HTTP server on a Unix socket (no podman needed)."""

from __future__ import annotations

import json
import os
import socketserver
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from corral.engines.podman import PodmanEngine, _container_info
from corral.engines.podman_api import (
    API_PREFIX,
    COMPAT_PREFIX,
    ROOT_SOCKET,
    APIUnavailable,
    LookupRace,
    PodmanAPI,
    default_api,
    socket_path,
)
from corral.errors import EngineError
from tests.unit.serving import serving

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/_ping": (200, b"OK"),
    f"{API_PREFIX}/images/localhost/corral/shop/web:1-abc/json": (200, b'{"Id": "abc"}'),
    f"{API_PREFIX}/images/nothing:1/json": (
        404,
        b'{"cause": "image not known", "message": "failed to find image nothing:1: '
        b'nothing:1: image not known"}',
    ),
    # podman 4.3 while another podman removes images: it names an image not asked for.
    f"{API_PREFIX}/images/raced:1/json": (
        404,
        b'{"cause": "image not known", "message": "failed to find image raced:1: '
        b'0f1e2d3c4b5a: image not known"}',
    ),
    f"{API_PREFIX}/containers/broken/json": (500, b'{"cause": "storage"}'),
    f"{API_PREFIX}/containers/garbled/json": (200, b"{not json"),
    f"{API_PREFIX}/networks/corral-shop/exists": (204, b""),
    f"{API_PREFIX}/networks/other/exists": (404, b""),
}


# Every container of ``_fleet`` mounts the fleet's volume: the Docker-compatible listing
# and an inspection name it; libpod's listing only says where it is mounted.
_DATA_MOUNT = {"Type": "volume", "Name": "shop-data", "Destination": "/var/lib/shop"}


class _Handler(BaseHTTPRequestHandler):
    seen: list[str] = []
    listed: list[dict[str, Any]] = []  # libpod's listing; empty: the two-container default
    compat: list[dict[str, Any]] = []  # the Docker-compatible listing

    @classmethod
    def inspected(cls, cid: str) -> dict[str, Any]:
        """What ``podman inspect`` says of a listed container (the fleet of ``_fleet``)."""
        listed = next(c for c in cls.listed if c["Id"] == cid)
        return {
            "Id": cid,
            "Name": listed["Names"][0],
            "Image": listed["ImageID"],
            "Created": listed["Created"],
            "Config": {"Labels": listed["Labels"]},
            "State": {
                "Status": listed["State"],
                "ExitCode": listed["ExitCode"],
                "Pid": listed.get("Pid", 0),
                "FinishedAt": "2026-01-01T10:00:00.5Z" if listed["ExitedAt"] > 0 else "",
            },
            "NetworkSettings": {"Networks": {"corral-shop": {"IPAddress": f"10.0.0.{cid[1:]}"}}},
            "Mounts": [_DATA_MOUNT],
        }

    def do_GET(self) -> None:
        self.seen.append(self.path)
        path = self.path.split("?")[0]
        if path == f"{API_PREFIX}/containers/json":
            status, body = 200, json.dumps(self.listed or [{"Id": "c1"}, {"Id": "c2"}]).encode()
        elif path == f"{COMPAT_PREFIX}/containers/json":
            status, body = 200, json.dumps(self.compat).encode()
        elif path.startswith(f"{API_PREFIX}/containers/") and path.removesuffix("/json") in (
            f"{API_PREFIX}/containers/{c['Id']}" for c in self.listed
        ):
            status, body = 200, json.dumps(self.inspected(path.split("/")[-2])).encode()
        else:
            status, body = ANSWERS.get(path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self) -> None:
        self.seen.append(f"DELETE {self.path}")
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        status, body = {
            "gone": (404, b'{"cause": "no such container"}'),
            "removed": (200, b'[{"Id": "c1"}]'),
            "refused": (200, b'[{"Id": "c1", "Err": "container is paused"}]'),
            "busy": (500, b'{"message": "removing storage: device or resource busy"}'),
        }[name]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("api") / "podman.sock")
    with serving(_Server(path, _Handler)):
        yield path


def test_the_socket_is_podmans_container_host_or_the_users_default() -> None:
    assert socket_path({"CONTAINER_HOST": "unix:///tmp/p.sock"}, uid=1000) == "/tmp/p.sock"
    assert socket_path({"CONTAINER_HOST": "ssh://host/run/podman.sock"}, uid=0) == ROOT_SOCKET
    assert socket_path({}, uid=0) == ROOT_SOCKET
    rootless = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert socket_path(rootless, uid=1000) == "/run/user/1000/podman/podman.sock"
    assert socket_path(rootless, uid=0) == ROOT_SOCKET


def test_the_cli_alone_when_its_configuration_is_moved(service: str) -> None:
    assert default_api({"CONTAINER_HOST": f"unix://{service}"}) is not None
    moved = {"CONTAINERS_STORAGE_CONF": "/etc/other-storage.conf"}
    assert default_api({**moved, "CONTAINER_HOST": f"unix://{service}"}) is not None
    assert default_api(moved) is None  # which service would see that storage?


def test_connect_needs_an_answer(service: str, tmp_path: Path) -> None:
    assert PodmanAPI.connect(service) is not None
    assert PodmanAPI.connect(str(tmp_path / "none.sock")) is None
    (tmp_path / "stale.sock").touch()  # a file left by a service that is gone
    assert PodmanAPI.connect(str(tmp_path / "stale.sock")) is None


def test_reads(service: str) -> None:
    api = PodmanAPI(service)
    assert api.inspect_image("localhost/corral/shop/web:1-abc") == {"Id": "abc"}
    assert api.inspect_image("nothing:1") is None
    with pytest.raises(LookupRace, match="0f1e2d3c4b5a"):
        api.inspect_image("raced:1")
    assert api.network_exists("corral-shop")
    assert not api.network_exists("other")
    assert api.container_ids({"io.corral.fleet": "shop", "io.corral.env": "live"}) == ["c1", "c2"]
    query = _Handler.seen[-1]
    # One label on the engine's side (the engine re-checks every label itself).
    assert "io.corral.fleet%3Dshop" in query and "io.corral.env" not in query


@pytest.mark.parametrize("name", ["broken", "garbled"])
def test_a_bad_answer_means_read_through_the_cli(service: str, name: str) -> None:
    with pytest.raises(APIUnavailable):
        PodmanAPI(service).inspect_container(name)


def test_removing_a_container(service: str) -> None:
    api = PodmanAPI(service)
    api.remove_container("removed")
    assert _Handler.seen[-1].endswith("/containers/removed?force=true&ignore=true")
    api.remove_container("gone")  # absent is fine, as with --ignore
    with pytest.raises(EngineError, match="container is paused"):
        api.remove_container("refused")
    with pytest.raises(EngineError) as busy:
        api.remove_container("busy")
    assert "busy" in busy.value.stderr  # what the engine's retry looks for


def _fleet(size: int, stopped: int) -> None:
    """``size`` containers in both listings, the last ``stopped`` of them exited."""
    _Handler.listed = [
        {
            "Id": f"c{n}",
            "Names": [f"shop-web-r1-{n}"],
            "ImageID": "abc",
            "Labels": {"io.corral.fleet": "shop"},
            "Created": "2026-01-01T09:00:00.123456789Z",
            "State": "exited" if n > size - stopped else "running",
            "ExitCode": 3 if n > size - stopped else 0,
            "ExitedAt": 1767261600 if n > size - stopped else -62135596800,
            "Pid": 0 if n > size - stopped else os.getpid(),
            "Mounts": ["/tmp", "/run", "/var/lib/shop"],  # libpod's: mount points only
        }
        for n in range(1, size + 1)
    ]
    _Handler.compat = [
        {
            "Id": f"c{n}",
            "NetworkSettings": {"Networks": {"corral-shop": {"IPAddress": f"10.0.0.{n}"}}},
            "Mounts": [_DATA_MOUNT],
        }
        for n in range(1, size + 1)
    ]


@pytest.mark.parametrize("size", [3, 100])
def test_a_listing_costs_the_same_requests_whatever_the_fleets_size(
    service: str, size: int
) -> None:
    """Two listings, plus one inspection per stopped container (which a listing cannot
    describe); never one request per running container, as it once was."""
    engine = PodmanEngine(api=PodmanAPI(service))
    _fleet(size, stopped=1)
    try:
        before = len(_Handler.seen)
        found = engine.list_containers({"io.corral.fleet": "shop"})
        requests = _Handler.seen[before:]
    finally:
        _Handler.listed, _Handler.compat = [], []
    assert len(found) == size
    assert len(requests) == 3, requests  # libpod's listing, the compatible one, one inspect
    assert requests[-1].startswith(f"{API_PREFIX}/containers/c{size}/json")


def test_a_listed_container_reads_as_its_inspection(service: str) -> None:
    engine = PodmanEngine(api=PodmanAPI(service))
    _fleet(3, stopped=1)
    try:
        found = engine.list_containers({"io.corral.fleet": "shop"})
        expected = [_container_info(_Handler.inspected(f"c{n}")) for n in (1, 2, 3)]
    finally:
        _Handler.listed, _Handler.compat = [], []
    assert found == expected
    assert found[0].addresses == {"corral-shop": "10.0.0.1"} and found[0].finished == ""
    assert found[0].volumes == ("shop-data",)  # from the compatible listing, not inspected
    assert found[2].state == "exited" and found[2].exit_code == 3  # from its inspection


def test_a_running_container_whose_process_is_gone_reads_as_exited(service: str) -> None:
    """Podman hears of an exit from the container's conmon: with both killed (the OOM
    killer, a host restored from a snapshot) it calls the container running for ever."""
    engine = PodmanEngine(api=PodmanAPI(service))
    _fleet(2, stopped=0)
    # No process ever has pid_max as its number.
    _Handler.listed[1]["Pid"] = int(Path("/proc/sys/kernel/pid_max").read_text())
    try:
        found = engine.list_containers({"io.corral.fleet": "shop"})
        inspected = _container_info(_Handler.inspected("c2"))
    finally:
        _Handler.listed, _Handler.compat = [], []
    assert [(c.state, c.exit_code) for c in found] == [("running", 0), ("exited", None)]
    assert found[1] == inspected and inspected.holds_mounts is False


def test_a_remote_podmans_process_ids_are_never_looked_up_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through ``CONTAINER_HOST`` (ssh, or a Unix socket given to a container) the pid
    is another machine's: its absence here says nothing. Nor is the local socket read."""
    gone = int(Path("/proc/sys/kernel/pid_max").read_text())
    data = {"Id": "c1", "State": {"Status": "running", "Pid": gone}}
    assert _container_info(data).state == "exited"
    monkeypatch.setenv("CONTAINER_HOST", "ssh://deploy@fleet-host/run/podman/podman.sock")
    assert _container_info(data).state == "running"
    assert default_api() is None
    monkeypatch.setenv("CONTAINER_HOST", "unix:///run/host-podman.sock")
    assert _container_info(data).state == "running"
