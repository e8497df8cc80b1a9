"""Helpers for real-engine deploy tests: a small fleet on disk, a load generator, podman."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.edge.container import SOCKET_IN_CONTAINER as EDGE_SOCKET_DIR
from corral.edge.container import SOCKET_NAME
from corral.edge.runtime import RuntimeAPI
from corral.edge.watch import CounterWatch

APP = Path(__file__).parent / "fleet_app"
CORRAL = [sys.executable, "-m", "corral"]


def until(check: Callable[[], bool], timeout: float, every: float = 0.1) -> float:
    """Seconds until ``check`` held, looking every ``every`` s; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout:g}s")
        time.sleep(every)
    return time.monotonic() - started


@contextmanager
def watching(
    spec: Path, *args: str, settle: float = 0, stderr: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """``corral watch --interval 1`` on ``spec`` for the block, then stopped with its
    children: it runs in a session of its own. ``settle``: seconds given to its first pass
    and its event stream before the block starts. ``stderr``: piped, for a block that reads
    it (unread, a full pipe would stall the watcher), else dropped."""
    watch = subprocess.Popen(
        [*CORRAL, "-f", str(spec), "watch", "--interval", "1", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        time.sleep(settle)
        yield watch
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        watch.wait(timeout=30)


def free_port(below: int | None = None) -> int:
    """A port free on 127.0.0.1 now; ``below``: one of the highest under that number."""
    if below is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for port in random.sample(range(below - 200, below), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port under {below}")


@dataclass
class Fleet:
    folder: Path
    name: str
    port: int
    # Every runtime API handed out, closed before a destroy: HAProxy's soft stop waits for
    # each open CLI connection (up to ``stats timeout``), so a test's idle one cost every
    # teardown the engine's whole 10 s stop timeout.
    _apis: list[RuntimeAPI] = field(default_factory=list, repr=False, compare=False)

    @property
    def spec(self) -> Path:
        return self.folder / "corral.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def write(
        self,
        version: str = "v1",
        replicas: int = 2,
        strategy: str = "rolling",
        extra: str = "",
        start_delay: float = 0,
        secrets: tuple[str, ...] = (),
        settle: str = "0s",  # the replica counts are still checked once; tests stay fast
        health: str = "{http: /healthz, interval: 200ms, retries: 25}",
    ) -> None:
        (self.folder / "app").mkdir(parents=True, exist_ok=True)
        shutil.copy(APP / "server.py", self.folder / "app" / "server.py")
        (self.folder / "app" / "VERSION").write_text(version + "\n")
        (self.folder / "tests").mkdir(exist_ok=True)
        self.spec.write_text(
            f"fleet: {self.name}\n"
            "roles:\n"
            "  web:\n"
            "    base: {debian: bookworm, packages: [python3]}\n"
            "    build: {copy: [{src: app/, dest: /srv/app}]}\n"
            "    run: {command: [python3, /srv/app/server.py], user: app, port: 8000,\n"
            f"          env: {{START_DELAY: '{start_delay}'}}"
            + (f", secrets: [{', '.join(secrets)}]" if secrets else "")
            + "}\n"
            f"    health: {health}\n"
            f"    replicas: {replicas}\n"
            "    volumes: {data: {path: /var/lib/app, shareable: true}}\n"
            f"    public: {self.port}\n"
            f"    deploy: {{strategy: {strategy}, drain: 2s, settle: {settle}}}\n"
            "    tests: [tests/]\n"
            f"{extra}"
        )

    def corral(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("destroy",):
            self.close_edge_apis()
        proc = subprocess.run(
            [*CORRAL, "-f", str(self.spec), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"corral {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def deploy(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Deploy without the test gate: these tests are about deploy mechanics."""
        return self.corral(
            "deploy",
            "--skip-tests",
            "--reason",
            "deploy mechanics test",
            *args,
            check=check,
            env=env,
        )

    def status(self) -> dict[str, Any]:
        # Exit 1 says the fleet is unwell (a test may be looking at just that): read the JSON.
        return dict(json.loads(self.corral("status", "--json", check=False).stdout))

    def edge_api(self) -> RuntimeAPI:
        """The runtime API of this fleet's running edge, found through its socket mount."""
        [edge] = podman_json("container", "inspect", f"{self.name}-edge")
        [folder] = [m["Source"] for m in edge["Mounts"] if m["Destination"] == EDGE_SOCKET_DIR]
        api = RuntimeAPI(str(Path(folder) / SOCKET_NAME))
        self._apis.append(api)
        return api

    def close_edge_apis(self) -> None:
        """Close every runtime API connection this fleet handed out (a later command of
        one opens a new connection)."""
        for api in self._apis:
            api.close()

    def load(self, clients: int = 4) -> Load:
        """Traffic through the live edge, its counters watched (see ``Load``)."""
        return Load(self.url, clients=clients, edge=self.edge_api())


@dataclass
class Load:
    """Constant traffic against a URL from a few keep-alive clients, counting outcomes.

    Each client alternates GET / and POST /``post_path`` (``count``; the stack example's app
    takes ``rows``): a POST is never replayed by the edge, so a request lost to a closing
    instance shows up here as a failure, not as a retry. With
    ``edge`` (the edge's runtime API), the edge's own counters are read around the traffic
    too: ``assert_no_failures`` then also fails on any retry, redispatch, connection or
    response error or 5xx the edge saw.
    """

    url: str
    clients: int = 4
    edge: RuntimeAPI | None = None
    post_path: str = "count"
    outcomes: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    counters: CounterWatch | None = None
    # Each failed request: seconds since the load started, the request and what it met.
    errors: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        if self.edge is not None:
            self.counters = CounterWatch(self.edge)
            self.counters.start()
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.counters is not None:
            self.counters.stop()
        if self.edge is not None:
            self.edge.close()  # an open CLI connection would hold up the edge's soft stop

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._one(client, "GET")
                if not self._stop.is_set():
                    self._one(client, "POST")

    def _one(self, client: httpx.Client, method: str) -> None:
        try:
            if method == "POST":
                response = client.post(self.url + self.post_path, content=b"load")
            else:
                response = client.get(self.url)
            outcome = f"{method} {response.status_code}"
            version = response.json().get("version", "?") if response.status_code == 200 else ""
        except (httpx.HTTPError, ValueError) as exc:
            outcome, version = f"{method} {type(exc).__name__}", ""
            error = f"{time.monotonic() - self._started:.2f}s {method}: {type(exc).__name__}: {exc}"
            with self._lock:
                self.errors.append(error)
        with self._lock:
            self.outcomes[outcome] += 1
            if version:
                self.versions[version] += 1

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def posts(self) -> int:
        """POST requests sent, answered or not."""
        return sum(n for outcome, n in self.outcomes.items() if outcome.startswith("POST "))

    @property
    def failures(self) -> int:
        return self.total - self.outcomes["GET 200"] - self.outcomes["POST 200"]

    def edge_problems(self) -> list[str]:
        """What the edge's counters saw (see ``CounterWatch.problems``); [] without ``edge``."""
        if self.counters is None:
            return []
        return self.counters.problems() + [
            f"reading the counters: {e}" for e in self.counters.errors
        ]

    def assert_no_failures(self) -> None:
        """Every request answered 200, POSTs among them, and the edge saw no trouble."""
        report = f"client outcomes {dict(self.outcomes)}; edge: {self.edge_problems()}"
        if self.errors:
            report += "; errors: " + "; ".join(self.errors[:10])
        assert self.posts > 0 and self.outcomes["POST 200"] > 0, report
        assert self.failures == 0, report
        assert self.counters is not None and self.counters.readings > 0, (
            f"the edge's counters were not read: {report}"
        )
        assert self.edge_problems() == [], report
        # These counters are this edge's: it saw at least every request the clients made.
        assert self.counters.frontend_requests() >= self.total, report


def secret_store() -> list[str]:
    """Every name in podman's secret store."""
    out = subprocess.run(
        ["podman", "secret", "ls", "--noheading", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def fleet_secrets(fleet: Fleet) -> list[str]:
    """The names in podman's secret store that belong to ``fleet``'s live instances."""
    return sorted(name for name in secret_store() if name.startswith(fleet.name + "-"))


# Listings that another process's removal can fail midway ("image not known"), as the
# tests' clean-ups and other test runs remove objects beside them: tried again.
# An image inspect walks every image of the store (for its parents): another test's
# removal under it ends it 125 with "image not known", naming an image not asked for.
LISTINGS = {
    ("images",), ("ps",), ("volume", "ls"), ("network", "ls"), ("pod", "ps"), ("image", "inspect"),
}  # fmt: skip


def podman_json(*args: str) -> Any:
    tries = 5 if (args[:1] in LISTINGS or args[:2] in LISTINGS) else 1
    for attempt in range(tries):
        proc = subprocess.run(
            ["podman", *args, "--format", "json"], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 or attempt == tries - 1:
            break
        time.sleep(0.5)
    proc.check_returncode()
    return json.loads(proc.stdout)


def containers(fleet: str) -> list[dict[str, Any]]:
    """The fleet's containers, as ``podman ps`` shows them; not the edge pod's infra
    container, which holds the pod's network and goes with the pod."""
    found = podman_json("ps", "--all", "--filter", f"label=io.corral.fleet={fleet}")
    return [c for c in found if not c.get("IsInfra")]
