"""The edge: one HAProxy container per fleet, baked by corral like any role.

Public roles are HAProxy frontends; their instances are servers added and drained at run
time through the admin socket, so deploys never restart the edge. HAProxy runs as a master
and a worker: a new configuration is loaded in place (``reload``), the master handing the
listening sockets to a new worker while the old one finishes its requests, so changing the
configuration refuses no connection. Only a new image or new published ports need a new
container (``corral edge replace``).

The edge's network namespace is a pod's (``<prefix>-edge-pod``): the pod holds the fleet
network, the published ports and the sysctls, and outlives the HAProxy container in it. A
new image or uid is a new container in the same pod that takes the old one's listening
sockets (``-x`` on the shared admin socket, which ``expose-fd listeners`` offers) while
the old one still serves; once the new one answers, the old one soft-stops (SIGUSR1: it
finishes its requests) and is removed: no connection is refused. Only a change of what the
pod holds (ports, their address, sysctls), or an edge from before pods, needs a new pod, and
then the port refuses connections for about a second. The configuration and the
socket live on the host in a short path under /run/corral (a Unix socket path must stay
under 108 bytes) and are mounted into the edge container.

Whoever reaches the admin socket commands the edge, so its folder is private: HAProxy runs
as a fixed uid (``EDGE_UID``, which no host user may have) and the socket folder is 0700
and belongs to that uid; /run/corral and the edge's own folder are root's, 0700 (a bind
mount is reached inside the container without walking its host parents), and the
configuration is readable by the edge's group only. This needs corral to run as root:
with rootless Podman a container's uids are the user's subordinate uids, which the user
cannot give a folder to, and the edge refuses to start, saying so.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import ipaddress
import os
import pwd
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.health import network_check, probe_once
from corral.deploy.observe import pick
from corral.deploy.plan import EdgePlan
from corral.deploy.scope import LABEL, Scope
from corral.deploy.steps import EdgeServer
from corral.edge.config import (
    EMPTY_STATE,
    NODE_ENV,
    Frontend,
    StaticServer,
    render_haproxy_cfg,
)
from corral.edge.runtime import (
    AdminState,
    RuntimeAPI,
    ServerState,
    reload_master,
    worker_pid,
    worker_view,
)
from corral.engines.base import (
    ContainerInfo,
    ContainerSpec,
    Engine,
    Mount,
    PodSpec,
    PortMapping,
)
from corral.engines.capabilities import Capability, require
from corral.errors import (
    CorralError,
    EngineError,
    GateError,
    NotFoundError,
    StateError,
    UsageError,
)
from corral.hostfiles import private_dir, read_private, write_private
from corral.spec.model import DebianBase, HttpHealth, Resources, Role, RunConfig, TcpHealth

KIND_EDGE = "edge"
VERIFY_TRIES, VERIFY_PAUSE = 3, 0.2  # an instance's check before an edge is replaced
EDGE_ROLE = "corral-edge"
RUNTIME_ROOT = Path("/run/corral")


def runtime_folder(root: Path, key: str, prefix: str) -> Path:
    """The edge's folder for ``key`` (see ``Edge.runtime_key``) and a fleet's prefix: a
    short path, since a Unix socket's path may not be longer than 107 bytes."""
    return root / hashlib.sha256(f"{key}|{prefix}".encode()).hexdigest()[:12]


def adopt_runtime_folder(
    prefix: str, old_key: str, new_key: str, root: Path = RUNTIME_ROOT
) -> bool:
    """Move the edge folder an earlier corral made under ``old_key`` (the state's path,
    before the folder became the fleet's) to ``new_key``'s, unless that one exists.

    A running edge keeps working: its bind mounts hold the folder, not its path, and
    corral finds its sockets at the new path from then on. Returns whether one moved.
    """
    old, new = runtime_folder(root, old_key, prefix), runtime_folder(root, new_key, prefix)
    if old == new or not old.is_dir() or new.exists():
        return False
    os.rename(old, new)
    return True


CONFIG_IN_CONTAINER = "/etc/corral-edge"
SOCKET_IN_CONTAINER = "/var/lib/corral-edge"
SOCKET_NAME = "admin.sock"
MASTER_SOCKET_NAME = "master.sock"
CHECK_MAP = "checks.map"  # every server's HTTP check path, by server name
STATE_FILE = "servers.state"  # the servers' states, dumped just before a reload
HASH_FILE = "config-hash"  # the hash of the configuration the edge runs now
MODE = "master-worker"  # part of the frame: an edge started otherwise cannot reload
POD_HASH = LABEL + "pod-hash"  # on the edge container: what its pod holds
PORTS = LABEL + "ports"  # on the edge container: the ports its pod publishes, comma-separated
NEXT = "-next"  # the name a new edge container has while it takes over from the old one
SOFT_STOP = "SIGUSR1"  # HAProxy's graceful stop: it closes its listeners, finishes requests
# How long an old edge container may take to finish its requests after the new one took
# its sockets (the server timeout is 30 s), before it is killed.
SOFT_STOP_TIMEOUT = 35
PRIVILEGED_PORTS = 1024  # ports below it need CAP_NET_BIND_SERVICE to bind
# HAProxy's uid and gid, the same in every edge: in the range 65520-65533 that neither
# Debian (65000-65533 reserved) nor systemd (dynamic users end at 65519) hands out. Not the
# image's "haproxy" user: adduser gives that one whatever system uid is free at bake time.
EDGE_UID = EDGE_GID = 65520
CONFIG_DIR_MODE, CONFIG_FILE_MODE = 0o750, 0o640  # root's; HAProxy may read, not change
# The edge's neighbour (ARP) table, on its one network interface (eth0, as Podman and
# Docker name a container's first). A replaced instance's address goes back to the
# network's pool, and once a deploy has used the pool round (a /24 holds 253, which a role
# of 100 replicas replaced twice uses up) a new instance gets an address the edge still
# maps to the old container's MAC address. Linux trusts such an entry for 15-45 s
# after its last use and then waits 5 s more before asking again, and HAProxy's checks of
# the new instance time out meanwhile (L4TOUT): that was 5-10 s per instance at 100
# replicas. With these, an entry nothing confirmed for about a second is asked for again
# at once, by broadcast after one unanswered 100 ms unicast try, so a reused address costs
# at most one check's connect timeout. Live servers are confirmed by their traffic and
# checks, so this costs no extra ARP.
EDGE_SYSCTLS = {
    "net.ipv4.neigh.eth0.base_reachable_time_ms": "1000",
    "net.ipv4.neigh.eth0.delay_first_probe_time": "0",
    "net.ipv4.neigh.eth0.ucast_solicit": "1",
    "net.ipv4.neigh.eth0.retrans_time_ms": "100",
    "net.ipv4.neigh.eth0.mcast_resolicit": "3",
}


def edge_role() -> Role:
    """The edge as a role: Debian's HAProxy, run as its unprivileged user."""
    return Role(
        base=DebianBase(debian="bookworm", packages=("haproxy",)),
        run=RunConfig(
            command=(
                "haproxy",
                "-W",
                "-db",
                "-S",
                f"{SOCKET_IN_CONTAINER}/{MASTER_SOCKET_NAME},mode,600",
                "-f",
                f"{CONFIG_IN_CONTAINER}/haproxy.cfg",
            ),
            user="haproxy",
        ),
        resources=Resources(memory="256m", cpus=1.0, pids=512),
    )


def _check_uid_is_free() -> None:
    """A host user or group with the edge's uid or gid could reach its admin socket."""
    for kind, lookup, number in (
        ("user", pwd.getpwuid, EDGE_UID),
        ("group", grp.getgrgid, EDGE_GID),
    ):
        try:
            name = lookup(number)[0]
        except KeyError:
            continue
        raise EngineError(
            f"the host {kind} {name} has id {number}, the id corral's edge runs as: it could "
            "command the edge through its admin socket; give that account another id"
        )


def check_path(rr: RoleRelease) -> str | None:
    """The path HAProxy's check asks an instance of ``rr`` for; None: a TCP check."""
    return rr.health.http if isinstance(rr.health, HttpHealth) else None


def check_from_outside(targets: Sequence[tuple[RoleRelease, str, str]]) -> None:
    """Every (role, instance, address) passes, from outside, the check a new edge will
    make of it: a role checked by a command is checked over TCP, as the edge does.

    Raises:
        GateError: one does not; nothing was changed.
    """
    problems = []
    for rr, name, address in targets:
        assert rr.run.port is not None
        health = network_check(rr.health) if rr.health else TcpHealth(tcp=True)
        problem = None
        for _ in range(VERIFY_TRIES):
            problem = probe_once(address, rr.run.port, health)
            if problem is None:
                break
            time.sleep(VERIFY_PAUSE)
        if problem is not None:
            problems.append(f"{name}: {problem}")
    if problems:
        raise GateError(
            "not replacing the edge, the old one keeps serving: the new edge would see "
            + "; ".join(problems),
            failures=problems,
        )


@dataclass(frozen=True)
class _Carried:
    """A running edge's servers as a new configuration declares them, its check map and
    its ``show servers state``, as files for the next HAProxy."""

    servers: tuple[StaticServer, ...]
    check_map: bytes
    state: bytes


def _free(address: str, port: int) -> bool:
    """Whether a program could listen on ``address:port`` now (a bound port is taken)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def frontends(desired: Desired) -> list[Frontend]:
    return [
        Frontend(
            name=f"fe_{rr.role}",
            bind_port=rr.public,
            backend=rr.role,
            http_check=isinstance(rr.health, HttpHealth),
        )
        for rr in sorted(desired.values(), key=lambda r: r.role)
        if rr.public is not None
    ]


@dataclass
class Edge:
    """The edge of one scope: its container, its configuration and its admin socket."""

    engine: Engine
    scope: Scope
    runtime_key: str  # tells apart a fleet's edge from its test environments' edges
    address: str = "127.0.0.1"
    publish: bool = True  # test environments publish nothing on the host
    runtime_root: Path = RUNTIME_ROOT
    _api: RuntimeAPI | None = field(default=None, init=False, repr=False, compare=False)
    _api_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def url(self, port: int) -> str:
        """Where a public role is reached: the host port, or the edge's own address."""
        if self.publish:
            return f"http://{self.address}:{port}/"
        current = self.container()
        address = self.engine.probe_address(current, self.scope.network) if current else None
        if current is not None and not address:  # a listing may leave out a pod's network
            found = self.engine.inspect(current.name)
            address = self.engine.probe_address(found, self.scope.network) if found else None
        return f"http://{address}:{port}/"

    @property
    def folder(self) -> Path:
        return runtime_folder(self.runtime_root, self.runtime_key, self.scope.prefix)

    def _socket_mount(self) -> Mount:
        """The folder HAProxy makes its sockets in, mounted into the edge container."""
        return Mount(str(self.folder / "sock"), SOCKET_IN_CONTAINER)

    def socket(self, name: str) -> str:
        """Where corral connects to the edge's socket ``name``: the engine says (a host
        path beside the configuration, for an engine on corral's own host)."""
        return self.engine.control_socket(self._socket_mount(), name)

    @property
    def api(self) -> RuntimeAPI:
        """The edge's runtime API: one connection for this object's whole life (a deploy)."""
        with self._api_lock:
            if self._api is None:
                self._api = RuntimeAPI(
                    self.socket(SOCKET_NAME),
                    check_map=f"{CONFIG_IN_CONTAINER}/{CHECK_MAP}",
                )
            return self._api

    def render(self, desired: Desired, servers: Sequence[StaticServer] = ()) -> str:
        return render_haproxy_cfg(
            frontends(desired),
            f"{SOCKET_IN_CONTAINER}/{SOCKET_NAME}",
            check_map=f"{CONFIG_IN_CONTAINER}/{CHECK_MAP}",
            state_file=f"{CONFIG_IN_CONTAINER}/{STATE_FILE}",
            servers=servers,
        )

    def frame_hash(self, desired: Desired, image_id: str) -> str:
        """What only a new container changes: image, published ports and address, uid,
        HAProxy's mode, sysctls.

        The uid is part of it: an edge started by an older corral (as the image's haproxy
        user, its socket folder open to all) shows as needing a replace; so is the mode:
        an edge started without a master cannot reload.
        """
        ports = ",".join(str(fe.bind_port) for fe in frontends(desired))
        # Its kernel settings too: an edge without them is slow to reach reused addresses.
        sysctls = ",".join(f"{k}={v}" for k, v in sorted(EDGE_SYSCTLS.items()))
        # The host address its ports are published on: only a new container binds another.
        host = self.address if self.publish else ""
        material = f"{image_id}|ports={ports}@{host}|uid={EDGE_UID}:{EDGE_GID}|{MODE}|{sysctls}"
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def pod_hash(self, desired: Desired) -> str:
        """What only a new pod changes: the published ports and their address, the
        network and its kernel settings. The rest of the frame a new container changes,
        taking over the pod's open sockets."""
        ports = ",".join(str(fe.bind_port) for fe in frontends(desired))
        sysctls = ",".join(f"{k}={v}" for k, v in sorted(EDGE_SYSCTLS.items()))
        host = self.address if self.publish else ""
        material = f"pod|ports={ports}@{host}|net={self.scope.network}|{sysctls}"
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    @property
    def pod_name(self) -> str:
        return f"{self.scope.edge_name}-pod"

    def config_hash(self, desired: Desired, image_id: str) -> str:
        """The frame and the configuration: when only the latter differs, a reload does."""
        material = f"{self.render(desired)}{self.frame_hash(desired, image_id)}"
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def _running_hash(self, current: ContainerInfo) -> str | None:
        """The configuration's hash as of the last start or reload (labels cannot change)."""
        try:
            return read_private(self.folder / "cfg" / HASH_FILE).decode().strip()
        except (OSError, StateError):
            return current.labels.get(LABEL + "config-hash")

    def container(self, listing: Iterable[ContainerInfo] | None = None) -> ContainerInfo | None:
        """The edge container; ``listing``: the scope's containers listed already.

        While one container takes over from another (or after a take-over was cut short)
        there are two: the running one of the edge's own name comes first."""
        labels = self.scope.labels(KIND_EDGE)
        found = self.engine.list_containers(labels) if listing is None else pick(listing, labels)
        found = sorted(found, key=lambda c: (c.state != "running", c.name != self.scope.edge_name))
        return found[0] if found else None

    def observe(
        self,
        desired: Desired,
        image_id: str | None,
        listing: Iterable[ContainerInfo] | None = None,
    ) -> EdgePlan:
        """Whether the edge must be created, started again, reloaded with a new
        configuration, or replaced (``replace-needed``); a deploy does each."""
        if not frontends(desired):
            return EdgePlan("none")
        image = image_id or ""
        current = self.container(listing)
        if current is None:
            return EdgePlan("create", "no edge yet", image)
        if current.state != "running" and self._resumable(current, desired, image_id):
            # Killed (``podman kill``: podman 4.3's restart policy leaves it down): the pod
            # still holds the ports, so the container itself starts again, in well under
            # a second, instead of a new pod.
            return EdgePlan("resume", f"the edge is {current.state}", image)
        if current.state != "running" or not Path(self.socket(SOCKET_NAME)).exists():
            return EdgePlan("start", f"the edge is {current.state}", image)
        if image_id is None or self._running_hash(current) == self.config_hash(desired, image_id):
            return EdgePlan("none", "", image)
        if current.labels.get(LABEL + "frame-hash") == self.frame_hash(desired, image_id):
            return EdgePlan("reload", "the health checks of a public role changed", image)
        if current.labels.get(POD_HASH) == self.pod_hash(desired):
            return EdgePlan(
                "replace-needed",
                "the edge image or its uid changed: once the roles are in place, a new "
                "container takes over the open ports (no connection is refused)",
                image,
            )
        ports = ", ".join(str(fe.bind_port) for fe in frontends(desired))
        was = current.labels.get(PORTS, "").replace(",", ", ")
        return EdgePlan(
            "replace-needed",
            f"public ports or their address changed{f' (ports {was} -> {ports})' if was else ''}"
            f": once the roles are in place, a new pod publishes "
            f"{'ports' if ',' in ports else 'port'} {ports} on "
            f"{self.address}, and every public port refuses connections for about a second",
            image,
        )

    def _resumable(self, current: ContainerInfo, desired: Desired, image_id: str | None) -> bool:
        """Whether the stopped edge container can simply start again: the edge's own
        name, this image and frame (uid, ports), and a pod of this shape to run in."""
        return (
            image_id is not None
            and current.name == self.scope.edge_name
            and current.state in ("exited", "stopped")
            and current.labels.get(LABEL + "frame-hash") == self.frame_hash(desired, image_id)
            and current.labels.get(POD_HASH) == self.pod_hash(desired)
        )

    def observe_servers(self, desired: Desired, plan: EdgePlan) -> dict[str, list[EdgeServer]]:
        """Each public role's servers as the running edge has them, for the planner.

        Nothing is read from an edge the plan (re)starts: it will hold no server.
        """
        if plan.action in ("create", "start", "resume"):
            return {}
        found = {}
        for fe in frontends(desired):
            try:  # a backend the edge lacks (a new public role) is absent, not empty
                servers = self.api.servers(fe.backend)
            except NotFoundError:
                continue
            found[fe.backend] = [EdgeServer(s.name, s.admin, s.healthy) for s in servers]
        return found

    def start(self, desired: Desired, image_id: str) -> ContainerInfo:
        """(Re)create the edge's pod and container; servers are added afterwards.

        The ports are closed from the old container's removal until the new HAProxy
        listens (about a second): ``hand_over`` avoids that when the pod can stay.

        Raises:
            NotSupportedError: the engine has no pods, or corral cannot reach a
                container's socket on it.
            EngineError: the host cannot listen on the edge's address; nothing was
                changed (the old edge keeps serving).
        """
        require(self.engine, Capability.HOST_SOCKETS, "the edge's admin socket")
        require(self.engine, Capability.PODS, "the edge's take-over of its open ports")
        self._check_address()
        self.check_ports(desired)
        carried = self._carry(desired)  # read before the old edge goes
        self.remove()
        self.close()
        self.prepare_folder(desired, image_id, carried)
        self.engine.create_pod(self._pod_spec(desired))
        info = self.engine.start(self._spec(desired, image_id))
        self._wait_for_socket()
        return info

    def resume(self, desired: Desired, image_id: str) -> None:
        """Start the stopped edge container again in its pod, with ``desired``'s
        configuration and no server (the plan adds every instance it keeps).

        Raises:
            EngineError: it did not start or open its admin socket; the caller may then
                ``start`` a new pod.
        """
        self.close()
        self._write_config(self.render(desired), b"", EMPTY_STATE)
        self._record_hash(desired, image_id)
        self.engine.resume(self.scope.edge_name)
        self._wait_for_socket()

    def _check_address(self) -> None:
        """Fail before the old edge goes when the host cannot listen on ``address``: a
        pod whose ports cannot be published fails to start with only "internal libpod
        error" to say why, and the fleet would have no edge meanwhile."""
        if not self.publish:
            return
        ip = ipaddress.ip_address(self.address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self.address, 0))
            except OSError as exc:
                why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                raise EngineError(
                    f"the edge cannot publish its ports on {self.address}: {why} (does an "
                    "interface of this host have that address?); the old edge keeps serving"
                ) from exc

    def check_ports(self, desired: Desired) -> None:
        """Fail before the old edge goes when a port the edge would newly publish is held
        by another program: the new pod would fail with only "internal libpod error", and
        every public port would refuse connections until the old edge was back.

        Raises:
            UsageError: naming each port taken; nothing was changed.
        """
        if not self.publish:
            return
        current = self.container()
        if current is not None and PORTS not in current.labels:
            return  # an edge from before the label: which ports are its own is unknown
        held = {p for p in (current.labels[PORTS] if current else "").split(",") if p}
        taken = [
            fe.bind_port
            for fe in frontends(desired)
            if str(fe.bind_port) not in held and not _free(self.address, fe.bind_port)
        ]
        if taken:
            ports = ", ".join(str(port) for port in taken)
            raise UsageError(
                f"port {ports} on {self.address} is in use by another program: the edge "
                "cannot publish it; free it or choose another `public:` port (nothing was "
                "changed)"
            )

    def _pod_spec(self, desired: Desired) -> PodSpec:
        ports = (
            tuple(
                PortMapping(fe.bind_port, fe.bind_port, self.address) for fe in frontends(desired)
            )
            if self.publish
            else ()
        )
        return PodSpec(
            name=self.pod_name,
            labels=self.scope.marks(KIND_EDGE + "-pod"),
            network=self.scope.network,
            ports=ports,
            sysctls=EDGE_SYSCTLS,
        )

    def close(self) -> None:
        """Close the runtime API's connection: the next command reaches the current worker."""
        with self._api_lock:
            if self._api is not None:
                self._api.close()

    def _carry(self, desired: Desired) -> _Carried | None:
        """The running edge's servers, check paths and states, for a new pod to start
        with (as a reload does): it then serves at once, where an empty one answered 503
        until each server was added again. None: no edge runs, or it does not answer."""
        current = self.container()
        if current is None or current.state != "running":
            return None
        if not (self.folder / "sock" / SOCKET_NAME).exists():
            return None
        try:
            paths = self._check_paths()
            servers, _ = self._carried_servers(desired, paths)
            state = self.api.command("show servers state") + "\n"
        except CorralError:
            return None
        check_map = "".join(f"{name} {path}\n" for name, path in sorted(paths.items()))
        return _Carried(tuple(servers), check_map.encode(), state.encode())

    def prepare_folder(
        self, desired: Desired, image_id: str = "", carried: _Carried | None = None
    ) -> None:
        """Write the configuration and make an empty socket folder only HAProxy may use;
        ``carried``: the servers it starts with (none: the plan adds them).

        Raises:
            EngineError: a host user has the edge's uid, or corral is not root (see the
                module's docstring), or the folders cannot be made.
            StateError: a symbolic link is where one of the folders belongs.
        """
        _check_uid_is_free()
        cfg, sock = self.folder / "cfg", self.folder / "sock"
        try:
            private_dir(self.runtime_root)
            private_dir(self.folder)
            shutil.rmtree(sock, ignore_errors=True)  # an earlier edge's socket, its uid's
            private_dir(cfg)
            os.chown(cfg, -1, EDGE_GID, follow_symlinks=False)
            os.chmod(cfg, CONFIG_DIR_MODE)
            if carried is None:
                self._write_config(self.render(desired), b"", EMPTY_STATE)
            else:
                text = self.render(desired, carried.servers)
                self._write_config(text, carried.check_map, carried.state)
            self._record_hash(desired, image_id)
            private_dir(sock)
            os.chown(sock, EDGE_UID, EDGE_GID, follow_symlinks=False)
        except PermissionError as exc:
            raise EngineError(
                f"cannot give the edge's socket folder {sock} to uid {EDGE_UID}, the uid "
                f"HAProxy runs as: {exc.strerror}. The edge needs corral to run as root "
                "(rootless Podman maps a container's uids to subordinate ones)",
                path=str(sock),
            ) from exc
        except OSError as exc:
            raise EngineError(f"cannot prepare the edge's folder {self.folder}: {exc}") from exc

    def _write_config(self, text: str, check_map: bytes, state: bytes) -> None:
        """Write the configuration, the check map and the servers' states, HAProxy's to read."""
        cfg = self.folder / "cfg"
        for name, data in (
            (CHECK_MAP, check_map),
            (STATE_FILE, state),
            ("haproxy.cfg", text.encode()),
        ):
            write_private(cfg / name, data)
            os.chown(cfg / name, -1, EDGE_GID, follow_symlinks=False)
            os.chmod(cfg / name, CONFIG_FILE_MODE)

    def _spec(
        self,
        desired: Desired,
        image_id: str,
        name: str | None = None,
        take_over: bool = False,
        node: str | None = None,
    ) -> ContainerSpec:
        """The HAProxy container, in the edge's pod; ``take_over``: it starts with the
        listening sockets of the HAProxy running in the pod now (``-x``); ``node``: the
        name its HAProxy gives in ``show info`` (default: the container's)."""
        role = edge_role()
        name = name or self.scope.edge_name
        labels = {
            **self.scope.marks(KIND_EDGE),
            LABEL + "config-hash": self.config_hash(desired, image_id),
            LABEL + "frame-hash": self.frame_hash(desired, image_id),
            POD_HASH: self.pod_hash(desired),
            PORTS: ",".join(str(fe.bind_port) for fe in frontends(desired)),
        }
        command = role.run.command
        if take_over:
            command = (*command, "-x", f"{SOCKET_IN_CONTAINER}/{SOCKET_NAME}")
        mounts = (
            Mount(str(self.folder / "cfg"), CONFIG_IN_CONTAINER, read_only=True),
            self._socket_mount(),
        )
        # HAProxy runs unprivileged and binds each public port inside the container; a port
        # under 1024 needs this one capability, and nothing else ever does.
        low = any(fe.bind_port < PRIVILEGED_PORTS for fe in frontends(desired))
        return ContainerSpec(
            name=name,
            image=image_id,
            command=command,
            user=f"{EDGE_UID}:{EDGE_GID}",  # the owner of the socket folder, nobody else
            env={NODE_ENV: node or name},  # how "show info" tells two edges in one pod apart
            labels=labels,
            pod=self.pod_name,  # network, ports and sysctls are the pod's
            stop_signal=SOFT_STOP,
            # A crashed HAProxy (a death of its process, an OOM kill) is started again by
            # the engine, in the same pod, with no corral running. Podman 4.3 counts
            # ``podman kill`` and ``podman stop`` as a user's stop: ``corral watch`` brings
            # the edge back then (docs/operations.md, "The edge supervised").
            restart="always",
            mounts=mounts,
            cap_add=("NET_BIND_SERVICE",) if low else (),
            memory=role.resources.memory,
            cpus=role.resources.cpus,
            pids_limit=role.resources.pids,
        )

    # -- reloading the configuration in place -----------------------------------------------
    def can_reload(self, desired: Desired, image_id: str) -> bool:
        """Whether the running edge can take ``desired``'s configuration without a new
        container: same image, published ports, uid and master-worker mode."""
        current = self.container()
        return (
            current is not None
            and current.state == "running"
            and Path(self.socket(MASTER_SOCKET_NAME)).exists()
            and current.labels.get(LABEL + "frame-hash") == self.frame_hash(desired, image_id)
        )

    def reload(self, desired: Desired, image_id: str, timeout: float = 15.0) -> None:
        """Load ``desired``'s configuration into the running edge; no connection is refused.

        The old worker's servers are written into the new configuration with their check
        paths and states (drained stays drained), so the new worker serves at once; the
        master hands it the listening sockets and the old worker finishes its requests.
        Then every server that was healthy must be seen healthy by the new worker's own
        checks; if one is not, the old configuration is loaded back.

        Raises:
            EngineError: the new worker did not start (the old one keeps serving), or a
                server healthy before is not healthy under the new configuration within
                ``timeout`` seconds (the old configuration serves again).
        """
        before, healthy = self._write_carried(desired)
        try:
            self._switch_worker(timeout)
            self._wait_all_healthy(healthy, timeout)
        except EngineError:
            self._write_config(
                before["haproxy.cfg"].decode(), before[CHECK_MAP], before[STATE_FILE]
            )
            with contextlib.suppress(EngineError):
                self._switch_worker(timeout)
            raise
        self._record_hash(desired, image_id)

    def remember(self, desired: Desired) -> None:
        """Write ``desired``'s configuration with the running edge's servers and their
        states, without reloading: an edge the engine starts again after a crash (its
        restart policy) comes back serving them, with no corral running. The running
        configuration is the same (servers added at run time are declared now)."""
        if self.container() is None or not (self.folder / "sock" / SOCKET_NAME).exists():
            return
        self._write_carried(desired)

    def _record_hash(self, desired: Desired, image_id: str) -> None:
        """Note the configuration the edge runs now (after a start, reload or take-over)."""
        write_private(self.folder / "cfg" / HASH_FILE, self.config_hash(desired, image_id).encode())

    def _write_carried(self, desired: Desired) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
        """Write ``desired``'s configuration with the running HAProxy's servers, their
        check paths and states carried over (for a reload or a take-over); return the
        files as they were (to write back if the new HAProxy fails) and the servers
        healthy now."""
        cfg = self.folder / "cfg"
        # read_private tightens these to 0600: each is written again (0640) below.
        before = {name: read_private(cfg / name) for name in (CHECK_MAP, STATE_FILE, "haproxy.cfg")}
        paths = self._check_paths()
        servers, healthy = self._carried_servers(desired, paths)
        check_map = "".join(f"{name} {path}\n" for name, path in sorted(paths.items()))
        state = self.api.command("show servers state") + "\n"
        self._write_config(self.render(desired, servers), check_map.encode(), state.encode())
        return before, healthy

    def _check_paths(self) -> dict[str, str]:
        """Every server's HTTP check path, as the running worker's check map has it."""
        answer = self.api.command(f"show map {CONFIG_IN_CONTAINER}/{CHECK_MAP}")
        paths: dict[str, str] = {}
        for line in answer.splitlines():
            parts = line.split(" ", 2)  # "<entry id> <server> <path>"
            if len(parts) == 3:
                paths.setdefault(parts[1], parts[2])
        return paths

    def _carried_servers(
        self, desired: Desired, paths: dict[str, str]
    ) -> tuple[list[StaticServer], list[tuple[str, str]]]:
        """The running worker's servers as the new configuration declares them, and the
        (backend, server) pairs that are healthy now."""
        servers: list[StaticServer] = []
        healthy: list[tuple[str, str]] = []
        for fe in frontends(desired):
            for server in self.servers(fe.backend):
                # An instance of an earlier release, with no path for an HTTP check, is
                # not checked: corral checked it when it was admitted.
                check = not fe.http_check or server.name in paths
                servers.append(
                    StaticServer(fe.backend, server.name, server.addr, server.port, check)
                )
                if server.healthy and server.admin == "ready":
                    healthy.append((fe.backend, server.name))
        return servers, healthy

    def _switch_worker(self, timeout: float) -> None:
        """Reload through the master and wait until a new worker answers the admin socket."""
        old = worker_pid(self.api)
        reload_master(self.socket(MASTER_SOCKET_NAME))
        self.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = worker_pid(self.api)
            if pid is not None and pid != old:
                return
            self.close()  # a connection may still have reached the leaving worker
            time.sleep(0.05)
        raise EngineError(
            f"the edge did not start a worker on the new configuration within {timeout:g}s; "
            "the old worker keeps serving",
            log=self.engine.logs(self.scope.edge_name).splitlines()[-20:],
        )

    # -- a new container taking over the open ports -------------------------------------------
    def can_hand_over(self, desired: Desired) -> bool:
        """Whether a new container can take over from the running edge in its pod: the
        pod holds ``desired``'s ports, address and sysctls, and the admin socket is open."""
        current = self.container()
        return (
            current is not None
            and current.state == "running"
            and (self.folder / "sock" / SOCKET_NAME).exists()
            and current.labels.get(POD_HASH) == self.pod_hash(desired)
        )

    def hand_over(self, desired: Desired, image_id: str, timeout: float = 15.0) -> None:
        """Replace the running edge container by one of ``image_id`` in the same pod; no
        connection is refused.

        The new HAProxy starts with the old one's servers (as a reload does) and takes
        its listening sockets through the shared admin socket (``-x``), so both accept
        on the same sockets for a moment. Once the new one answers with every server
        that was healthy seen healthy by its own checks, the old one soft-stops: it
        closes its copies of the sockets, finishes its requests and exits. The new
        container then gets the edge's own name.

        Raises:
            EngineError: the new container did not start or serve within ``timeout``
                seconds; it is removed and the old one keeps serving.
        """
        old = self.container()
        if old is None:
            raise EngineError("there is no running edge to take over from")
        name = (
            self.scope.edge_name + NEXT
            if old.name == self.scope.edge_name
            else self.scope.edge_name
        )
        self.engine.remove(name)  # left by a take-over that was cut short
        before, healthy = self._write_carried(desired)
        # A node name of its own: after a take-over the container is renamed, but its
        # HAProxy keeps the name it started with, which the next take-over's would match.
        node = f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            self.engine.start(self._spec(desired, image_id, name, take_over=True, node=node))
            self._wait_serving(node, name, healthy, timeout)
        except EngineError:
            with contextlib.suppress(EngineError):
                self.engine.remove(name)
            self._write_config(
                before["haproxy.cfg"].decode(), before[CHECK_MAP], before[STATE_FILE]
            )
            raise
        self.close()
        self.engine.stop(old.name, timeout=SOFT_STOP_TIMEOUT)  # SIGUSR1: a soft stop
        self.engine.remove(old.name)
        if name != self.scope.edge_name:
            self.engine.rename(name, self.scope.edge_name)
        self._record_hash(desired, image_id)

    def _wait_serving(
        self, node: str, container: str, healthy: Sequence[tuple[str, str]], timeout: float
    ) -> None:
        """Wait until the HAProxy named ``node`` (in ``container``) answers on the shared
        admin socket and sees every server in ``healthy`` healthy. Each look is a new
        connection: the kernel hands it to either process."""
        backends = sorted({backend for backend, _ in healthy})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.close()
            with contextlib.suppress(EngineError):
                answered, states = worker_view(self.api, backends)
                if answered == node and all(
                    key in states and states[key].healthy for key in healthy
                ):
                    return
            time.sleep(0.01)
        raise EngineError(
            f"the new edge container {container} did not serve every healthy server within "
            f"{timeout:g}s; the old one keeps serving",
            log=self.engine.logs(container).splitlines()[-20:],
        )

    def _wait_all_healthy(self, servers: Sequence[tuple[str, str]], timeout: float) -> None:
        # Only the new worker's own checks count: it starts from the old one's results.
        down = [f"{b}/{n}" for b, n in servers if not self.api.wait_checked_healthy(b, n, timeout)]
        if down:
            raise EngineError(
                f"under the new configuration the edge does not see {', '.join(down)} "
                f"healthy within {timeout:g}s; the old configuration is loaded back"
            )

    def _wait_for_socket(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api.command("show info")
                return
            except EngineError:
                time.sleep(0.1)
        raise EngineError(
            f"the edge did not open its admin socket within {timeout:g}s", log=self._logs()
        )

    def _logs(self) -> list[str]:
        current = self.container()
        name = current.name if current is not None else self.scope.edge_name
        return self.engine.logs(name).splitlines()[-20:]

    def remove(self, forget: bool = False) -> None:
        """Remove the edge's containers and pod; ``forget`` also removes its runtime folder."""
        # A soft-stopping HAProxy waits for every open CLI connection: ours would hold the
        # stop for the engine's whole stop timeout (10 s a test environment, before).
        self.close()
        for current in self.engine.list_containers(self.scope.labels(KIND_EDGE)):
            self.engine.remove(current.name)
        self.engine.remove_pod(self.pod_name)
        if forget:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- servers ----------------------------------------------------------------------
    def servers(self, role: str) -> list[ServerState]:
        try:
            return self.api.servers(role)
        except NotFoundError:
            return []

    def add(self, rr: RoleRelease, name: str, address: str, timeout: float) -> None:
        """Add an instance; it takes traffic only once HAProxy's own check passed. One the
        edge has already (a new pod starts with the old edge's servers) is waited for.

        Raises:
            EngineError: HAProxy refused, or never saw it healthy within ``timeout``.
        """
        assert rr.run.port is not None
        if any(s.name == name and s.addr == address for s in self.servers(rr.role)):
            if not self.api.wait_healthy(rr.role, name, timeout):
                state = self.api.server(rr.role, name)
                raise EngineError(
                    f"{rr.role}/{name} is not healthy after {timeout:g}s: {state.check_words}"
                )
            return
        self.api.bring_up(
            rr.role, name, address, rr.run.port, health_timeout=timeout, check_path=check_path(rr)
        )

    def prepare(self, rr: RoleRelease, name: str, address: str) -> None:
        """Register an instance, health-checked but taking no traffic yet.

        Done right after the instance starts, so HAProxy's checks run while corral's own
        check waits, instead of one after the other.
        """
        assert rr.run.port is not None
        self.api.prepare(rr.role, name, address, rr.run.port, check_path=check_path(rr))

    def confirm(self, rr: RoleRelease, name: str, timeout: float, ready: bool) -> None:
        """Wait until HAProxy's own check passed; then let traffic in if ``ready``.

        Raises:
            EngineError: HAProxy never saw it healthy; the server is removed again.
        """
        api = self.api
        if not api.wait_healthy(rr.role, name, timeout):
            words = "no health check result"
            with contextlib.suppress(EngineError):
                words = api.server(rr.role, name).check_words
                api.set_state(rr.role, name, "maint")
                api.del_server(rr.role, name)
            raise EngineError(f"the edge never saw {name} healthy within {timeout:g}s: {words}")
        if ready:
            api.set_state(rr.role, name, "ready")

    def readmit(self, role: str, name: str) -> None:
        """Let a drained instance take requests again (once HAProxy's check passes)."""
        self.api.set_state(role, name, "ready")

    def switch(self, role: str, ready: Sequence[str], drain: Sequence[str]) -> None:
        """Blue-green: the new set takes traffic and the old set stops taking it, at once."""
        # One round trip: the new set takes traffic at the moment the old set stops.
        states: list[tuple[str, AdminState]] = [(n, "ready") for n in ready]
        states += [(n, "drain") for n in drain]
        self.api.set_states(role, states)

    def drain(self, role: str, name: str, timeout: float) -> bool:
        """Take an instance out of rotation, then out of the edge; absent is fine.

        Returns:
            False when requests were still running after ``timeout`` and were cut (the
            role's ``deploy.drain`` is shorter than its slowest request), else True.
        """
        # No listing of the backend first (that would read every server per instance):
        # an absent server or backend is refused by the first step, and that is fine.
        try:
            return self.api.drain_and_remove(role, name, drain_timeout=timeout)
        except NotFoundError:
            return True
