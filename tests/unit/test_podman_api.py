"""The REST API client against a small HTTP server on a Unix socket (no podman needed)."""

from __future__ import annotations

import json
import socketserver
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from corral.engines.podman_api import (
    API_PREFIX,
    ROOT_SOCKET,
    APIUnavailable,
    PodmanAPI,
    default_api,
    socket_path,
)
from corral.errors import EngineError
from tests.unit.serving import serving

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/_ping": (200, b"OK"),
    f"{API_PREFIX}/images/localhost/corral/shop/web:1-abc/json": (200, b'{"Id": "abc"}'),
    f"{API_PREFIX}/images/nothing:1/json": (404, b'{"cause": "image not known"}'),
    f"{API_PREFIX}/containers/broken/json": (500, b'{"cause": "storage"}'),
    f"{API_PREFIX}/containers/garbled/json": (200, b"{not json"),
    f"{API_PREFIX}/networks/corral-shop/exists": (204, b""),
    f"{API_PREFIX}/networks/other/exists": (404, b""),
}


class _Handler(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        path = self.path.split("?")[0]
        if path == f"{API_PREFIX}/containers/json":
            status, body = 200, json.dumps([{"Id": "c1"}, {"Id": "c2"}]).encode()
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
    assert "busy" in busy.value.details["stderr"]  # what the engine's retry looks for
