"""Real-engine fixtures: one shared Debian base, a unique fleet per test, full clean-up.

Every test gets a fleet named ``corral-test-<hex>``; everything it creates carries that
fleet's label and is removed in teardown. The Debian base is shared: it is a cache keyed
by its recipe, made once per machine.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.build.base import ensure_base
from corral.engines.podman import PodmanEngine
from corral.progress import NullProgress
from corral.spec.model import DebianBase
from tests.engine.helpers import Fleet, free_port
from tests.pgcluster import Cluster, private_cluster

pytestmark = pytest.mark.engine
SHARED_BASE = DebianBase(debian="bookworm", packages=("python3",))


# Modules whose tests assert nothing about time or about failed requests under load: CI
# runs them two at a time (scripts/test). Every other engine test runs alone, so that a
# zero-downtime or timing check sees no load but the one it makes.
SHARES_MACHINE = frozenset(
    f"test_{name}.py"
    for name in (
        "ancestry", "backup_repository", "backups", "build", "data_guard", "engine_contract",
        "gate", "gate_stale", "health_command", "hostile_role", "lockdown", "podman_engine",
        "port_change",
        "records", "secrets", "single_writer", "stack_secrets",
    )
)  # fmt: skip
assert all(Path(__file__).with_name(name).is_file() for name in SHARES_MACHINE), SHARES_MACHINE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)
            if item.path.name in SHARES_MACHINE:
                item.add_marker(pytest.mark.shares_machine)


@pytest.fixture(scope="session")
def engine() -> PodmanEngine:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/setup")
    return PodmanEngine()


@pytest.fixture(scope="session")
def shared_base(engine: PodmanEngine) -> str:
    """The id of the shared bookworm+python3 base, bootstrapped once per machine."""
    return ensure_base(engine, SHARED_BASE, NullProgress()).id


# Every fleet a test was given, with the test: swept again at the end of the session,
# where anything found is a leak (a process that outlived its test), named in the summary.
_GIVEN: dict[str, str] = {}
_LEAKED: dict[str, list[str]] = {}


@pytest.fixture
def fleet_name(request: pytest.FixtureRequest) -> str:
    name = f"corral-test-{uuid.uuid4().hex[:8]}"
    _GIVEN[name] = request.node.nodeid
    return name


def pytest_sessionfinish(session: pytest.Session) -> None:
    for name, test in _GIVEN.items():
        label = f"label=io.corral.fleet={name}"
        found = [
            *_ids("pod", "ps", "--quiet", "--filter", label),
            *_ids("ps", "--all", "--quiet", "--filter", label),
            *_ids("network", "ls", "--quiet", "--filter", label),
            *_ids("volume", "ls", "--quiet", "--filter", label),
        ]
        if found:
            _LEAKED[test] = found
            _sweep(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for test, objects in _LEAKED.items():
        terminalreporter.write_line(
            f"LEAK: {len(objects)} podman object(s) of {test} outlived it (removed now): "
            + " ".join(objects),
            red=True,
        )


@pytest.fixture
def cleanup_fleet(fleet_name: str) -> Iterator[str]:
    """Removes every pod, container, image, network, volume and secret of the fleet.

    Its images untagged by a build (stages, superseded versions) and the layers only they
    use go too: left behind, they pile up by the thousand over a run and every image
    listing (corral's and podman's) slows down with them, to 20 s a call.
    """
    yield fleet_name
    _sweep(fleet_name)


def _sweep(fleet_name: str) -> None:
    label = f"label=io.corral.fleet={fleet_name}"
    _remove(["pod", "rm", "--force"], _ids("pod", "ps", "--quiet", "--filter", label))
    _remove(["rm", "--force", "--time", "0"], _ids("ps", "--all", "--quiet", "--filter", label))
    images = _ids("images", "--all", "--quiet", "--filter", label)
    tagged = _ids("images", "--quiet", "--filter", f"reference=localhost/corral/{fleet_name}/*")
    _remove(["rmi", "--force"], sorted({*images, *tagged}))
    _remove(["network", "rm", "--force"], _ids("network", "ls", "--quiet", "--filter", label))
    _remove(["volume", "rm", "--force"], _ids("volume", "ls", "--quiet", "--filter", label))
    secrets = _ids("secret", "ls", "--noheading", "--format", "{{.Name}}")
    _remove(["secret", "rm"], [s for s in secrets if s.startswith(f"{fleet_name}-")])


def _ids(*args: str) -> list[str]:
    """What a podman listing prints, one word each; retried when podman fails: a listing
    meets images another process removes meanwhile ("image not known")."""
    for _ in range(5):
        proc = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return sorted(set(proc.stdout.split()))
        time.sleep(0.5)
    pytest.fail(f"podman {' '.join(args)} keeps failing: {proc.stderr.strip()}")


def _remove(command: list[str], names: list[str]) -> None:
    if names:
        subprocess.run(["podman", *command, *names], capture_output=True, check=False)


def write_fleet(folder: Path, fleet: str, extra_run: str = "true", app_text: str = "v1") -> Path:
    """A one-role fleet on the shared base; returns the spec path."""
    (folder / "app").mkdir(parents=True, exist_ok=True)
    (folder / "app" / "server.py").write_text(f"print({app_text!r})\n")
    (folder / "tests").mkdir(exist_ok=True)
    spec = folder / "corral.yaml"
    spec.write_text(
        f"fleet: {fleet}\n"
        "roles:\n"
        "  web:\n"
        "    base: {debian: bookworm, packages: [python3]}\n"
        "    build:\n"
        "      copy: [{src: app/, dest: /srv/app}]\n"
        f"      run: [{extra_run!r}]\n"
        "    run: {command: [python3, /srv/app/server.py], user: app, port: 8000}\n"
        "    tests: [tests/]\n"
    )
    return spec


@pytest.fixture
def fleet(tmp_path: Path, cleanup_fleet: str) -> Iterator[Fleet]:
    """A one-role fleet (web, public on a free port, a data volume) written to tmp_path."""
    made = Fleet(tmp_path / "fleet", cleanup_fleet, free_port())
    made.folder.mkdir()
    made.write()
    yield made
    made.corral("destroy", "--yes", check=False)


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every fleet's default state (and the corral processes a test starts, which inherit
    the environment) in a folder of the test's own, never /var/lib/corral."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("CORRAL_STATE_HOME", str(home))
    monkeypatch.delenv("CORRAL_STATE", raising=False)
    return home


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A private PostgreSQL cluster for the session (fails if PostgreSQL is missing)."""
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The deploy tests whose outcome rests on the state run on both backends: for
    ``postgresql`` every corral the test starts uses a fresh database of the private
    cluster (``CORRAL_STATE``, inherited by the processes; still set when the fleet's
    teardown destroys it)."""
    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        monkeypatch.setenv("CORRAL_STATE", cluster.new_database())
    return str(request.param)
