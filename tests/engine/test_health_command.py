"""Command health checks and tmpfs folders owned by the run user, on the real podman.

A command check runs in a throwaway probe container of the role's image on the fleet's
network, locked down as an instance is; nothing runs inside the instance. The PostgreSQL
test shows why: a TCP check passes while PostgreSQL still refuses with "the database
system is starting up", and ``pg_isready`` from a probe waits until it accepts.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field

from corral.deploy.health import probe_once
from corral.engines.base import ContainerSpec
from corral.engines.podman import PodmanEngine
from corral.spec.model import TcpHealth
from tests.engine.helpers import Fleet, podman_json

NOBODY = "65534"  # Debian's nobody, in every base


def _network(engine: PodmanEngine, fleet: str) -> str:
    network = f"corral-{fleet}"
    engine.ensure_network(network, {"io.corral.fleet": fleet})
    return network


_LOOK_AROUND = """
import os, socket, sys
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
try:
    open('/probe-was-here', 'w')
    root = 'writable'
except OSError:
    root = 'read-only'
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5):
    pass
print(os.getuid(), status['CapEff'].strip(), status['CapBnd'].strip(),
      status['NoNewPrivs'].strip(), root, 'reached')
"""


def test_a_probe_runs_locked_down_and_reaches_the_instance(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    network = _network(engine, cleanup_fleet)
    labels = {"io.corral.fleet": cleanup_fleet, "io.corral.kind": "probe"}
    server = engine.start(
        ContainerSpec(
            name=f"{cleanup_fleet}-db-r1-1",
            image=shared_base,
            command=("python3", "-m", "http.server", "8000"),
            user=NOBODY,
            labels={"io.corral.fleet": cleanup_fleet},
            network=network,
        )
    )
    probe = ContainerSpec(
        name=f"{cleanup_fleet}-db-probe-1",
        image=shared_base,
        command=("python3", "-c", _LOOK_AROUND, server.addresses[network], "8000"),
        user=NOBODY,
        labels=labels,
        network=network,
        memory="64m",
        pids_limit=32,
        init=False,
        stop_timeout=0,
    )
    deadline = time.monotonic() + 30
    while True:  # the server may need a moment to listen
        result = engine.run_probe(probe, timeout=30)
        if result.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.exit_code == 0, result.output
    uid, effective, bounding, no_new_privileges, root, reached = result.output.split()[-6:]
    assert uid == NOBODY
    assert int(effective, 16) == 0 and int(bounding, 16) == 0  # every capability dropped
    assert no_new_privileges == "1"
    assert (root, reached) == ("read-only", "reached")
    assert engine.inspect(probe.name) is None  # removed once it ended
    assert engine.list_containers(labels) == []


def test_a_probe_that_hangs_is_killed_and_removed(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    labels = {"io.corral.fleet": cleanup_fleet, "io.corral.kind": "probe"}
    probe = ContainerSpec(
        name=f"{cleanup_fleet}-db-probe-2",
        image=shared_base,
        command=("sleep", "600"),
        user=NOBODY,
        labels=labels,
        network=_network(engine, cleanup_fleet),
        init=False,
        stop_timeout=0,
    )
    result = engine.run_probe(probe, timeout=3)
    assert result.exit_code is None
    assert result.seconds < 20  # the timeout, plus the kill and the removal
    assert engine.inspect(probe.name) is None
    assert engine.list_containers(labels) == []


def test_tmpfs_folders_belong_to_the_run_user(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    name = f"{cleanup_fleet}-db-r1-1"
    engine.start(
        ContainerSpec(
            name=name,
            image=shared_base,
            command=("sleep", "300"),
            user=NOBODY,
            labels={"io.corral.fleet": cleanup_fleet},
            owned_tmpfs=("/run", "/run/postgresql", "/var/lib/app-cache"),
        )
    )
    script = (
        "touch /run/postgresql/.s.PGSQL.5432.lock && mkdir /run/app && "
        "touch /var/lib/app-cache/x && stat -c '%n %u %a' /run /run/postgresql "
        "/var/lib/app-cache && if touch /etc/x 2>/dev/null; then echo root-writable; fi"
    )
    out = engine.exec_in(name, ["sh", "-c", script]).checked().split()
    # The image has /run (mode 755), not the other two: corral's mode 0755 applies there.
    expected = [(path, NOBODY, "755") for path in ("/run", "/run/postgresql", "/var/lib/app-cache")]
    assert out == [word for row in expected for word in row]


# -- a real PostgreSQL: readiness that means ready ----------------------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"
# Every start runs an archive recovery whose restore_command waits 2 s per WAL file it is
# asked for, then fails: PostgreSQL listens on its port throughout, answering "the
# database system is starting up", for several seconds before it accepts connections.
START_DB = f"""
set -e
D=/var/lib/postgresql/data/pg
if [ ! -s "$D/PG_VERSION" ]; then
  {PG_BIN}/initdb -D "$D" -U postgres --auth=trust >/dev/null
  echo "host all all 0.0.0.0/0 trust" >> "$D/pg_hba.conf"
fi
touch "$D/recovery.signal"
exec {PG_BIN}/postgres -D "$D" -c listen_addresses='*' -c hot_standby=off \\
  -c "restore_command=sleep 2; false"
"""


def _db_spec(fleet: str, health: str) -> str:
    return (
        f"fleet: {fleet}\n"
        "roles:\n"
        "  db:\n"
        "    base: {debian: bookworm, packages: [postgresql]}\n"
        "    run:\n"
        f"      command: [sh, -c, {json.dumps(START_DB)}]\n"
        "      user: postgres\n"
        "      port: 5432\n"
        "      tmpfs: [/run/postgresql]\n"
        "    volumes: {data: /var/lib/postgresql/data}\n"
        f"    health: {health}\n"
        "    deploy: {max_surge: 0, max_unavailable: 1}\n"
    )


@dataclass
class Watch:
    """What a TCP check and PostgreSQL itself said about the db instance, every 100 ms."""

    fleet: str
    tcp_while_starting: list[str] = field(default_factory=list)  # PostgreSQL's refusal
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            address = _db_address(self.fleet)
            if address and probe_once(address, 5432, TcpHealth(tcp=True, timeout=0.5)) is None:
                said = _psql(address)
                if "starting up" in said:
                    self.tcp_while_starting.append(said)
            time.sleep(0.1)


def _db_address(fleet: str) -> str | None:
    filters = [
        "--filter",
        f"label=io.corral.fleet={fleet}",
        "--filter",
        "label=io.corral.kind=instance",
    ]
    found = subprocess.run(
        ["podman", "ps", "--quiet", *filters],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if not found:
        return None
    [data] = podman_json("container", "inspect", found[0])
    networks = data["NetworkSettings"]["Networks"]
    return str(networks[f"corral-{fleet}"]["IPAddress"]) or None


def _psql(address: str) -> str:
    proc = subprocess.run(
        ["psql", "-h", address, "-U", "postgres", "-At", "-c", "select 'accepting'"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return (proc.stdout + proc.stderr).strip()


def _deploy_watched(fleet: Fleet, health: str) -> tuple[Watch, str, str]:
    """Deploy the db role with ``health`` while watching it; what the deploy printed and
    what PostgreSQL answered right after the deploy returned."""
    fleet.spec.write_text(_db_spec(fleet.name, health))
    watch = Watch(fleet.name)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    try:
        deployed = fleet.deploy()
        right_after = _psql(str(_db_address(fleet.name)))
    finally:
        watch.stop.set()
        watcher.join()
    return watch, deployed.stdout + deployed.stderr, right_after


def test_pg_isready_from_a_probe_waits_while_a_tcp_check_would_pass(fleet: Fleet) -> None:
    # retries 90 (45 s): initdb and the start took over the default 15 s when another
    # test shared the machine (a CI run); the test is about the order, not the time.
    check = f'command: [{PG_BIN}/pg_isready, -h, "{{host}}", -p, "{{port}}"]'
    health = f"{{{check}, interval: 500ms, retries: 90}}"
    watch, said, right_after = _deploy_watched(fleet, health)
    # While corral waited, the port took connections and PostgreSQL refused them:
    assert watch.tcp_while_starting, "PostgreSQL never said it was starting up"
    assert "the database system is starting up" in watch.tcp_while_starting[0]
    # corral called it healthy only once it accepted connections (postgres created its
    # socket and lock file in /run/postgresql, a tmpfs of its own, to get there).
    assert "is healthy" in said
    assert right_after == "accepting"
    probes = ["--filter", f"label=io.corral.fleet={fleet.name}"]
    left = subprocess.run(
        ["podman", "ps", "--all", "--quiet", *probes, "--filter", "label=io.corral.kind=probe"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == []  # every probe container was removed


def test_a_tcp_check_calls_postgres_healthy_while_it_is_starting_up(fleet: Fleet) -> None:
    # The control: the same role with a TCP check is "healthy" too early (issue 10, 7).
    _, said, right_after = _deploy_watched(fleet, "{tcp: true, interval: 500ms}")
    assert "is healthy" in said
    assert "the database system is starting up" in right_after


_DB_TEST = """
import subprocess


def test_the_db_accepts_connections(corral_env):
    [instance] = corral_env["instances"]
    answer = subprocess.run(
        ["psql", "-h", instance["address"], "-U", "postgres", "-At", "-c", "select 'accepting'"],
        capture_output=True, text=True, timeout=10,
    )
    assert answer.stdout.strip() == "accepting", answer.stderr
"""


def test_a_test_environment_waits_for_the_command_too(fleet: Fleet) -> None:
    # Test environments bring roles up through the same executor, on an internal network:
    # the probe runs there, and the role's tests start only once PostgreSQL accepts.
    health = f'{{command: [{PG_BIN}/pg_isready, -h, "{{host}}", -p, "{{port}}"], interval: 500ms}}'
    (fleet.folder / "tests").mkdir(exist_ok=True)
    (fleet.folder / "tests" / "test_db.py").write_text(_DB_TEST)
    fleet.spec.write_text(_db_spec(fleet.name, health) + "    tests: [tests/]\n")
    tested = fleet.corral("test", "db", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    left = subprocess.run(
        ["podman", "ps", "--all", "--quiet", "--filter", f"label=io.corral.fleet={fleet.name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == []  # the environment's instances and probes are gone
