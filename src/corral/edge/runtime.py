"""A client for HAProxy's runtime API (the admin ``stats socket``), verified on HAProxy 2.6.

Commands travel over one persistent connection in HAProxy's interactive mode, batched where
that is safe, and threads that wait on servers share one look per tick (see
``corral.edge.channel``). Answers are matched exactly; anything unexpected becomes an
``EngineError`` carrying the command and HAProxy's answer.

Facts this module relies on (HAProxy 2.6, checked by hand and by tests/engine):

- in interactive mode each answer is followed by a newline and the prompt ``> ``; a silent
  success is just that, and no command's answer has a line starting with ``> ``.
- ``add server`` creates the server in maintenance with checks configured but disabled, and
  ignores the backend's ``default-server`` line, so check timing is passed explicitly.
- leaving maintenance with checks enabled marks the server UP *before* its first check runs
  (HAProxy starts it "OK but checks immediately"). ``bring_up`` therefore leaves maintenance
  into DRAIN (weight 0, checked but given no traffic) and only sets READY once a check passed.
- ``del server`` needs maintenance and no connection left, and answers "Server deleted.".
- ``show stat <name>`` resolves a *frontend* first when a frontend and a backend share the
  name, so statistics are fetched by the backend's numeric id instead.
- commands written after a failed one still run (a batch is not a transaction), so a
  command is only batched after another whose failure would not make it harmful.
- a deleted server's counters are gone with it; the ``BACKEND`` row of ``show stat`` keeps
  the backend's own totals of connection errors, retries and redispatches.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from corral.edge.channel import Channel, Watcher
from corral.edge.config import CHECK_DOWNINTER, CHECK_FALL, CHECK_INTER, CHECK_RISE
from corral.errors import EngineError, NotFoundError

AdminState = Literal["ready", "drain", "maint"]
OperState = Literal["down", "starting", "up", "stopping"]
ProxyKind = Literal["frontend", "backend", "server", "listener"]

# Answers of HAProxy 2.6 for commands that succeed.
_ADDED = "New server registered."
_DELETED = "Server deleted."
_BUSY = "Server still has connections attached to it, cannot remove it."
_NOT_FOUND = ("No such server.", "No such backend.", "Can't find backend.")

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_UNESCAPED_SEMICOLON = re.compile(r"(?<!\\);")  # "\;" is a ';' inside an argument
_CHECK_PATH = re.compile(r"^/[\x21-\x7e]*$")  # sent verbatim on the check's request line
TICK = 0.01  # seconds between two looks at the watched servers (each costs ~1 ms)

# srv_op_state and srv_admin_state of "show servers state" (management.txt, section 9.3).
_OPER: dict[int, OperState] = {0: "down", 1: "starting", 2: "up", 3: "stopping"}
_ADMF_MAINT = 0x01 | 0x02 | 0x04 | 0x20 | 0x40  # forced, inherited, config, DNS, FQDN
_ADMF_DRAIN = 0x08 | 0x10  # forced, inherited
_CHK_ENABLED = 0x04  # srv_check_state: checks administratively enabled
_CHK_RES_UNKNOWN = 0  # srv_check_result: no result yet, also while a check is running
_CHK_RES_PASSED = 3  # srv_check_result: the last check succeeded
# srv_check_status (HAProxy's enum healthcheck_status) of a passed check: L4OK, L6OK, L7OKD,
# L7OKCD, PROCOK.
_CHK_STATUS_PASSED = frozenset({6, 9, 15, 16, 20})
# The "type" column of "show stat" (management.txt, section 9.1).
_STAT_KIND: dict[str, ProxyKind] = {"0": "frontend", "1": "backend", "2": "server", "3": "listener"}


@dataclass(frozen=True)
class ServerState:
    """One server of a backend, as ``show servers state`` and ``show stat`` report it.

    ``check_status`` and ``status`` are the short texts of ``show stat`` (for example
    ``L7OK`` / ``L4CON`` and ``UP`` / ``DRAIN`` / ``MAINT``); ``sessions`` is its ``scur``,
    the requests in flight on that server right now.
    """

    backend: str
    name: str
    addr: str
    port: int
    admin: AdminState
    operational: OperState
    weight: int
    checks_enabled: bool
    check_passed: bool
    check_status: str
    status: str
    sessions: int
    check_code: str = ""  # the HTTP status (L7*) or the layer's code of the last check
    check_desc: str = ""  # HAProxy's own description of the last check's result

    @property
    def check_words(self) -> str:
        """The last health check's result in words (see :func:`describe_check`)."""
        return describe_check(self.check_status, self.check_code, self.check_desc)

    @property
    def checked_here(self) -> bool:
        """Whether this HAProxy ran the last HTTP check itself. A worker started from a
        server-state file (a reload) shows the old worker's result, with check code 0,
        until its own first check of that server ends; so does a check in progress. A
        result of another layer (L4, L6) carries no code and is taken as it is, as is a
        server whose checks are off."""
        if not self.checks_enabled or not self.check_status.startswith("L7"):
            return True
        return self.check_code not in ("", "0")

    @property
    def healthy(self) -> bool:
        """Whether HAProxy considers the server up, on evidence rather than optimism.

        With checks on, the last check must have passed: a server just taken out of
        maintenance is "up" before any check ran.
        """
        up = self.admin != "maint" and self.operational in ("up", "starting")
        return up and (self.check_passed or not self.checks_enabled)


@dataclass(frozen=True)
class ProxyCounters:
    """The cumulative counters of one ``show stat`` row: a frontend, a backend or a server.

    They count since HAProxy started (or since the server was added) and only grow, so two
    readings taken around some traffic tell what that traffic met. A column HAProxy leaves
    empty for this kind of row reads as 0.

    ``connection_errors`` is ``econ`` (a connection to a server failed), ``response_errors``
    ``eresp`` (a server closed or broke its answer), ``retries`` ``wretr``, ``redispatches``
    ``wredis`` (a retry sent to another server), ``http_5xx`` ``hrsp_5xx``, ``requests``
    ``req_tot`` (HTTP requests; servers count them since HAProxy 2.5), ``sessions``
    ``stot`` (connections, each attempt of a retry included), ``server_aborts``
    ``srv_abrt`` (a server cut an answer HAProxy had begun to pass on: the client gets a
    broken response, no 5xx) and ``internal_errors`` ``eint`` (HAProxy's own errors).
    """

    proxy: str
    name: str
    kind: ProxyKind
    connection_errors: int
    response_errors: int
    retries: int
    redispatches: int
    http_5xx: int
    requests: int
    sessions: int
    server_aborts: int = 0
    internal_errors: int = 0
    response_ms: int = 0  # ``rtime``: mean response time of the last 1024 requests

    @property
    def key(self) -> tuple[str, str]:
        """(proxy, name): ``name`` is FRONTEND or BACKEND for those rows."""
        return (self.proxy, self.name)

    @property
    def failures(self) -> dict[str, int]:
        """The counters that are not zero among those that mean a request met trouble."""
        counts = {
            "econ": self.connection_errors,
            "eresp": self.response_errors,
            "wretr": self.retries,
            "wredis": self.redispatches,
            "hrsp_5xx": self.http_5xx,
            "srv_abrt": self.server_aborts,
            "eint": self.internal_errors,
        }
        return {name: value for name, value in counts.items() if value}


class RuntimeAPI:
    """Commands to one HAProxy process through its admin Unix socket.

    One connection serves every call (and every thread) of this object; threads waiting on
    servers share one look per ``tick``. ``close`` (or ``with``) ends the connection.

    Args:
        socket_path: the ``stats socket`` path, which must be at ``level admin``.
        timeout: seconds allowed for connecting and for each read of one answer.
        tick: seconds between two looks at the servers being waited on.
        check_map: the map of HTTP check paths by server name (as HAProxy names the file)
            that servers added with a ``check_path`` get their entry in.
    """

    def __init__(
        self,
        socket_path: str,
        timeout: float = 5.0,
        tick: float = TICK,
        check_map: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.check_map = check_map
        self.channel = Channel(socket_path, timeout)
        self.watcher: Watcher[ServerState] = Watcher(self._look, tick)

    def close(self) -> None:
        """Close the connection; a later command opens a new one."""
        self.channel.close()

    def __enter__(self) -> RuntimeAPI:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the raw channel --------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Send one command and return HAProxy's whole answer.

        Args:
            line: one command, without the trailing newline.

        Returns:
            The answer with surrounding whitespace removed ("" for silent successes).

        Raises:
            ValueError: the line holds a newline or ';' (which would chain commands).
            EngineError: the socket is missing, refuses, or does not answer in time.
        """
        return self.commands([line])[0]

    def commands(self, lines: Sequence[str]) -> list[str]:
        """Send several commands in one round trip; return their answers in order.

        HAProxy runs each even when an earlier one failed: batch only commands that are
        harmless after a failure of the ones before them.

        Raises:
            ValueError: a line holds a newline or ';', or there is no line.
            EngineError: the socket is missing, refuses, or does not answer in time.
        """
        if not lines:
            raise ValueError("no command to send")
        for line in lines:
            if "\n" in line or _UNESCAPED_SEMICOLON.search(line):
                # ';' chains commands on this socket: never let a name smuggle one in.
                raise ValueError(f"one command at a time, without ';' or newlines: {line!r}")
        return self.channel.run(lines)

    def _expect(self, line: str, *accepted: str) -> str:
        """Run a command and insist on one of the accepted answers."""
        return self._expect_all([(line, accepted)])[0]

    def _expect_all(self, steps: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """Run commands in one round trip; the first unexpected answer raises."""
        answers = self.commands([line for line, _ in steps])
        for (line, accepted), answer in zip(steps, answers, strict=True):
            if answer not in accepted:
                error = NotFoundError if answer in _NOT_FOUND else EngineError
                raise error(
                    f"HAProxy refused {line!r}: {answer or '(no answer)'}",
                    command=line,
                    stderr=answer,
                )
        return answers

    # -- single commands --------------------------------------------------------------------

    def add_server(self, backend: str, name: str, addr: str, port: int, check: bool) -> None:
        """Register a new server; it starts in maintenance and receives nothing yet.

        Args:
            backend: an existing backend with a dynamic algorithm (corral's use roundrobin).
            name: a name not used in that backend.
            addr: an IP address; dynamic servers never resolve host names in HAProxy 2.6.
            port: the server's TCP port.
            check: configure health checks (the backend's ``option httpchk`` if any);
                they still have to be turned on with ``enable_health``.

        Raises:
            ValueError: a malformed name, address or port.
            NotFoundError: the backend does not exist.
            EngineError: HAProxy refused, for example because the name is taken.
        """
        self._expect(_add_line(backend, name, addr, port, check), _ADDED)

    def enable_health(self, backend: str, name: str) -> None:
        """Start the health checks of a server added with ``check=True``.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: HAProxy answered anything but silence.
        """
        self._expect(f"enable health {_target(backend, name)}", "")

    def set_state(self, backend: str, name: str, state: AdminState) -> None:
        """Set a server's administrative state.

        Args:
            state: ``ready`` takes traffic, ``drain`` keeps current requests and health
                checks but gets no new traffic, ``maint`` stops traffic and checks.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: HAProxy answered anything but silence.
        """
        self._expect(_state_line(backend, name, state), "")

    def set_states(self, backend: str, states: Sequence[tuple[str, AdminState]]) -> None:
        """Set several servers' administrative states in one round trip (a traffic switch).

        Raises:
            NotFoundError: one of the servers is missing (the others were still set).
            EngineError: HAProxy answered anything but silence.
        """
        if states:
            self._expect_all([(_state_line(backend, n, s), ("",)) for n, s in states])

    def set_weights(self, backend: str, weights: Mapping[str, int]) -> None:
        """Give servers of ``backend`` these weights (0-256), one round trip: a server's
        share of new requests is its weight over the sum of its backend's.

        Raises:
            ValueError: a weight out of range or a malformed name.
            EngineError: HAProxy refused one.
        """
        for name, weight in weights.items():
            if not 0 <= weight <= 256:
                raise ValueError(f"weight {weight} of {backend}/{name} is not in 0-256")
        steps = [(f"set weight {_target(backend, n)} {w}", ("",)) for n, w in weights.items()]
        self._expect_all(steps)

    def shutdown_sessions(self, backend: str, name: str) -> None:
        """Cut every request still in flight on a server (the last resort of a drain).

        Raises:
            NotFoundError: no such backend or server.
            EngineError: HAProxy answered anything but silence.
        """
        self._expect(f"shutdown sessions server {_target(backend, name)}", "")

    def del_server(self, backend: str, name: str) -> None:
        """Delete a server, which must be in maintenance with no connection left.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: HAProxy refused, e.g. the server is not in maintenance or still has
                connections.
        """
        self._expect(f"del server {_target(backend, name)}", _DELETED)

    # -- reading state ----------------------------------------------------------------------

    def servers(self, backend: str) -> list[ServerState]:
        """Every server of a backend, in HAProxy's order.

        Returns:
            One ``ServerState`` per server; empty when the backend has none.

        Raises:
            NotFoundError: the backend does not exist.
            EngineError: the socket failed or an answer did not parse.
        """
        return self._servers(backend, with_stats=True)

    def server(self, backend: str, name: str) -> ServerState:
        """One server of a backend.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: the socket failed or an answer did not parse.
        """
        _check_name(name)
        for srv in self.servers(backend):
            if srv.name == name:
                return srv
        raise NotFoundError(f"no server {backend}/{name} in HAProxy", name=f"{backend}/{name}")

    def current_sessions(self, backend: str, name: str) -> int:
        """Requests in flight on one server right now (``scur``).

        Raises:
            NotFoundError: no such backend or server.
            EngineError: the socket failed or an answer did not parse.
        """
        return self.server(backend, name).sessions

    def _servers(self, backend: str, with_stats: bool) -> list[ServerState]:
        """A backend's servers; ``show stat`` (sessions, check texts) only ``with_stats``."""
        _check_name(backend)
        line = f"show servers state {backend}"
        rows = _parse_state(line, self._expect_table(line))
        if not rows:
            return []
        stats = self._stats(rows[0]["be_id"]) if with_stats else {}
        try:
            return [_server(backend, row, stats.get(row["srv_name"], {})) for row in rows]
        except (KeyError, ValueError) as exc:
            raise EngineError(f"unexpected answer to {line!r}: {exc}", command=line) from exc

    def _look(self, backend: str, with_stats: bool) -> dict[str, ServerState]:
        return {s.name: s for s in self._servers(backend, with_stats)}

    def _expect_table(self, line: str) -> str:
        answer = self.command(line)
        if answer in _NOT_FOUND:
            raise NotFoundError(f"HAProxy: {answer}", command=line, stderr=answer)
        return answer

    def _stats(self, backend_id: str) -> dict[str, dict[str, str]]:
        """The ``show stat`` CSV rows of one backend's servers, by server name."""
        line = f"show stat {backend_id} 4 -1"  # by id: a frontend may share the name
        lines = self._expect_table(line).splitlines()
        if not lines or not lines[0].startswith("# "):
            raise EngineError(
                f"unexpected answer to {line!r}", command=line, stderr="".join(lines[:1])
            )
        header = lines[0][2:].split(",")
        rows = (dict(zip(header, raw.split(","), strict=False)) for raw in lines[1:] if raw)
        return {row["svname"]: row for row in rows}

    def counters(self) -> list[ProxyCounters]:
        """The counters of every frontend, backend and server (``show stat``), typed.

        Returns:
            One ``ProxyCounters`` per row, in HAProxy's order.

        Raises:
            EngineError: the socket failed or the answer did not parse.
        """
        line = "show stat"
        return parse_stat(line, self.command(line))

    # -- procedures -------------------------------------------------------------------------

    def wait_healthy(self, backend: str, name: str, timeout: float) -> bool:
        """Wait until a server is up with a passed health check (see ``ServerState.healthy``).

        Every thread waiting here shares one look at HAProxy per tick.

        Returns:
            True once healthy, False if ``timeout`` seconds passed first.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: the socket failed.
        """
        _target(backend, name)  # checked here: a bad name must fail its caller, not the looker
        return self.watcher.wait(backend, name, lambda s: s.healthy, timeout)

    def wait_checked_healthy(self, backend: str, name: str, timeout: float) -> bool:
        """Like :meth:`wait_healthy`, but only a check this HAProxy ran itself counts (see
        ``ServerState.checked_here``): after a reload, a result carried over from the old
        worker would pass a server that the new configuration's check fails.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: the socket failed.
        """
        _target(backend, name)
        return self.watcher.wait(backend, name, lambda s: s.healthy and s.checked_here, timeout)

    def set_check_path(self, name: str, path: str) -> None:
        """Make HAProxy's HTTP check of server ``name`` ask for ``path`` (the check map).

        Raises:
            ValueError: no check map was given, or a malformed name or path.
            EngineError: HAProxy refused.
        """
        self._expect_all(_check_path_lines(self.check_map, name, path))

    def forget_check_path(self, name: str) -> None:
        """Remove server ``name``'s entry from the check map; a missing one is fine."""
        if self.check_map is not None:
            _check_name(name)
            self._expect(f"del map {self.check_map} {name}", "", "Key not found.")

    def prepare(
        self, backend: str, name: str, addr: str, port: int, check_path: str | None = None
    ) -> None:
        """Add a health-checked server that is checked but takes no traffic (DRAIN).

        Two round trips: the checks are only turned on once ``add server`` succeeded, so
        a name already taken never has its server's state changed. With ``check_path``,
        the server's HTTP check asks for that path (set before its checks start).

        Raises:
            EngineError: HAProxy refused a step.
        """
        self.add_server(backend, name, addr, port, check=True)
        self._start_checks(backend, name, check_path)

    def _start_checks(self, backend: str, name: str, check_path: str | None) -> None:
        """Set the check's path, turn on a new server's checks and leave maintenance into
        DRAIN, one round trip."""
        steps = _check_path_lines(self.check_map, name, check_path) if check_path else []
        steps += [
            (f"enable health {_target(backend, name)}", ("",)),
            (_state_line(backend, name, "drain"), ("",)),
        ]
        self._expect_all(steps)

    def bring_up(
        self,
        backend: str,
        name: str,
        addr: str,
        port: int,
        health_timeout: float,
        check_path: str | None = None,
    ) -> None:
        """Add a health-checked server and let it take traffic only once a check passed.

        The server leaves maintenance into DRAIN, where it is checked but gets no requests;
        going straight to READY would make HAProxy route to it before its first check.
        On failure the server is removed again so the backend holds no stray entry.

        Raises:
            EngineError: HAProxy refused a step, or the server was not healthy within
                ``health_timeout`` seconds.
        """
        self.add_server(backend, name, addr, port, check=True)
        try:
            self._start_checks(backend, name, check_path)
            if not self.wait_healthy(backend, name, health_timeout):
                state = self.server(backend, name)
                raise EngineError(
                    f"{backend}/{name} at {addr}:{port} is not healthy after "
                    f"{health_timeout:g}s: {state.check_words}",
                    command="wait healthy",
                    stderr=state.status,
                )
            self.set_state(backend, name, "ready")
        except EngineError:
            self._discard(backend, name)
            raise

    def drain_and_remove(self, backend: str, name: str, drain_timeout: float) -> bool:
        """Take a server out of rotation without failing a request, then delete it.

        Sets DRAIN (no new requests), waits until no request is in flight, sets MAINT and
        deletes the server. Requests still running after ``drain_timeout`` are cut.

        Returns:
            True if the server drained on its own, False if sessions had to be cut.

        Raises:
            NotFoundError: no such backend or server.
            EngineError: HAProxy refused a step or kept the server.
        """
        self.set_state(backend, name, "drain")
        drained = self._wait_idle(backend, name, drain_timeout)
        self.set_state(backend, name, "maint")
        if not drained:
            self.shutdown_sessions(backend, name)
        self._delete_when_free(backend, name, grace=max(2.0, self.timeout))
        # The server is gone: a leftover map entry is inert (the next server of that name
        # replaces it), so failing to remove it must not fail the removal.
        with contextlib.suppress(EngineError):
            self.forget_check_path(name)
        return drained

    def _wait_idle(self, backend: str, name: str, timeout: float) -> bool:
        _target(backend, name)
        return self.watcher.wait(backend, name, _idle, timeout, sessions=True)

    def _delete_when_free(self, backend: str, name: str, grace: float) -> None:
        # Connections can outlive scur by a moment (a response still being flushed, or
        # an idle kept-alive one being closed), and HAProxy then refuses the delete: try
        # again after the shared watcher's next look, not in a loop of this server's own.
        deadline = time.monotonic() + grace
        line = f"del server {_target(backend, name)}"
        while True:
            answer = self._expect(line, _DELETED, _BUSY)
            if answer == _DELETED:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineError(
                    f"HAProxy kept {backend}/{name}: {answer}", command=line, stderr=answer
                )
            self.watcher.wait(backend, name, _idle, remaining, sessions=True)

    def _discard(self, backend: str, name: str) -> None:
        """Best-effort removal of a server that failed to come up."""
        try:
            self.set_state(backend, name, "maint")
            self.shutdown_sessions(backend, name)
            self._delete_when_free(backend, name, grace=2.0)
            self.forget_check_path(name)
        except EngineError:
            pass  # the original error matters more; a leftover server in MAINT is inert


def worker_pid(api: RuntimeAPI) -> int | None:
    """The pid of the worker answering on ``api``'s socket, or None if none answers."""
    try:
        info = api.command("show info")
    except EngineError:
        return None
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key == "Pid" and value.strip().isdigit():
            return int(value)
    return None


def worker_view(
    api: RuntimeAPI, backends: Sequence[str]
) -> tuple[str, dict[tuple[str, str], ServerState]]:
    """What the one worker that takes this connection says, in one round trip: its
    ``node`` name (``show info``) and the states of ``backends``' servers (without the
    ``show stat`` columns). Two HAProxy processes sharing a socket (one taking over from
    the other) answer on it at random: the node name tells which one answered.

    Raises:
        EngineError: the socket failed or an answer did not parse.
    """
    lines = ["show info", *(f"show servers state {_check_backend(b)}" for b in backends)]
    answers = api.commands(lines)
    node = next(
        (
            v.strip()
            for k, _, v in (ln.partition(":") for ln in answers[0].splitlines())
            if k == "node"
        ),
        "",
    )
    servers: dict[tuple[str, str], ServerState] = {}
    for backend, line, answer in zip(backends, lines[1:], answers[1:], strict=True):
        try:
            for row in _parse_state(line, answer):
                server = _server(backend, row, {})
                servers[(backend, server.name)] = server
        except (KeyError, ValueError) as exc:
            raise EngineError(f"unexpected answer to {line!r}: {exc}", command=line) from exc
    return node, servers


def _check_backend(name: str) -> str:
    _check_name(name)
    return name


def reload_master(master_socket: str, timeout: float = 5.0) -> None:
    """Ask HAProxy's master (``-W -S``) to reload: it starts a worker on the configuration
    file as it is now and hands it the listening sockets, and the old worker finishes the
    requests it has. The master closes the connection once it re-executes.

    Raises:
        EngineError: the master socket is missing or does not answer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(master_socket)
            sock.sendall(b"reload\n")
            while sock.recv(4096):
                pass
    except OSError as exc:
        raise EngineError(
            f"HAProxy's master at {master_socket} did not take the reload: {exc}",
            command="reload",
            stderr=str(exc),
        ) from exc


def _idle(server: ServerState) -> bool:
    return server.sessions == 0


def _add_line(backend: str, name: str, addr: str, port: int, check: bool) -> str:
    target = _target(backend, name)
    ip = _ip(addr)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    where = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    options = (
        f" check inter {CHECK_INTER} downinter {CHECK_DOWNINTER} fall {CHECK_FALL}"
        f" rise {CHECK_RISE}"
        if check
        else ""
    )
    return f"add server {target} {where}{options}"


def _check_path_lines(
    check_map: str | None, name: str, path: str
) -> list[tuple[str, Sequence[str]]]:
    """Replace server ``name``'s check path: a key may hold several entries, so every
    old one goes first (a missing one is fine)."""
    if check_map is None:
        raise ValueError("this runtime API was given no check map")
    _check_name(name)
    if not _CHECK_PATH.match(path) or "\\" in path:
        raise ValueError(f"invalid check path {path!r}")
    escaped = path.replace(";", "\\;")  # ';' would end the command
    return [
        (f"del map {check_map} {name}", ("", "Key not found.")),
        (f"add map {check_map} {name} {escaped}", ("",)),
    ]


def _state_line(backend: str, name: str, state: AdminState) -> str:
    if state not in ("ready", "drain", "maint"):
        raise ValueError(f"unknown server state {state!r}")
    return f"set server {_target(backend, name)} state {state}"


def _check_name(value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"invalid HAProxy name {value!r}: use letters, digits, -_.:")


def _target(backend: str, name: str) -> str:
    _check_name(backend)
    _check_name(name)
    return f"{backend}/{name}"


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(addr)
    except ValueError as exc:
        raise ValueError(f"server address must be an IP address, not {addr!r}") from exc


def _parse_state(line: str, answer: str) -> list[dict[str, str]]:
    """Rows of a ``show servers state`` answer (format version 1) as column -> value."""
    lines = answer.splitlines()
    if len(lines) < 2 or lines[0] != "1" or not lines[1].startswith("# "):
        raise EngineError(f"unexpected answer to {line!r}", command=line, stderr=answer[:200])
    header = lines[1][2:].split()
    try:
        return [
            dict(zip(header, raw.split(), strict=True))
            for raw in lines[2:]
            if raw and not raw.startswith("#")
        ]
    except ValueError as exc:  # a row with more or fewer fields than the header
        raise EngineError(
            f"unexpected answer to {line!r}", command=line, stderr=answer[:200]
        ) from exc


def _server(backend: str, row: dict[str, str], stat: dict[str, str]) -> ServerState:
    admin_flags = int(row["srv_admin_state"])
    admin: AdminState = "ready"
    if admin_flags & _ADMF_MAINT:
        admin = "maint"
    elif admin_flags & _ADMF_DRAIN:
        admin = "drain"
    return ServerState(
        backend=backend,
        name=row["srv_name"],
        addr=row["srv_addr"],
        port=int(row["srv_port"]),
        admin=admin,
        operational=_OPER.get(int(row["srv_op_state"]), "down"),
        weight=int(row["srv_uweight"]),
        checks_enabled=bool(int(row["srv_check_state"]) & _CHK_ENABLED),
        check_passed=_check_passed(int(row["srv_check_result"]), int(row["srv_check_status"])),
        # "* L7STS": HAProxy marks the last result with "* " while the next check runs
        check_status=stat.get("check_status", "").removeprefix("* "),
        status=stat.get("status", ""),
        sessions=int(stat.get("scur") or 0),
        check_code=stat.get("check_code", ""),
        check_desc=stat.get("check_desc", ""),
    )


def _check_passed(result: int, status: int) -> bool:
    """Whether the server's last finished check passed.

    HAProxy sets the result to "unknown" when a check starts and keeps the last check's
    status until it ends, so a server read while its check runs has an unknown result and
    the last status; reading that as a failure stopped a healthy canary under load ("the
    health check got HTTP 0"). A server never checked has status INI, not a passing one.
    """
    if result == _CHK_RES_UNKNOWN:
        return status in _CHK_STATUS_PASSED
    return result == _CHK_RES_PASSED


#: HAProxy's short check results (``show stat``'s check_status) in words; ``{code}`` is
#: the check_code column (the HTTP status for the L7 results).
_CHECK_WORDS = {
    "UNK": "no health check has run yet",
    "INI": "the first health check has not finished yet",
    "SOCKERR": "the health check could not open a socket",
    "L4OK": "the health check could connect",
    "L4TOUT": "the health check's connection timed out (nothing answered on the port)",
    "L4CON": "the health check's connection was refused (nothing listens on the port)",
    "L6OK": "the health check's TLS handshake passed",
    "L6TOUT": "the health check's TLS handshake timed out",
    "L6RSP": "the health check got an answer that is not TLS",
    "L7OK": "the health check got HTTP {code}",
    "L7OKC": "the health check got HTTP {code} (accepted conditionally)",
    "L7TOUT": "the health check got no HTTP answer in time",
    "L7RSP": "the health check got an answer that is not HTTP",
    "L7STS": "the health check got HTTP {code}",
    "PROCERR": "the health check program failed",
    "PROCTOUT": "the health check program timed out",
    "PROCOK": "the health check program passed",
}


def describe_check(status: str, code: str = "", desc: str = "") -> str:
    """HAProxy's check result (``L7STS``, ``L4CON``...) as a sentence an operator can read,
    e.g. ``describe_check("L7STS", "404", "Not Found")`` is "the health check got HTTP 404
    (Not Found)". A status HAProxy reports while a check runs ("* L7OK") is read without
    its star; an unknown one is named as it is."""
    short = status.removeprefix("*").strip()
    if not short:
        return "no health check has run yet"
    words = _CHECK_WORDS.get(short, f"the health check reported {short}")
    words = words.format(code=code or "?")
    detail = desc.strip()
    said = set(words.lower().replace("'", " ").split())
    # The L7 results carry their HTTP code already; HAProxy's own text for them is the
    # same code hex-escaped ("returned code <3C>404<3E>").
    if detail and short not in _SAYS_CODE and not set(detail.lower().split()) <= said:
        words += f" ({detail})"
    return words


_SAYS_CODE = ("L7OK", "L7OKC", "L7STS")


def failure_growth(
    first: Mapping[tuple[str, str], ProxyCounters], last: Mapping[tuple[str, str], ProxyCounters]
) -> dict[tuple[str, str], dict[str, int]]:
    """How much each row's failure counters (``ProxyCounters.failures``) grew between readings.

    Args:
        first: the rows of the first reading, by ``key``.
        last: the newest reading of every row seen since (a row absent from ``first``, such
            as a server added meanwhile, grew from zero).

    Returns:
        ``{(proxy, name): {counter: growth}}`` for the rows where something grew; a counter
        that went down (HAProxy restarted) counts its new value, which is all growth.
    """
    grown: dict[tuple[str, str], dict[str, int]] = {}
    for key, row in last.items():
        before = first[key].failures if key in first else {}
        growth = {}
        for counter, value in row.failures.items():
            old = before.get(counter, 0)
            growth[counter] = value - old if value >= old else value
        if any(growth.values()):
            grown[key] = {counter: n for counter, n in growth.items() if n}
    return grown


def parse_stat(line: str, answer: str) -> list[ProxyCounters]:
    """The rows of a ``show stat`` CSV answer as typed counters.

    Args:
        line: the command that was sent, for the error message.
        answer: HAProxy's answer: a ``# pxname,svname,...`` header, then one row per line.

    Raises:
        EngineError: the header is missing, a row is short, or a counter is not a number.
    """
    lines = answer.splitlines()
    if not lines or not lines[0].startswith("# pxname,svname,"):
        raise EngineError(f"unexpected answer to {line!r}", command=line, stderr=answer[:200])
    header = lines[0][2:].split(",")
    try:
        return [
            _counters(dict(zip(header, raw.split(","), strict=True))) for raw in lines[1:] if raw
        ]
    except (KeyError, ValueError) as exc:  # a short row, a missing column, a non-number
        raise EngineError(
            f"unexpected answer to {line!r}: {exc}", command=line, stderr=answer[:200]
        ) from exc


def _counters(row: dict[str, str]) -> ProxyCounters:
    def count(column: str) -> int:
        return int(row.get(column) or 0)

    return ProxyCounters(
        proxy=row["pxname"],
        name=row["svname"],
        kind=_STAT_KIND[row["type"]],
        connection_errors=count("econ"),
        response_errors=count("eresp"),
        retries=count("wretr"),
        redispatches=count("wredis"),
        http_5xx=count("hrsp_5xx"),
        requests=count("req_tot"),
        sessions=count("stot"),
        server_aborts=count("srv_abrt"),
        internal_errors=count("eint"),
        response_ms=count("rtime"),
    )
