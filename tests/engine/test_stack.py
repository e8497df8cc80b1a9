"""The real-stack example (examples/stack: PostgreSQL, a Python app, nginx) under traffic.

Rows are written through the edge (POST /rows to the app, never replayed by the edge)
while the app, nginx and the database are each replaced and rolled back. For the app and
nginx nothing may fail, on the clients' side or in the edge's counters. The database is
replaced stop-first, so it is away for a moment: that downtime is measured and reported,
the app's requests wait for it and none fails (a POST cut by the stop is tried again under
its own key), and every row the app acknowledged must still be in the database afterwards.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from corral.edge.watch import CounterWatch
from tests.engine.helpers import Fleet, containers, free_port

EXAMPLE = Path(__file__).parents[2] / "examples" / "stack"


@dataclass
class Stack:
    """A copy of the example under its own fleet name and ports, with its password."""

    fleet: Fleet  # its port is the app's
    static_port: int
    env: dict[str, str]

    @property
    def app_url(self) -> str:
        return self.fleet.url

    @property
    def static_url(self) -> str:
        return f"http://127.0.0.1:{self.static_port}/"

    def edit(self, old: str, new: str) -> None:
        """Replace one piece of the spec's text (which must be there exactly once)."""
        text = self.fleet.spec.read_text()
        assert text.count(old) == 1, f"{old!r} is not in the spec exactly once"
        self.fleet.spec.write_text(text.replace(old, new))

    def corral(self, *args: str, timeout: float = 600) -> None:
        """Run corral with the password; print how long it took (the figures asked for)."""
        started = time.monotonic()
        self.fleet.corral(*args, env=self.env, timeout=timeout)
        print(f"{args[0]}: {time.monotonic() - started:.1f}s")

    def deploy(self) -> None:
        self.corral("deploy", "--skip-tests", "--reason", "stack test")

    def rollback(self) -> None:
        self.corral("rollback", "--skip-tests", "--reason", "stack test")

    def releases(self) -> dict[str, set[int]]:
        """Per role, the releases its running instances belong to."""
        return {
            role["role"]: {i["release"] for i in role["instances"] if i["state"] == "running"}
            for role in self.fleet.status()["roles"]
        }

    def row_ids(self) -> set[int]:
        """Every row's id, read from the live database itself (as postgres, over /tmp)."""
        [db] = [
            c["Names"][0]
            for c in containers(self.fleet.name)
            if c["Labels"].get("io.corral.role") == "db" and c["State"] == "running"
        ]
        sql = "SELECT id FROM rows"
        out = subprocess.run(
            ["podman", "exec", db, "psql", "-h", "/tmp", "-d", "postgres", "-tAc", sql],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return {int(line) for line in out.split()}


@pytest.fixture
def stack(tmp_path: Path, cleanup_fleet: str) -> Iterator[Stack]:
    folder = tmp_path / "stack"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".corral", "__pycache__"))
    app_port, static_port = free_port(), free_port()
    spec = folder / "corral.yaml"
    text = re.sub(r"^fleet: stack$", f"fleet: {cleanup_fleet}", spec.read_text(), flags=re.M)
    text = text.replace("public: 8082", f"public: {app_port}")
    spec.write_text(text.replace("public: 8083", f"public: {static_port}"))
    # A quote and a backslash: the password is data all the way to PostgreSQL.
    password = f"pw-'{secrets.token_hex(8)}\\\""
    # The example backs db up before a deploy replaces it (a dump into restic): its
    # repository's password, as an operator gives it, in a file.
    backup_password = tmp_path / "backup-password"
    backup_password.write_text(secrets.token_hex(16))
    backup_password.chmod(0o600)
    env = {"DB_PASSWORD": password, "CORRAL_BACKUP_PASSWORD_FILE": str(backup_password)}
    made = Stack(Fleet(folder, cleanup_fleet, app_port), static_port, env)
    yield made
    made.fleet.corral("destroy", "--yes", check=False)


@dataclass
class Traffic:
    """Clients writing rows through the app and reading (GET, POST) from nginx.

    Every answered POST /rows is an acknowledged row, kept by id; outcomes are counted
    per target. ``slowest`` is the longest an app request took.
    """

    stack: Stack
    clients: int = 3
    outcomes: dict[str, Counter[str]] = field(
        default_factory=lambda: {"app": Counter(), "static": Counter()}
    )
    acked: set[int] = field(default_factory=set)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        deadline = time.monotonic() + 600
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._one("app", lambda: client.post(self.stack.app_url + "rows", content=b"x"))
                self._one("app", lambda: client.get(self.stack.app_url + "rows"))
                self._one("static", lambda: client.get(self.stack.static_url))
                self._one("static", lambda: client.post(self.stack.static_url + "healthz"))

    def _one(self, target: str, send: Callable[[], httpx.Response]) -> None:
        started = time.monotonic()
        try:
            response = send()
            outcome = f"{response.request.method} {response.status_code}"
            answered = target == "app" and response.status_code == 200
            row = response.json().get("id") if answered else None
        except (httpx.HTTPError, ValueError) as exc:
            outcome, row = type(exc).__name__, None
        with self._lock:
            self.outcomes[target][outcome] += 1
            if target == "app":
                self.slowest = max(self.slowest, time.monotonic() - started)
            if isinstance(row, int):
                self.acked.add(row)

    def failures(self, target: str) -> dict[str, int]:
        return {k: n for k, n in self.outcomes[target].items() if not k.endswith(" 200")}

    def assert_busy(self) -> None:
        for target in ("app", "static"):
            posts = self.outcomes[target]["POST 200"]
            assert posts > 5, f"too little traffic reached {target}: {self.outcomes}"


@dataclass
class Downtime:
    """Polls the app's GET /db (one connection attempt, no waiting) to time db outages."""

    url: str
    samples: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Downtime:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.02):
                try:
                    ready = client.get(self.url + "db").status_code == 200
                except httpx.HTTPError:
                    ready = False
                self.samples.append((time.monotonic(), ready))

    def longest(self) -> float:
        """The longest stretch from the first failed probe to the next good one."""
        longest, down_since = 0.0, None
        for at, ready in self.samples:
            if not ready and down_since is None:
                down_since = at
            elif ready and down_since is not None:
                longest, down_since = max(longest, at - down_since), None
        assert down_since is None, "the database did not come back"
        return longest


def _edge_watch(stack: Stack) -> CounterWatch:
    watch = CounterWatch(stack.fleet.edge_api())
    watch.start()
    return watch


def _assert_nothing_failed(traffic: Traffic, watch: CounterWatch, step: str) -> None:
    report = f"{step}: {traffic.outcomes}; edge: {watch.problems()} {watch.errors}"
    traffic.assert_busy()
    assert traffic.failures("app") == {} and traffic.failures("static") == {}, report
    assert watch.readings > 0 and watch.problems() == [], report


def _replace_and_roll_back(stack: Stack, changes: dict[str, str], step: str) -> set[int]:
    """Deploy the spec with ``changes`` (old text: new text), then roll back, under
    traffic: nothing may fail."""
    watch = _edge_watch(stack)
    with Traffic(stack) as traffic:
        for old, new in changes.items():
            stack.edit(old, new)
        stack.deploy()
        for old, new in changes.items():
            stack.edit(new, old)
        stack.rollback()
    watch.stop()
    _assert_nothing_failed(traffic, watch, step)
    return traffic.acked


def _replace_db(
    stack: Stack, change: Callable[[], None], step: str, record: Callable[..., None]
) -> set[int]:
    """Replace (or roll back) the db under traffic; report its downtime and the app's."""
    with Downtime(stack.app_url) as probe, Traffic(stack) as traffic:
        time.sleep(0.5)
        change()
    downtime = probe.longest()
    print(
        f"{step}: db away {downtime:.2f}s; app requests {dict(traffic.outcomes['app'])},"
        f" slowest {traffic.slowest:.2f}s"
    )
    record(f"{step}_db_downtime_s", round(downtime, 3))
    record(f"{step}_app_slowest_s", round(traffic.slowest, 3))
    record(f"{step}_app_failures", sum(traffic.failures("app").values()))
    assert 0 < downtime < 15, f"{step}: the db was away {downtime:.2f}s"
    assert traffic.outcomes["app"]["POST 200"] > 5, traffic.outcomes
    # The app waits for the database and tries a broken POST again (its key makes that
    # safe): the db's downtime slows the app's requests, it fails none.
    assert traffic.failures("app") == {}, f"{step}: {traffic.outcomes['app']}"
    return traffic.acked


@pytest.mark.timeout(1500)  # 6 to 10 minutes measured on a 2-core machine at load 15-30
def test_stack_keeps_every_row_while_each_role_is_replaced_and_rolled_back(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    # Baking the three roles' images (on bases shared by every run) takes most of a cold
    # start, minutes on a loaded machine: it gets its own, longer limit.
    stack.corral("build", timeout=1200)
    started = time.monotonic()
    stack.deploy()
    record_property("cold_deploy_s", round(time.monotonic() - started, 1))
    first = httpx.post(stack.app_url + "rows", content=b"first", timeout=30)
    assert first.status_code == 200, first.text
    acked = {first.json()["id"]}

    # One release replaces both the app and nginx (rolling, under traffic), and one
    # rollback replaces both again: two deploys instead of four keep the test short.
    changes = {
        'GREETING: "rows on postgres"': 'GREETING: "rows, v2"',
        'BANNER: "static files"': 'BANNER: "static files, v2"',
    }
    acked |= _replace_and_roll_back(stack, changes, "app and static")
    assert stack.releases() == {"app": {3}, "static": {3}, "db": {1}}
    assert acked <= stack.row_ids()

    pgdata = "PGDATA: /var/lib/postgresql/data/15"

    def change_db() -> None:
        stack.edit(f"{{{pgdata}}}", f"{{{pgdata}, LEVEL: '2'}}")
        stack.deploy()

    acked |= _replace_db(stack, change_db, "db_replace", record_property)
    assert stack.releases()["db"] == {4}
    assert acked <= stack.row_ids(), "rows acknowledged before or during the db replacement"

    def roll_back_db() -> None:
        stack.edit(f"{{{pgdata}, LEVEL: '2'}}", f"{{{pgdata}}}")
        stack.rollback()

    acked |= _replace_db(stack, roll_back_db, "db_rollback", record_property)
    rows = stack.row_ids()
    assert acked <= rows, f"{len(acked - rows)} acknowledged rows lost"
    counted = httpx.get(stack.app_url + "rows", timeout=30).json()["count"]
    assert counted == len(rows) >= len(acked) > 50
    record_property("rows", len(rows))
    kinds = [
        r["kind"] for r in json.loads(stack.fleet.corral("history", "--json").stdout)["releases"]
    ]
    assert kinds == ["deploy", "deploy", "rollback", "deploy", "rollback"]
