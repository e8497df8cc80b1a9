"""Render the haproxy.cfg of corral's edge.

The rendered file declares every public role as a frontend and an empty backend. Servers are
never written into it: the deploy executor adds and removes them at run time through the
admin socket (see ``corral.edge.runtime``), so a deploy never needs a reload.

Health-check timing lives here as constants because HAProxy 2.6 does *not* apply a backend's
``default-server`` line to servers added with ``add server``; ``runtime`` passes the same values
explicitly so static and dynamic servers behave alike.
"""

from __future__ import annotations

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
# One thread: the edge container gets one CPU (see corral.deploy.edge), and runtime-API
# commands that change servers (add, del) stop every other thread while they run, so more
# threads on one CPU would only make each change dearer.
THREADS = 1

# HAProxy identifiers: letters, digits, '-', '_', '.', ':' (see "Names" in configuration.txt).
# ';' and spaces are refused too because the runtime API splits commands on them.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
# A health path is sent verbatim on the check's request line: no spaces, no control bytes.
_PATH = re.compile(r"^/[\x21-\x7e]*$")


@dataclass(frozen=True)
class Frontend:
    """One public role: where HAProxy listens and which backend serves it.

    ``health_path`` is the HTTP path HAProxy polls on each server (``GET``, any 2xx/3xx
    answer counts as healthy); ``None`` means a plain TCP connect check.
    """

    name: str
    bind_port: int
    backend: str
    health_path: str | None = None


def render_haproxy_cfg(
    frontends: Sequence[Frontend],
    socket_path: str,
    *,
    retry_on: str = DEFAULT_RETRY_ON,
) -> str:
    """Render a complete haproxy.cfg with empty backends and an admin runtime socket.

    Args:
        frontends: one entry per public role; backend names may be shared, in which case
            their health paths must agree.
        socket_path: where HAProxy creates its admin socket (``stats socket``).
        retry_on: the ``retry-on`` keywords; see ``DEFAULT_RETRY_ON`` for why the default.

    Returns:
        The configuration text, ending with a newline.

    Raises:
        ValueError: a name, port, path or socket path that HAProxy would reject or
            misread, or two frontends on one port, or one backend with two health paths.
    """
    _validate(frontends, socket_path)
    parts = [_global(socket_path), _defaults(retry_on)]
    parts += [_frontend(fe) for fe in frontends]
    parts += [_backend(name, path) for name, path in _backends(frontends).items()]
    return "\n".join(parts)


def _validate(frontends: Sequence[Frontend], socket_path: str) -> None:
    """Refuse input that would produce a broken or ambiguous configuration."""
    if not socket_path or any(c.isspace() for c in socket_path) or '"' in socket_path:
        raise ValueError(f"socket path must be non-empty without spaces or quotes: {socket_path!r}")
    ports: set[int] = set()
    names: set[str] = set()
    for fe in frontends:
        for label, value in (("frontend", fe.name), ("backend", fe.backend)):
            if not _NAME.match(value):
                raise ValueError(f"invalid {label} name {value!r}: use letters, digits, -_.:")
        if not 1 <= fe.bind_port <= 65535:
            raise ValueError(f"frontend {fe.name}: port {fe.bind_port} is out of range")
        if fe.health_path is not None and not _PATH.match(fe.health_path):
            raise ValueError(f"frontend {fe.name}: health path {fe.health_path!r} is invalid")
        if fe.bind_port in ports:
            raise ValueError(f"frontend {fe.name}: port {fe.bind_port} is used twice")
        if fe.name in names:
            raise ValueError(f"frontend {fe.name} is declared twice")
        ports.add(fe.bind_port)
        names.add(fe.name)


def _backends(frontends: Sequence[Frontend]) -> dict[str, str | None]:
    """Each distinct backend with its health path, in first-seen order."""
    paths: dict[str, str | None] = {}
    for fe in frontends:
        if fe.backend in paths and paths[fe.backend] != fe.health_path:
            raise ValueError(f"backend {fe.backend} is given two different health paths")
        paths[fe.backend] = fe.health_path
    return paths


def _global(socket_path: str) -> str:
    # No "daemon": HAProxy stays in the foreground so a supervisor (or a container) owns it,
    # and logs go to stdout for the same reason. "expose-fd listeners" lets a later seamless
    # reload take over the listening sockets without refusing connections.
    return (
        "global\n"
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners"
        f" backlog {SOCKET_BACKLOG}\n"
        f"    stats maxconn {SOCKET_MAXCONN}\n"
        "    stats timeout 30s\n"
        f"    nbthread {THREADS}\n"
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
        "    timeout connect 2s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    timeout http-request 10s\n"
        "    timeout http-keep-alive 10s\n"
        "    timeout queue 10s\n"
        "    timeout check 1s\n"
        "    option redispatch 1\n"
        "    retries 3\n"
        f"    retry-on {retry_on}\n"
        f"    default-server inter {CHECK_INTER} downinter {CHECK_DOWNINTER} fall {CHECK_FALL}"
        f" rise {CHECK_RISE}\n"
    )


def _frontend(fe: Frontend) -> str:
    return f"frontend {fe.name}\n    bind *:{fe.bind_port}\n    default_backend {fe.backend}\n"


def _backend(name: str, health_path: str | None) -> str:
    # "balance roundrobin" is a dynamic algorithm, which "add server" requires.
    # With no usable server (none yet, or all draining or down) HAProxy would answer its
    # own HTML 503 page; a short plain-text 503 with Retry-After is clearer for clients and
    # for anyone reading the load test's failures.
    lines = [f"backend {name}", "    balance roundrobin"]
    lines.append(
        "    http-request disable-l7-retry unless { method " + " ".join(REPLAYABLE_METHODS) + " }"
    )
    if health_path is not None:
        lines.append(f"    option httpchk GET {health_path}")
    lines.append(
        "    http-request return status 503 content-type text/plain"
        ' string "no server available\\n" hdr retry-after 1 if { nbsrv() eq 0 }'
    )
    return "\n".join(lines) + "\n"
