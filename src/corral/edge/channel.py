"""The transport under ``RuntimeAPI``: one persistent admin-socket connection, and one watcher.

``Channel`` keeps a single connection to HAProxy's stats socket in interactive mode
(``prompt``, management.txt section 9.3): each answer is followed by a newline and ``> ``,
so commands can be written together and their answers split back apart, one round trip
for a batch. Threads share it under a lock; a round trip on a Unix socket costs tens of
microseconds, far less than the connection per command it replaces, and the stats socket
accepts only ``stats maxconn`` connections at once (10 by default): a connection per
command and per waiting instance overflowed its accept queue at 60 instances (EAGAIN).

``Watcher`` answers "wait until this server is healthy / idle" for every thread at once:
whichever waiter finds the newest look older than a tick reads the watched backends
(``show servers state`` and, only when someone waits for sessions, ``show stat``) and wakes
the others, so HAProxy is asked once per tick however many servers are waited on.
"""

from __future__ import annotations

import errno
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from corral.errors import CorralError, EngineError, NotFoundError

PROMPT = b"\n> "
# Connecting again while the socket's accept queue is full (EAGAIN) or while HAProxy is
# (re)starting and nothing accepts yet (ECONNREFUSED) is worth a few tries, spaced out.
_RETRY_CONNECT = {errno.EAGAIN, errno.ECONNREFUSED}
_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.25

S = TypeVar("S")
_PATIENCE = 1.0  # seconds a waiter sleeps at most while another thread looks


class Channel:
    """One interactive connection to an admin socket, opened on first use, shared by threads.

    Args:
        socket_path: the ``stats socket`` path.
        timeout: seconds allowed for connecting (retries included) and for each read.
    """

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.round_trips = 0  # how many times commands were written and answered (tests)
        self.opened = 0  # how many connections were opened (tests)

    def run(self, lines: Sequence[str]) -> list[str]:
        """Write ``lines`` at once and return their answers, stripped, in order.

        A connection HAProxy closed while idle (``stats timeout``) is opened again and the
        batch written once more: nothing of it was read by HAProxy then.

        Raises:
            EngineError: the socket is missing, refuses, closes or does not answer in time.
        """
        payload = b"".join(line.encode() + b"\n" for line in lines)
        with self._lock:
            reused = self._sock is not None
            try:
                return self._round_trip(payload, len(lines))
            except (BrokenPipeError, ConnectionResetError, _Closed) as exc:
                self._drop()
                if not reused or (isinstance(exc, _Closed) and exc.partial):
                    raise self._error(lines, exc) from exc
            except OSError as exc:  # TimeoutError, FileNotFoundError, refusals
                self._drop()
                raise self._error(lines, exc) from exc
            try:
                return self._round_trip(payload, len(lines))
            except OSError as exc:
                self._drop()
                raise self._error(lines, exc) from exc

    def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        with self._lock:
            self._drop()

    def _round_trip(self, payload: bytes, count: int) -> list[str]:
        sock = self._sock or self._open()
        sock.sendall(payload)
        answers = _read_prompts(sock, count)
        self.round_trips += 1
        return answers

    def _open(self) -> socket.socket:
        sock = _connect(self.socket_path, self.timeout)
        try:
            sock.sendall(b"prompt\n")
            _read_prompts(sock, 1)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.opened += 1
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _error(self, lines: Sequence[str], exc: OSError) -> EngineError:
        return EngineError(
            f"HAProxy runtime API at {self.socket_path} failed: {exc}",
            command="; ".join(lines),
            stderr=str(exc),
        )


class _Closed(ConnectionError):
    """HAProxy closed the connection before answering everything."""

    def __init__(self, partial: bool) -> None:
        super().__init__("the admin socket closed the connection")
        self.partial = partial  # some answer was read: HAProxy did run commands


def _connect(path: str, timeout: float) -> socket.socket:
    """Connect, retrying with back-off while the socket is busy or not accepting yet."""
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in _RETRY_CONNECT or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE)


def _read_prompts(sock: socket.socket, count: int) -> list[str]:
    """Read until ``count`` prompts arrived; return the text before each one."""
    buffer = b""
    while buffer.count(PROMPT) < count or not buffer.endswith(PROMPT):
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed(partial=bool(buffer))
        buffer += chunk
    # Every answer ends with "\n> " (an output's own last newline excepted), so splitting
    # on it gives the answers; the piece after the last prompt is empty.
    return [part.decode(errors="replace").strip() for part in buffer.split(PROMPT)[:count]]


class Watcher(Generic[S]):
    """Waits on servers for many threads with one look at HAProxy per tick.

    Args:
        look: reads one backend's servers, by name; with sessions (``show stat``) when
            its second argument is true.
        tick: seconds between two looks.
    """

    def __init__(self, look: Callable[[str, bool], dict[str, S]], tick: float) -> None:
        self._look = look
        self.tick = tick
        self._cond = threading.Condition()
        self._backends: Counter[str] = Counter()
        self._sessions: Counter[str] = Counter()  # backends whose waiters need ``show stat``
        self._seen: dict[str, dict[str, S] | CorralError] = {}
        self._taken = -math.inf  # when the newest look began
        self._looking = False
        self.looks = 0  # how many looks were taken (tests)

    def wait(
        self,
        backend: str,
        name: str,
        done: Callable[[S], bool],
        timeout: float,
        sessions: bool = False,
    ) -> bool:
        """Wait until ``done`` holds for the server in a look taken after this call began.

        Returns:
            True once it holds, False if ``timeout`` passed first (after one look at least).

        Raises:
            NotFoundError: the server (or its backend) is not there.
            EngineError: HAProxy could not be read.
        """
        since = time.monotonic()
        deadline = since + timeout
        with self._cond:
            self._backends[backend] += 1
            self._sessions[backend] += int(sessions)
            try:
                return self._wait(backend, name, done, since, deadline)
            finally:
                self._backends -= Counter({backend: 1})
                self._sessions -= Counter({backend: int(sessions)})

    def _wait(
        self, backend: str, name: str, done: Callable[[S], bool], since: float, deadline: float
    ) -> bool:
        while True:
            now = time.monotonic()
            if self._taken >= since:  # only a look begun after the question can answer it
                if done(self._server(backend, name)):
                    return True
                if now >= deadline:
                    return False
            if self._looking:
                self._cond.wait(_PATIENCE)  # the looking thread wakes everyone when done
                continue
            due = self._taken + self.tick
            if now >= due:
                self._take_look()
            else:
                self._cond.wait(due - now)

    def _server(self, backend: str, name: str) -> S:
        seen = self._seen.get(backend)
        if isinstance(seen, CorralError):
            raise seen
        if seen is None or name not in seen:
            raise NotFoundError(f"no server {backend}/{name} in HAProxy", name=f"{backend}/{name}")
        return seen[name]

    def _take_look(self) -> None:
        """Read every watched backend once, without holding the lock; wake the waiters."""
        wanted = [(backend, self._sessions[backend] > 0) for backend in self._backends]
        self._looking = True
        started = time.monotonic()
        seen: dict[str, dict[str, S] | CorralError] = {}
        self._cond.release()
        try:
            for backend, sessions in wanted:
                seen[backend] = self._read(backend, sessions)
        finally:
            self._cond.acquire()
            self._looking = False
            self._cond.notify_all()
        self._seen = seen
        self._taken = started
        self.looks += 1

    def _read(self, backend: str, sessions: bool) -> dict[str, S] | CorralError:
        try:
            return self._look(backend, sessions)
        except CorralError as exc:  # handed to that backend's waiters, not to the looker
            return exc
