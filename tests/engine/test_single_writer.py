"""Two PostgreSQL servers never run on one data folder (issue 10, reproduction 1).

The db role of examples/stack (PostgreSQL 15 from Debian, its data on a volume, its
password a secret) is changed and deployed with the default rolling strategy (surge 1),
with blue-green, with a new instance that never gets healthy (the automatic undo), and
rolled back. Each time:

- a watcher polls Podman during the deploy for running containers that mount the volume:
  never more than one;
- Podman's own event log says every db container's process had died before the next one
  was even initialised (its mounts set up), from the engine's timestamps;
- PostgreSQL answers afterwards with every row written before.

The stop-first downtime corral measured is printed (run with -s to see it).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corral.build.base import ensure_base
from corral.engines.podman import PodmanEngine
from corral.progress import NullProgress
from corral.spec.model import DebianBase
from tests.engine.helpers import Fleet, free_port, podman_json

STACK_DB = Path(__file__).resolve().parents[2] / "examples" / "stack" / "db"
PG_BASE = DebianBase(debian="bookworm", packages=("postgresql-15",))
PGDATA = "/var/lib/postgresql/data/15"


@pytest.fixture(scope="module")
def pg_base(engine: PodmanEngine) -> str:
    """The bookworm + postgresql-15 base (the stack example's), bootstrapped once."""
    if shutil.which("psql") is None:
        pytest.fail("psql (PostgreSQL's client) is not installed: run scripts/setup")
    return ensure_base(engine, PG_BASE, NullProgress()).id


@dataclass
class Db:
    """A one-role fleet: the stack example's PostgreSQL, deployed with corral."""

    fleet: Fleet
    password: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def volume(self) -> str:
        return f"{self.fleet.name}-db-data"

    @property
    def env(self) -> dict[str, str]:
        return {"DB_PASSWORD": self.password}

    def write(self, generation: int, strategy: str = "rolling", healthy: bool = True) -> None:
        """The spec; a new ``generation`` changes the run configuration (a replacement).
        Unhealthy: PostgreSQL runs on the data folder but listens on another port."""
        port = "" if healthy else ", PGPORT: '5433'"
        retries = 150 if healthy else 20
        self.fleet.spec.write_text(
            f"fleet: {self.fleet.name}\n"
            "roles:\n"
            "  db:\n"
            "    base: {debian: bookworm, packages: [postgresql-15]}\n"
            "    build: {copy: [{src: db/, dest: /srv/db}]}\n"
            "    run:\n"
            "      command: [/bin/sh, /srv/db/start.sh]\n"
            "      user: postgres\n"
            "      port: 5432\n"
            f"      env: {{PGDATA: {PGDATA}, GENERATION: '{generation}'{port}}}\n"
            "      secrets: [DB_PASSWORD]\n"
            f"    health: {{tcp: true, interval: 200ms, retries: {retries}}}\n"
            "    volumes: {data: /var/lib/postgresql/data}\n"
            f"    deploy: {{strategy: {strategy}, drain: 1s}}\n"
        )

    def deploy(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.fleet.deploy("--json", check=check, env=self.env)

    def sql(self, statement: str, timeout: float = 60) -> str:
        """Run ``statement`` on the running db instance (retried while it starts up)."""
        deadline = time.monotonic() + timeout
        while True:
            where = ["-h", self.address(), "-U", "postgres", "-d", "postgres"]
            proc = subprocess.run(
                ["psql", *where, "-tAc", statement],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "3"},
            )
            if proc.returncode == 0:
                return proc.stdout.strip()
            if time.monotonic() > deadline:
                raise AssertionError(f"psql failed: {proc.stderr}")
            time.sleep(0.3)

    def address(self) -> str:
        [instance] = running_db(self.fleet.name)
        [address] = [n["IPAddress"] for n in instance["NetworkSettings"]["Networks"].values()]
        return str(address)


def running_db(fleet: str) -> list[dict[str, Any]]:
    names = [
        c["Names"][0]
        for c in podman_json(
            "ps",
            "--filter",
            f"label=io.corral.fleet={fleet}",
            "--filter",
            "label=io.corral.role=db",
            "--filter",
            "label=io.corral.kind=instance",
        )
    ]
    return list(podman_json("container", "inspect", *names)) if names else []


class MountWatch:
    """Polls Podman while a deploy runs: which running containers mount the volume."""

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.most = 0
        self.seen: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MountWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            running = podman_json("ps", "--filter", f"volume={self.volume}")
            names = {c["Names"][0] for c in running}
            self.most, self.polls = max(self.most, len(names)), self.polls + 1
            self.seen |= names
            time.sleep(0.05)


class Prober:
    """Asks PostgreSQL ``SELECT 1`` over and over while a deploy runs, at whichever db
    instance runs; the longest gap between two answers is the downtime a client saw."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.answers: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.db.sql("SELECT 1", timeout=0)
            except (AssertionError, ValueError, KeyError, subprocess.SubprocessError):
                continue  # no instance, or it does not answer (yet)
            self.answers.append(time.monotonic())

    @property
    def longest_gap(self) -> float:
        return max((b - a for a, b in itertools.pairwise(self.answers)), default=0.0)


@dataclass(frozen=True)
class Span:
    """When one container held the volume, by Podman's event log: init to died."""

    name: str
    init: datetime
    died: datetime | None


def spans(fleet: str, since: datetime) -> list[Span]:
    """Every db instance's init..died span since ``since``, in order of init."""
    out = subprocess.run(
        ["podman", "events", "--stream=false", "--format", "json", "--since", since.isoformat()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = {"io.corral.fleet": fleet, "io.corral.role": "db", "io.corral.kind": "instance"}
    inits: list[tuple[str, datetime]] = []
    died: dict[str, list[datetime]] = {}
    for line in out.splitlines():
        event = json.loads(line)
        labels = event.get("Attributes") or {}
        # Podman ORs repeated --filter label=...: the labels are checked here instead.
        if any(labels.get(k) != v for k, v in wanted.items()):
            continue
        at = _time(event["Time"])
        if event["Status"] == "init":
            inits.append((event["Name"], at))
        elif event["Status"] == "died":
            died.setdefault(event["Name"], []).append(at)
    found = []
    for name, at in sorted(inits, key=lambda i: i[1]):
        after = [d for d in died.get(name, []) if d >= at]
        found.append(Span(name, at, min(after) if after else None))
    return found


def _time(text: str) -> datetime:
    head, _, rest = text.partition(".")
    fraction = rest.rstrip("Z")[:6] if rest else "0"
    return datetime.fromisoformat(f"{head}.{fraction:0<6}+00:00")


def assert_one_at_a_time(found: list[Span]) -> None:
    """Each container's process died before the next one was initialised."""
    for earlier, later in itertools.pairwise(found):
        assert earlier.died is not None, f"{earlier.name} still ran when {later.name} began"
        assert earlier.died < later.init, (earlier, later)


@pytest.fixture
def db(tmp_path: Path, cleanup_fleet: str, pg_base: str) -> Iterator[Db]:
    fleet = Fleet(tmp_path / "fleet", cleanup_fleet, free_port())
    fleet.folder.mkdir()
    shutil.copytree(STACK_DB, fleet.folder / "db")
    made = Db(fleet)
    yield made
    fleet.corral("destroy", "--yes", check=False, env=made.env)


def replace(
    db: Db, generation: int, strategy: str, healthy: bool = True
) -> tuple[subprocess.CompletedProcess[str], MountWatch, list[Span]]:
    """Deploy a new generation while watching the volume; (result, watch, spans)."""
    db.write(generation, strategy, healthy)
    began = datetime.now(UTC)
    with MountWatch(db.volume) as watch, Prober(db) as prober:
        proc = db.deploy(check=healthy)
    gap = prober.longest_gap
    print(f"\n{strategy} (generation {generation}): clients got no answer for {gap:.2f} s")
    return proc, watch, spans(db.fleet.name, began)


def unavailable(db: Db) -> float | None:
    """corral's own measure of the last stop-first replacement, from `plan --json`."""
    proc = db.fleet.corral("plan", "--json", check=False, env=db.env)
    [role] = json.loads(proc.stdout)["plan"]["roles"]
    assert role["strategy"] == "stop-first" and role["exclusive"] == [db.volume]
    value = role["unavailable_s"]
    return None if value is None else float(value)


def test_postgres_is_replaced_stop_first_by_every_strategy_and_the_undo(db: Db) -> None:
    db.write(1)
    db.deploy()
    db.sql("CREATE TABLE marks (n integer); INSERT INTO marks SELECT generate_series(1, 100)")
    assert db.sql("SELECT count(*) FROM marks") == "100"
    db.write(2)
    [pending] = json.loads(db.fleet.corral("plan", "--json", check=False, env=db.env).stdout)[
        "plan"
    ]["roles"]
    assert pending["interrupts"] is True and pending["unavailable_s"] is None  # never measured
    figures: dict[str, float] = {}

    for generation, strategy in [(2, "rolling"), (3, "blue-green")]:
        proc, watch, found = replace(db, generation, strategy)
        assert json.loads(proc.stdout)["status"] == "active", proc.stdout
        assert watch.polls > 5 and watch.most == 1, (strategy, watch.seen)
        assert len(found) == 1 and len(watch.seen) == 2, (strategy, found, watch.seen)
        assert db.sql("SELECT count(*) FROM marks") == str(100 + 10 * (generation - 2))
        db.sql("INSERT INTO marks SELECT generate_series(1, 10)")
        db.write(generation + 1, strategy)  # a pending change: plan shows the estimate
        measured = unavailable(db)
        assert measured is not None and 0 < measured < 60
        figures[strategy] = measured
    # blue-green kept the rolling release's instance stopped, as a stand-by
    [standby] = [
        c
        for c in podman_json("ps", "--all", "--filter", f"label=io.corral.fleet={db.fleet.name}")
        if c["State"] != "running"
    ]
    assert standby["Labels"]["io.corral.release"] == "2"

    # A new instance that holds the data folder but never answers on its port: corral
    # removes it, then the undo brings release 3 back, one server at a time.
    before = {c["Id"] for c in running_db(db.fleet.name)}
    proc, watch, found = replace(db, 4, "blue-green", healthy=False)
    assert proc.returncode != 0 and "back on release r3" in proc.stdout + proc.stderr
    assert watch.most == 1, watch.seen
    assert_one_at_a_time(spans(db.fleet.name, datetime(2000, 1, 1, tzinfo=UTC)))
    assert len(found) == 2, found  # the broken one, then release 3's instance again
    assert {c["Id"] for c in running_db(db.fleet.name)} == before  # the stand-by itself
    assert db.sql("SELECT count(*) FROM marks") == "120"

    # And `corral rollback` (to release 2) is stop-first as well.
    began = datetime.now(UTC)
    with MountWatch(db.volume) as watch:
        back = db.fleet.corral("rollback", "--json", "--skip-tests", "--reason", "test", env=db.env)
    assert json.loads(back.stdout)["status"] == "active"
    assert watch.most == 1, watch.seen
    assert len(spans(db.fleet.name, began)) == 1
    assert_one_at_a_time(spans(db.fleet.name, datetime(2000, 1, 1, tzinfo=UTC)))
    assert db.sql("SELECT count(*) FROM marks") == "120"
    print(f"\nstop-first db downtime (corral's measure): {figures}")
    timeline = spans(db.fleet.name, datetime(2000, 1, 1, tzinfo=UTC))
    gaps = [
        (later.init - earlier.died).total_seconds()
        for earlier, later in itertools.pairwise(timeline)
        if earlier.died is not None
    ]
    print(f"old server died -> next one initialised (podman events): {gaps}")
