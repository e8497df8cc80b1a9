"""The edge's host folder: its admin socket is reachable by root and HAProxy's uid only."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.scope import Scope
from corral.edge import container as edge_module
from corral.edge.config import StaticServer
from corral.edge.container import EDGE_GID, EDGE_UID, Edge, adopt_runtime_folder, runtime_folder
from corral.engines.base import ContainerInfo
from corral.engines.fake import FakeEngine
from corral.engines.podman import pod_args, run_args
from corral.errors import EngineError, StateError, UsageError
from tests.unit.builders import role_release

DESIRED = {"web": role_release("web", public=8080, run={"port": 8000})}


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def edge(tmp_path: Path) -> Edge:
    return Edge(
        FakeEngine(), Scope("shop"), "/srv/shop/.corral/state.db", runtime_root=tmp_path / "run"
    )


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_the_socket_folder_is_private_to_haproxys_uid(edge: Edge) -> None:
    edge.prepare_folder(DESIRED)
    root = os.geteuid()
    assert owner_and_mode(edge.runtime_root)[2] == 0o700
    assert owner_and_mode(edge.folder) == (root, os.getegid(), 0o700)
    assert owner_and_mode(edge.folder / "sock") == (EDGE_UID, EDGE_GID, 0o700)
    assert owner_and_mode(edge.folder / "cfg")[1:] == (EDGE_GID, 0o750)
    assert owner_and_mode(edge.folder / "cfg" / "haproxy.cfg")[1:] == (EDGE_GID, 0o640)
    assert list((edge.folder / "sock").iterdir()) == []


def test_haproxy_runs_as_the_owner_of_the_socket_folder(edge: Edge) -> None:
    spec = edge._spec(DESIRED, "img-edge")
    assert spec.user == f"{EDGE_UID}:{EDGE_GID}"
    assert [m.target for m in spec.mounts if not m.read_only] == [edge_module.SOCKET_IN_CONTAINER]


def test_a_folder_left_open_by_an_older_corral_is_closed_and_emptied(edge: Edge) -> None:
    sock = edge.folder / "sock"
    sock.mkdir(parents=True)
    (sock / "admin.sock").write_text("")
    sock.chmod(0o777)
    edge.folder.chmod(0o711)
    edge.runtime_root.chmod(0o755)
    edge.prepare_folder(DESIRED)
    assert owner_and_mode(sock) == (EDGE_UID, EDGE_GID, 0o700)
    assert owner_and_mode(edge.folder)[2] == owner_and_mode(edge.runtime_root)[2] == 0o700
    assert list(sock.iterdir()) == []


def test_an_edge_of_an_older_corral_needs_a_replace(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = edge.config_hash(DESIRED, "img-edge")
    monkeypatch.setattr(edge_module, "EDGE_UID", 108)  # as if run as the image's haproxy
    assert edge.config_hash(DESIRED, "img-edge") != new


def test_a_link_at_the_socket_folder_is_refused(edge: Edge, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    edge.folder.mkdir(parents=True)
    (edge.folder / "sock").symlink_to(elsewhere)
    with pytest.raises(StateError, match="sock is a symbolic link"):
        edge.prepare_folder(DESIRED)
    assert owner_and_mode(elsewhere)[0] == os.geteuid()


def test_a_host_user_with_the_edges_uid_is_refused(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module.pwd, "getpwuid", lambda uid: ("mallory",))
    with pytest.raises(EngineError, match="host user mallory has id 65520"):
        edge.prepare_folder(DESIRED)


def test_without_root_the_edge_says_it_needs_root(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(edge_module.os, "chown", refuse)
    with pytest.raises(EngineError, match="needs corral to run as root"):
        edge.prepare_folder(DESIRED)


def test_the_edge_asks_again_at_once_for_an_address_given_to_a_new_instance(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux's defaults kept a replaced instance's MAC address for a reused address for
    5-10 s, in which HAProxy's checks of the new instance timed out (issue 15). The
    settings are the edge's pod's: its containers share the pod's network namespace."""
    spec = edge._pod_spec(DESIRED)
    neigh = "net.ipv4.neigh.eth0."
    assert spec.sysctls[neigh + "base_reachable_time_ms"] == "1000"
    assert spec.sysctls[neigh + "delay_first_probe_time"] == "0"
    assert (
        int(spec.sysctls[neigh + "ucast_solicit"]) * int(spec.sysctls[neigh + "retrans_time_ms"])
        <= 100
    )  # at most 100 ms of unicast asking before the broadcast
    assert int(spec.sysctls[neigh + "mcast_resolicit"]) > 0
    assert f"--sysctl={neigh}delay_first_probe_time=0" in pod_args(spec)
    new = edge.config_hash(DESIRED, "img-edge")
    monkeypatch.setattr(edge_module, "EDGE_SYSCTLS", {})  # an edge of an older corral
    assert edge.config_hash(DESIRED, "img-edge") != new


def _running_edge(edge: Edge, desired: Desired) -> ContainerInfo:
    """The edge container as ``start`` leaves it, its folder and socket in place."""
    spec = edge._spec(desired, "img-edge")
    edge.prepare_folder(desired, "img-edge")
    (edge.folder / "sock" / "admin.sock").write_text("")
    return ContainerInfo("id", spec.name, "img-edge", spec.labels, "running", {}, "")


def test_a_health_path_change_changes_nothing_in_the_edge(edge: Edge) -> None:
    """Each server's path is set when it is added: no new configuration is needed."""
    current = _running_edge(edge, {"web": _web({"http": "/healthz"})})
    assert edge.observe({"web": _web({"http": "/ready"})}, "img-edge", [current]).action == "none"


def test_a_check_kind_change_is_a_reload_and_a_new_port_a_replace(edge: Edge) -> None:
    current = _running_edge(edge, {"web": _web({"http": "/healthz"})})
    tcp = {"web": _web({"tcp": True})}
    assert edge.observe(tcp, "img-edge", [current]).action == "reload"
    moved = {"web": role_release("web", public=8090, run={"port": 8000})}
    assert edge.observe(moved, "img-edge", [current]).action == "replace-needed"
    assert edge.observe(tcp, "img-newer", [current]).action == "replace-needed"


def test_a_new_edge_address_needs_a_new_container(edge: Edge) -> None:
    """Podman publishes the ports on the address: a reload would keep the old one bound."""
    desired = {"web": _web({"http": "/healthz"})}
    current = _running_edge(edge, desired)
    elsewhere = dataclasses.replace(edge, address="192.0.2.1")
    assert elsewhere.observe(desired, "img-edge", [current]).action == "replace-needed"


def test_a_reloaded_configuration_is_what_observe_compares(edge: Edge) -> None:
    """Labels cannot change: the hash of the configuration running now is on the host."""
    tcp = {"web": _web({"tcp": True})}
    current = _running_edge(edge, {"web": _web({"http": "/healthz"})})
    (edge.folder / "cfg" / edge_module.HASH_FILE).write_text(edge.config_hash(tcp, "img-edge"))
    assert edge.observe(tcp, "img-edge", [current]).action == "none"


def _web(health: dict[str, object]) -> RoleRelease:
    return role_release("web", public=8080, run={"port": 8000}, health=health)


def test_an_earlier_corrals_edge_folder_becomes_the_fleets_and_keeps_its_contents(
    tmp_path: Path,
) -> None:
    old = runtime_folder(tmp_path, "/srv/site/.corral/state.db", "demo")
    (old / "sock").mkdir(parents=True)
    (old / "sock" / "admin.sock").write_text("")
    assert adopt_runtime_folder("demo", "/srv/site/.corral/state.db", "fleet", root=tmp_path)
    new = runtime_folder(tmp_path, "fleet", "demo")
    assert (new / "sock" / "admin.sock").exists() and not old.exists()
    # Once is all: nothing to move now, and an existing folder is never replaced.
    assert not adopt_runtime_folder("demo", "/srv/site/.corral/state.db", "fleet", root=tmp_path)


def test_the_engine_restarts_a_crashed_edge(edge: Edge) -> None:
    spec = edge._spec(DESIRED, "img-edge")
    assert spec.restart == "always"
    assert "--restart=always" in run_args(spec)
    plain = run_args(dataclasses.replace(spec, restart=None))
    assert not [a for a in plain if a.startswith("--restart")]


def _exited(edge: Edge, image: str, **labels: str) -> ContainerInfo:
    spec = edge._spec(DESIRED, "img-edge")
    return ContainerInfo(
        "id1", spec.name, image, {**spec.labels, **labels}, "exited", {}, "", exit_code=137
    )


def test_a_killed_edge_is_resumed_in_its_pod_not_replaced(edge: Edge) -> None:
    killed = _exited(edge, "img-edge")
    assert edge.observe(DESIRED, "img-edge", [killed]).action == "resume"
    # Another image or pod shape: a new pod, as before.
    assert edge.observe(DESIRED, "img-other", [killed]).action == "start"
    reshaped = _exited(edge, "img-edge", **{"io.corral.pod-hash": "other"})
    assert edge.observe(DESIRED, "img-edge", [reshaped]).action == "start"


def test_removing_the_edge_closes_corrals_connection_first(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A soft-stopping HAProxy waits for every open CLI connection: removed with corral's
    still open, each edge (every test environment's) cost the engine's 10 s stop timeout."""
    happened: list[str] = []

    class Connection:
        def close(self) -> None:
            happened.append("close")

    running = ContainerInfo("id", "shop-edge", "img-edge", {}, "running", {}, "")
    monkeypatch.setattr(edge, "_api", Connection())
    monkeypatch.setattr(edge.engine, "list_containers", lambda labels: [running])
    monkeypatch.setattr(edge.engine, "remove", lambda name: happened.append(f"remove {name}"))
    edge.remove()
    assert happened == ["close", "remove shop-edge"]


def test_a_new_pod_starts_with_the_old_edges_servers(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new pod (new ports) started empty and answered 503 until each server was added
    again: a new-user trial saw one per pod swap. It starts with the old edge's servers,
    their check paths and states, as a reload does."""
    server = StaticServer("web", "shop-web-r1-1", "10.0.0.2", 8000)
    monkeypatch.setattr(edge, "_check_paths", lambda: {"shop-web-r1-1": "/healthz"})
    monkeypatch.setattr(edge, "_carried_servers", lambda desired, paths: ([server], []))
    running = ContainerInfo("id", "shop-edge", "img-edge", {}, "running", {}, "")
    monkeypatch.setattr(edge, "container", lambda listing=None: running)

    class Api:
        def command(self, line: str) -> str:
            assert line == "show servers state"
            return "1\n# be_id be_name srv_id srv_name\n3 web 1 shop-web-r1-1"

    monkeypatch.setattr(edge, "_api", Api())
    edge.prepare_folder(DESIRED)  # the socket the running edge answers on
    (edge.folder / "sock" / edge_module.SOCKET_NAME).write_text("")
    carried = edge._carry(DESIRED)
    assert carried is not None
    edge.prepare_folder(DESIRED, "img-edge", carried)
    cfg = edge.folder / "cfg"
    assert "server shop-web-r1-1 10.0.0.2:8000" in (cfg / "haproxy.cfg").read_text()
    assert b"3 web 1 shop-web-r1-1" in (cfg / edge_module.STATE_FILE).read_bytes()
    assert (cfg / edge_module.CHECK_MAP).read_bytes() == b"shop-web-r1-1 /healthz\n"


def test_a_new_port_another_program_holds_is_refused_before_anything_changes(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        moved = {"web": role_release("web", public=taken, run={"port": 8000})}
        ours = ContainerInfo(
            "id", "shop-edge", "img-edge", {"io.corral.ports": str(taken)}, "running", {}, ""
        )
        monkeypatch.setattr(edge, "container", lambda listing=None: ours)
        edge.check_ports(moved)  # its own port: held by its pod, not taken
        theirs = dataclasses.replace(ours, labels={"io.corral.ports": "8080"})
        monkeypatch.setattr(edge, "container", lambda listing=None: theirs)
        with pytest.raises(UsageError, match=rf"port {taken} on 127.0.0.1 is in use"):
            edge.check_ports(moved)
