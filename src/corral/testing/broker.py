"""The one way a sandboxed role test reaches a container: an exec broker on a Unix socket.

The role's tests run in a sandbox without Podman's socket or storage (see
:mod:`corral.testing.sandbox`); testinfra's ``host`` still has to run commands inside
the environment's instances. The broker, a thread of corral's own process, listens on a
socket inside the run's folder and answers one request per connection, each a JSON line::

    {"container": "demo-web-t1-1", "command": "cat /etc/os-release"}

with ``{"status": 0, "stdout": "...", "stderr": ""}``, or ``{"error": "..."}``. It runs
``/bin/sh -c COMMAND`` (the container's shell, as the container's user) through the
engine, and only in a container the environment named: a request for any other container
(the edge, another fleet's instance, the host) is refused.

Where the engine can open a shell in a container, the commands for it go through one
long-lived shell (:mod:`corral.testing.shell`): a command costs a fork there instead of
an exec. A request that comes while that shell is busy, or whose shell could not be
opened, is run with ``exec_in`` as before.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from corral.engines.values import ExecResult
from corral.errors import CorralError
from corral.testing.shell import OpenShell, Shell, ShellGone

#: How the broker runs a command in a container: (container, argv, timeout) -> result.
ExecIn = Callable[[str, Sequence[str], float], ExecResult]

#: The longest request line the broker reads (a command is a shell line, not a file).
MAX_REQUEST_BYTES = 1 << 20
#: How many commands run at once; more requests wait (a test cannot fork-bomb the host
#: with ``podman exec`` processes).
MAX_RUNNING = 4


class ExecBroker:
    """Serves exec requests for ``containers`` on ``path`` while the ``with`` block runs.

    Args:
        path: where the socket is made (inside the sandbox's writable run folder).
        containers: the only containers a request may name.
        exec_in: how to run a command in one; None: every request is refused (an engine
            that cannot run commands in a container).
        timeout: seconds one command may take.
        open_shell: how to open a long-lived shell in one (``Engine.shell``); None:
            every command is an ``exec_in``.
    """

    def __init__(
        self,
        path: Path,
        containers: Collection[str],
        exec_in: ExecIn | None,
        timeout: float,
        open_shell: OpenShell | None = None,
    ) -> None:
        self.path = path
        self.containers = frozenset(containers)
        self.exec_in = exec_in
        self.timeout = timeout
        self.open_shell = open_shell
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.BoundedSemaphore(MAX_RUNNING)
        self._shells: dict[str, Shell | None] = {}  # None: could not be opened
        self._shell_locks = {name: threading.Lock() for name in self.containers}

    def __enter__(self) -> ExecBroker:
        broker = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
                self.wfile.write(json.dumps(broker.answer(line)).encode() + b"\n")

        server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="exec-broker")
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        for shell in self._shells.values():
            if shell is not None:
                shell.close()
        with contextlib.suppress(OSError):  # the tests may have put anything there
            self.path.unlink(missing_ok=True)

    def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line (see the module's docstring)."""
        if len(line) > MAX_REQUEST_BYTES:
            return {"error": f"the request is longer than {MAX_REQUEST_BYTES} bytes"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "the request is not a JSON line"}
        container = request.get("container") if isinstance(request, dict) else None
        command = request.get("command") if isinstance(request, dict) else None
        if not isinstance(container, str) or not isinstance(command, str):
            return {"error": "a request names a container and a command (strings)"}
        if container not in self.containers:
            return {"error": f"{container} is not an instance of this test environment"}
        if self.exec_in is None:
            return {"error": "this engine cannot run commands in a container"}
        try:
            with self._running:
                result = self._run(self.exec_in, container, command)
        except CorralError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # a test's command must not crash corral
            return {"error": f"the command's output could not be read: {exc}"}
        return {"status": result.status, "stdout": result.stdout, "stderr": result.stderr}

    def _run(self, exec_in: ExecIn, container: str, command: str) -> ExecResult:
        """``command`` run in ``container``'s shell if it is free, else with ``exec_in``."""
        lock = self._shell_locks[container]
        if self.open_shell is None or not lock.acquire(blocking=False):
            return exec_in(container, ["/bin/sh", "-c", command], self.timeout)
        try:
            shell = self._shell(container)
            if shell is None:
                return exec_in(container, ["/bin/sh", "-c", command], self.timeout)
            try:
                return shell.run(command, self.timeout)
            except ShellGone as gone:
                self._shells.pop(container, None)  # the next command opens another
                if gone.ran:
                    raise
                return exec_in(container, ["/bin/sh", "-c", command], self.timeout)
        finally:
            lock.release()

    def _shell(self, container: str) -> Shell | None:
        """``container``'s shell, opened on first use (the caller holds its lock)."""
        if container not in self._shells:
            assert self.open_shell is not None
            try:
                self._shells[container] = Shell(container, self.open_shell)
            except (CorralError, OSError):
                self._shells[container] = None
        return self._shells[container]


def request(path: Path, container: str, command: str, timeout: float | None) -> dict[str, Any]:
    """Ask the broker at ``path`` to run ``command`` in ``container`` (the plugin's side)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        payload = {"container": container, "command": command}
        conn.sendall(json.dumps(payload).encode() + b"\n")
        with conn.makefile("rb") as answer:
            data = json.loads(answer.readline())
    if not isinstance(data, dict):
        raise ValueError("the exec broker's answer is not a JSON object")
    return data
