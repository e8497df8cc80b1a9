"""The append-only repository server corral runs for a repository folder on its host.

Every backup corral makes goes through ``rclone serve restic --append-only`` (Debian's
rclone): it adds files and refuses to delete or overwrite one (HTTP 403), so no command
of the deploy path (``corral backup``, the pre-deploy backup, a restore or a drill) can
remove or rewrite a snapshot, whatever the spec or a role's image asks. The server
listens on 127.0.0.1 of corral's host, for the one command that started it, on a port of
its own; containers (whose 127.0.0.1 is their own) cannot reach it, and they are never
told the repository's address or password anyway. Pruning does not go through it (see
``corral backup --prune`` and docs/backups.md).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from corral.backup.restic import require_tool
from corral.errors import BackupError
from corral.hostfiles import private_dir

START_TIMEOUT = 15.0


@contextlib.contextmanager
def append_only_server(folder: Path) -> Iterator[str]:
    """Serve the repository folder ``folder`` append-only while the block runs; yield the
    restic URL (``rest:http://127.0.0.1:PORT/``) to reach it by.

    Raises:
        MissingToolError: rclone is not installed.
        BackupError: the server did not start.
    """
    rclone = require_tool("rclone")
    private_dir(folder, take_over=False)
    with tempfile.TemporaryFile() as log:
        proc, port = _start(rclone, folder, log)
        try:
            yield f"rest:http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start(rclone: str, folder: Path, log: IO[bytes]) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server on a free port (tried again if another program took it first)."""
    last = ""
    for _ in range(3):
        port = _free_port()
        argv = [rclone, "serve", "restic", "--append-only", "--addr", f"127.0.0.1:{port}"]
        # No rclone configuration: the folder is a plain local path.
        argv += ["--config", "/dev/null", "--log-level", "ERROR", str(folder)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except OSError as exc:
            raise BackupError(f"cannot run rclone: {exc}") from exc
        if _answers(proc, port):
            return proc, port
        proc.kill()
        proc.wait()
        last = _tail(log)
    raise BackupError(f"the append-only repository server did not start: {last or 'no message'}")


def _answers(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(log: IO[bytes]) -> str:
    try:
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
