"""A private PostgreSQL cluster for tests: initdb into a temporary folder, its own socket
folder and port, a fresh database per test. A missing PostgreSQL fails, never skips."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _tool(name: str) -> str:
    for folder in _BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run scripts/setup")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Cluster:
    """A running private cluster; :meth:`new_database` gives a state URL."""

    def __init__(self, socket_dir: Path, port: int, user: str) -> None:
        self.socket_dir = socket_dir
        self.port = port
        self.user = user
        self._count = 0

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.user,
            dbname="postgres",
            autocommit=True,
        )

    def new_database(self) -> str:
        """Create an empty database; its URL (no password: trust over the socket)."""
        self._count += 1
        name = f"corral_test_{os.getpid()}_{self._count}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@/{name}?host={self.socket_dir}&port={self.port}"


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """Start a cluster in a temporary folder; stop and remove it at the end."""
    top = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    data, sock = top / "data", top / "sock"
    sock.mkdir()
    user = "postgres" if os.geteuid() == 0 else (os.environ.get("USER") or "postgres")
    if os.geteuid() == 0:
        shutil.chown(top, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    subprocess.run(
        _as_owner([_tool("initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-k {sock} -p {port} -c listen_addresses='' -c fsync=off"
    ctl = _tool("pg_ctl")
    subprocess.run(
        _as_owner([ctl, "-D", str(data), "-o", options, "-w", "-l", str(top / "log"), "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield Cluster(sock, port, user)
    finally:
        subprocess.run(
            _as_owner([ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(top, ignore_errors=True)
