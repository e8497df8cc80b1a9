"""Render the haproxy.cfg of corral's edge.

The rendered file declares every public role as a frontend and a backend. Servers are
added and removed at run time through the admin socket (see ``corral.edge.runtime``); the
file only lists servers when the edge reloads its configuration in place (``servers``),
so that the new worker starts with the servers the old one had.

Each server's HTTP check path comes from a map keyed by server name (``check_map``), set
through the runtime API when the server is added: instances of two releases with different
health paths are each checked on their own path while a deploy rolls the role, and a
health path change never needs a new configuration.

Health-check timing lives here as constants because HAProxy 2.6 does *not* apply a backend's
``default-server`` line to servers added with ``add server``; ``runtime`` passes the same values
explicitly so static and dynamic servers behave alike.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Health checks: probe every 500 ms, one good answer brings a server up, two bad ones take
# it down. Fast enough that a new instance joins within a second of becoming ready.
CHECK_INTER = "500ms"
# While a server is down (a new instance starting, before its first good answer) HAProxy
# checks it this often instead, so a new instance joins within ~20 ms of being ready (a
# deploy waits on it for every instance; only servers that are down are checked so often).
CHECK_DOWNINTER = "20ms"
CHECK_FALL = 2
CHECK_RISE = 1
# How long HAProxy waits for a connection to an instance before it retries elsewhere. An
# instance that died leaves connections waiting this long on its vanished address; a drain
# of a dead instance outlasts it (deploy.steps.DRAIN_LEFTOVER), so they are retried, not cut.
CONNECT_TIMEOUT_S = 2

# What HAProxy may retry on another server. Not "all-retryable-errors" (which 2.6 accepts):
# that one also replays requests that got a 500 or a junk answer, which are the application's
# own errors and would run their side effects up to four times. What remains covers every way
# a request can meet an instance that is going away: the connection is refused or reset
# (conn-failure), the instance closed a kept-alive connection or died mid-request
# (empty-response), or it already answers "shutting down" (503) or is a proxy itself (502/504).
# HAProxy 2.6 applies all of these to every method (configuration.txt, "retry-on": the
# application must have its own replay protection); see _backend for the methods exempted.
DEFAULT_RETRY_ON = "conn-failure empty-response 502 503 504"
# Only these are replayed after the request reached a server: a POST (or PATCH, DELETE...)
# that met a dying instance may already have had its effect there, so it fails to the
# client instead of running twice. A connection that failed before the request was sent
# ("conn-failure") is still retried for every method: nothing reached a server.
REPLAYABLE_METHODS = ("GET", "HEAD", "OPTIONS")

# The admin socket's limits. corral holds one connection per running command (a deploy, a
# status, a benchmark reading counters), so a handful suffice; the default of 10 is kept
# off by a margin because an operator's socat or a monitoring probe may be connected too.
# The accept queue (backlog) absorbs a burst of connections while HAProxy is busy, instead
# of refusing them with EAGAIN as it did at 60 replicas when every waiting instance opened
# connections of its own. Both are sized for the spec's largest role (100 replicas plus
# 100 surging): they never depend on the fleet's current size, which would make every
# scaling change a change of the edge's configuration, and so a replacement of the edge.
SOCKET_MAXCONN = 64
SOCKET_BACKLOG = 256
# One thread: the edge container gets one CPU (see corral.edge.container), and runtime-API
# commands that change servers (add, del) stop every other thread while they run, so more
# threads on one CPU would only make each change dearer.
THREADS = 1
# An old worker gets this long after a reload to finish its requests (the server timeout is
# 30 s) before it is stopped; until then it holds only the connections it already had.
HARD_STOP_AFTER = "60s"
# The environment variable that names an edge container's HAProxy ("node" in "show info").
NODE_ENV = "CORRAL_EDGE_NODE"
# A server-state file with no server: its format version alone (an empty one is warned of).
EMPTY_STATE = b"1\n"

# HAProxy identifiers: letters, digits, '-', '_', '.', ':' (see "Names" in configuration.txt).
# ';' and spaces are refused too because the runtime API splits commands on them.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True)
class Frontend:
    """One public role: where HAProxy listens and which backend serves it.

    ``http_check``: HAProxy checks each server with a ``GET`` of the path the check map
    gives for it (any 2xx/3xx answer counts as healthy); otherwise a plain TCP connect.
    """

    name: str
    bind_port: int
    backend: str
    http_check: bool = False


@dataclass(frozen=True)
class StaticServer:
    """A server written into the configuration for a reload, as the old worker had it.

    ``check``: whether HAProxy checks it (a server of an earlier release whose check is
    of another kind than its backend's is not: corral checked it when it was admitted).
    """

    backend: str
    name: str
    address: str
    port: int
    check: bool = True


def render_haproxy_cfg(
    frontends: Sequence[Frontend],
    socket_path: str,
    *,
    check_map: str = "/etc/corral-edge/checks.map",
    state_file: str = "/etc/corral-edge/servers.state",
    servers: Sequence[StaticServer] = (),
    retry_on: str = DEFAULT_RETRY_ON,
) -> str:
    """Render a complete haproxy.cfg with an admin runtime socket.

    Args:
        frontends: one entry per public role; backend names may be shared, in which case
            their check kinds must agree.
        socket_path: where HAProxy creates its admin socket (``stats socket``).
        check_map: the map file of every server's HTTP check path, by server name.
        state_file: where a reload finds the servers' states the old worker had.
        servers: servers to declare (a reload); empty for a new edge.
        retry_on: the ``retry-on`` keywords; see ``DEFAULT_RETRY_ON`` for why the default.

    Returns:
        The configuration text, ending with a newline.

    Raises:
        ValueError: a name, port, address or path that HAProxy would reject or misread,
            two frontends on one port, one backend with two check kinds, or a server of
            no backend.
    """
    for path in (socket_path, check_map, state_file):
        _validate_path(path)
    _validate(frontends)
    backends = _backends(frontends)
    unknown = [f"{s.backend}/{s.name}" for s in servers if s.backend not in backends]
    if unknown:
        raise ValueError(f"server(s) of no backend: {', '.join(unknown)}")
    parts = [_global(socket_path, state_file), _defaults(retry_on)]
    parts += [_frontend(fe) for fe in frontends]
    parts += [
        _backend(name, http, check_map, [s for s in servers if s.backend == name])
        for name, http in backends.items()
    ]
    return "\n".join(parts)


def _validate_path(path: str) -> None:
    if not path or any(c.isspace() for c in path) or '"' in path or "," in path:
        raise ValueError(f"path must be non-empty without spaces, quotes or commas: {path!r}")


def _validate(frontends: Sequence[Frontend]) -> None:
    """Refuse input that would produce a broken or ambiguous configuration."""
    ports: set[int] = set()
    names: set[str] = set()
    for fe in frontends:
        for label, value in (("frontend", fe.name), ("backend", fe.backend)):
            if not _NAME.match(value):
                raise ValueError(f"invalid {label} name {value!r}: use letters, digits, -_.:")
        if not 1 <= fe.bind_port <= 65535:
            raise ValueError(f"frontend {fe.name}: port {fe.bind_port} is out of range")
        if fe.bind_port in ports:
            raise ValueError(f"frontend {fe.name}: port {fe.bind_port} is used twice")
        if fe.name in names:
            raise ValueError(f"frontend {fe.name} is declared twice")
        ports.add(fe.bind_port)
        names.add(fe.name)


def _backends(frontends: Sequence[Frontend]) -> dict[str, bool]:
    """Each distinct backend and whether it checks over HTTP, in first-seen order."""
    kinds: dict[str, bool] = {}
    for fe in frontends:
        if fe.backend in kinds and kinds[fe.backend] != fe.http_check:
            raise ValueError(f"backend {fe.backend} is given two different check kinds")
        kinds[fe.backend] = fe.http_check
    return kinds


def _global(socket_path: str, state_file: str) -> str:
    # No "daemon": HAProxy stays in the foreground so a supervisor (or a container) owns it,
    # and logs go to stdout for the same reason. "expose-fd listeners" lets the master hand
    # the listening sockets to the next worker on a reload, so no connection is refused.
    # "hard-stop-after" bounds how long an old worker finishes its requests after a reload.
    # "node" names the process in "show info": while a new edge container takes over the
    # listening sockets (and the admin socket) of the old one, both answer on them, and
    # corral tells them apart by the name each container is given (NODE_ENV).
    return (
        "global\n"
        f"    presetenv {NODE_ENV} corral-edge\n"
        f'    node "${{{NODE_ENV}}}"\n'
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners"
        f" backlog {SOCKET_BACKLOG}\n"
        f"    stats maxconn {SOCKET_MAXCONN}\n"
        "    stats timeout 30s\n"
        f"    nbthread {THREADS}\n"
        f"    server-state-file {state_file}\n"
        f"    hard-stop-after {HARD_STOP_AFTER}\n"
        "    log stdout format raw local0\n"
    )


def _defaults(retry_on: str) -> str:
    # "option redispatch 1" sends every retry to another server, not only the last one, and
    # skips the 1 s pause HAProxy otherwise takes before retrying the same server.
    # "timeout connect" stays short: an instance whose address vanished costs at most that
    # long before the retry goes elsewhere.
    return (
        "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    option httplog\n"
        "    option dontlognull\n"
        f"    timeout connect {CONNECT_TIMEOUT_S}s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    timeout http-request 10s\n"
        "    timeout http-keep-alive 10s\n"
        "    timeout queue 10s\n"
        "    timeout check 1s\n"
        "    option redispatch 1\n"
        "    retries 3\n"
        f"    retry-on {retry_on}\n"
        # A reload starts the new worker with the servers' states the old one had (drained
        # stays drained, down stays down until its check passes), from the file corral
        # writes just before. An old worker closes a kept-alive client connection only
        # after answering its next request ("Connection: close"), never while the client
        # may be sending one: that race fails requests at every reload otherwise.
        "    load-server-state-from-file global\n"
        "    option idle-close-on-response\n"
        f"    default-server inter {CHECK_INTER} downinter {CHECK_DOWNINTER} fall {CHECK_FALL}"
        f" rise {CHECK_RISE}\n"
    )


def _frontend(fe: Frontend) -> str:
    return f"frontend {fe.name}\n    bind *:{fe.bind_port}\n    default_backend {fe.backend}\n"


def _backend(name: str, http: bool, check_map: str, servers: Sequence[StaticServer]) -> str:
    # "balance roundrobin" is a dynamic algorithm, which "add server" requires.
    # With no usable server (none yet, or all draining or down) HAProxy would answer its
    # own HTML 503 page; a short plain-text 503 with Retry-After is clearer for clients and
    # for anyone reading the load test's failures.
    lines = [f"backend {name}", "    balance roundrobin"]
    lines.append(
        "    http-request disable-l7-retry unless { method " + " ".join(REPLAYABLE_METHODS) + " }"
    )
    if http:
        # No default: a server whose path is missing from the map fails its check.
        lines.append("    option httpchk")
        lines.append(f"    http-check send meth GET uri-lf %[srv_name,map({check_map})]")
    else:
        # The check map stays loaded, and changeable through the runtime API, while this
        # backend checks over TCP: a reload back to HTTP checks (a rollback) needs the
        # paths of the servers added meanwhile. The ACL is never used.
        lines.append(f"    acl corral_check_map str(),map({check_map}) -m found")
    # Not in a worker that is stopping after a reload: nbsrv() is 0 in a stopped backend
    # although its servers still answer the last request of each kept-alive connection.
    lines.append(
        "    http-request return status 503 content-type text/plain"
        ' string "no server available\\n" hdr retry-after 1 if { nbsrv() eq 0 } !{ stopping }'
    )
    lines += [_server_line(s) for s in servers]
    return "\n".join(lines) + "\n"


def _server_line(server: StaticServer) -> str:
    for value in (server.backend, server.name):
        if not _NAME.match(value):
            raise ValueError(f"invalid server name {value!r}: use letters, digits, -_.:")
    ip = ipaddress.ip_address(server.address)  # ValueError for anything but an address
    where = f"[{ip}]:{server.port}" if ip.version == 6 else f"{ip}:{server.port}"
    if not 1 <= server.port <= 65535:
        raise ValueError(f"server {server.name}: port {server.port} is out of range")
    return f"    server {server.name} {where}" + (" check" if server.check else "")
