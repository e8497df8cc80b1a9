"""A role's test files run in a sandbox: real bubblewrap, real pytest, real attacks.

The attacking tests (ATTACKS) each assert that one thing a hostile test would try is
blocked: reading a secret outside the view or one hidden inside it, writing the tests' own
folder, reaching a Unix socket on the host, seeing the host's processes, Podman's socket
or storage, holding a capability, making a user namespace. Run by corral, every one
passes; run by plain pytest on the host, the same file fails them all, so each checks
something that can fail. The exec broker is exercised the same way: a test's ``host``
runs commands only in the environment's instances.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from corral.engines.values import ExecResult
from corral.errors import EngineError
from corral.testing import broker
from corral.testing.runner import run_role_tests

ATTACKS = """
    import json
    import os
    import socket
    import subprocess
    from pathlib import Path

    import pytest

    T = json.loads((Path(__file__).parent / "targets.json").read_text())

    def test_a_secret_outside_the_view_cannot_be_read():
        with pytest.raises(OSError):
            Path(T["secret_outside"]).read_text()

    def test_a_hidden_secret_beside_the_tests_cannot_be_read():
        try:
            found = Path(T["secret_hidden"]).read_text()
        except OSError:
            found = ""
        assert found == ""

    def test_a_hidden_folder_beside_the_tests_is_empty():
        assert os.listdir(T["hidden_dir"]) == []

    def test_the_tests_own_folder_cannot_be_written():
        with pytest.raises(OSError):
            Path(T["own_file"]).write_text("rewritten")

    def test_a_socket_on_the_host_cannot_be_reached():
        with socket.socket(socket.AF_UNIX) as conn, pytest.raises(OSError):
            conn.connect(T["host_socket"])

    def test_an_abstract_socket_on_the_host_cannot_be_reached():
        with socket.socket(socket.AF_UNIX) as conn, pytest.raises(OSError):
            conn.connect("\\0" + T["abstract_socket"])

    def test_the_spec_folder_around_the_tests_is_not_seen():
        assert not Path(T["beside_tests"]).exists()

    def test_the_hosts_processes_are_not_seen():
        assert not Path(f"/proc/{T['host_pid']}").exists()

    def test_no_engine_socket_or_storage():
        for path in ("/run/podman", "/var/lib/containers", "/var/run/docker.sock", "/var/lib"):
            assert not Path(path).exists(), path

    def test_nothing_but_tmp_can_be_written():
        for folder in ("/", "/usr", "/etc"):
            with pytest.raises(OSError):
                Path(folder, T["probe"]).write_text("x")
        Path("/tmp/scratch").write_text("fine")

    def test_the_engines_program_says_why_it_cannot_work():
        proc = subprocess.run(["podman", "ps"], capture_output=True, text=True)
        assert proc.returncode == 125 and "not available to role tests" in proc.stderr

    def test_no_capabilities():
        status = Path("/proc/self/status").read_text()
        assert "CapEff:\\t0000000000000000" in status
        assert "CapBnd:\\t0000000000000000" in status

    def test_no_new_user_namespace():
        assert subprocess.run(["unshare", "--user", "true"]).returncode != 0
"""


@pytest.fixture
def host_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sock") / "host.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        yield path


@pytest.fixture
def abstract_socket() -> Iterator[str]:
    name = f"corral-unit-abstract-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("\0" + name)
        server.listen()
        yield name


@pytest.fixture
def attacks(tmp_path: Path, host_socket: Path, abstract_socket: str) -> dict[str, Path]:
    """The attacking tests and their targets; returns the paths the sandbox must hide."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    (outside / "secret").chmod(0o600)
    tests = tmp_path / "role" / "tests"
    tests.mkdir(parents=True)
    (tmp_path / "role" / "deploy-key").write_text("beside the tests, in the spec's folder")
    (tests / "test_attacks.py").write_text(textwrap.dedent(ATTACKS))
    (tests / "password").write_text("hunter2")
    (tests / "state").mkdir()
    (tests / "state" / "state.db").write_text("rows")
    targets = {
        "secret_outside": str(outside / "secret"),
        "secret_hidden": str(tests / "password"),
        "hidden_dir": str(tests / "state"),
        "own_file": str(tests / "test_attacks.py"),
        "host_socket": str(host_socket),
        "abstract_socket": abstract_socket,
        "beside_tests": str(tmp_path / "role" / "deploy-key"),
        "host_pid": os.getpid(),
        "probe": PROBE,
    }
    (tests / "targets.json").write_text(json.dumps(targets))
    return {"tests": tests, "password": tests / "password", "state": tests / "state"}


#: The file the attacks try to make in /, /usr and /etc (which the host run removes).
PROBE = f"corral-unit-sandbox-probe-{os.getpid()}"

ENV: dict[str, Any] = {"fleet": "unit", "role": "web", "edge_url": None, "instances": []}


def test_a_role_tests_attacks_are_blocked_in_the_sandbox(
    attacks: dict[str, Path], tmp_path: Path
) -> None:
    before = (attacks["tests"] / "test_attacks.py").read_bytes()
    workdir = tmp_path / "work"  # corral's is an empty folder of its own
    workdir.mkdir()
    outcome = run_role_tests(
        [attacks["tests"]],
        ENV,
        workdir=workdir,
        hidden=[attacks["password"], attacks["state"]],
    )
    failed = {c.name: c.message for c in outcome.checks if c.outcome != "passed"}
    assert outcome.ok and not failed, (failed, outcome.log_tail)
    assert len(outcome.checks) == ATTACKS.count("def test_")
    assert (attacks["tests"] / "test_attacks.py").read_bytes() == before
    assert (attacks["password"]).read_text() == "hunter2"


def test_the_same_attacks_succeed_on_the_host(attacks: dict[str, Path]) -> None:
    """Without the sandbox every attack gets through: each test above can fail."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
            cwd=attacks["tests"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        for folder in ("/", "/usr", "/etc"):
            Path(folder, PROBE).unlink(missing_ok=True)
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{ATTACKS.count('def test_')} failed"), proc.stdout[-3000:]


SWAPPER = """
    import os
    from pathlib import Path

    def pytest_unconfigure(config):
        # after pytest and corral's plugin wrote their reports: point both at a secret
        for report in (Path(config.option.xmlpath), Path(os.environ["CORRAL_TEST_FIXTURES_OUT"])):
            report.unlink(missing_ok=True)
            report.symlink_to(os.environ["SECRET_PATH"])
"""


def test_reports_swapped_for_links_are_not_followed(tmp_path: Path) -> None:
    """corral reads the reports the tests wrote as itself, on the host: a link there to a
    file outside the view must not make it read (and show, and store) that file."""
    secret = tmp_path / "secret"
    secret.write_text("<testsuite><testcase name='s3cret-in-a-report'/></testsuite>")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_plain.py").write_text("def test_plain():\n    pass\n")
    (tests / "conftest.py").write_text(textwrap.dedent(SWAPPER))
    workdir = tmp_path / "work"
    workdir.mkdir()
    outcome = run_role_tests([tests], ENV, workdir=workdir, variables={"SECRET_PATH": str(secret)})
    assert "s3cret" not in repr(outcome), outcome
    assert outcome.checks == ()  # no report to believe: corral test counts it as untested


# -- the exec broker -----------------------------------------------------------------------

HOST_TESTS = """
    def test_runs_in_its_instance(host):
        assert host.run("echo hello").stdout == "ran echo hello in web-1"

    def test_every_instance(hosts):
        assert [h.run("true").rc for h in hosts] == [0, 0]
"""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, name: str, command: Sequence[str], timeout: float) -> ExecResult:
        self.calls.append((name, tuple(command)))
        if name == "gone":
            raise EngineError("podman exec in gone failed: no such container")
        return ExecResult(0, f"ran {command[-1]} in {name}", "")


def _instances(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "backend": f"podman://{n}", "address": "", "port": None} for n in names]


def test_host_commands_go_through_the_broker(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_host.py").write_text(textwrap.dedent(HOST_TESTS))
    recorder = Recorder()
    env = {**ENV, "instances": _instances("web-1", "web-2")}
    outcome = run_role_tests([tests], env, workdir=tests, exec_in=recorder)
    assert outcome.ok, outcome.log_tail
    assert ("web-1", ("/bin/sh", "-c", "echo hello")) in recorder.calls
    assert {name for name, _ in recorder.calls} == {"web-1", "web-2"}


def test_the_broker_refuses_other_containers_and_bad_requests(tmp_path: Path) -> None:
    recorder = Recorder()
    path = tmp_path / "exec.sock"
    with broker.ExecBroker(path, ["web-1", "gone"], recorder, timeout=5):
        assert broker.request(path, "web-1", "id", 5) == {
            "status": 0,
            "stdout": "ran id in web-1",
            "stderr": "",
        }
        refused = broker.request(path, "corral-edge", "rm -rf /", 5)
        assert "not an instance of this test environment" in refused["error"]
        assert "no such container" in broker.request(path, "gone", "true", 5)["error"]
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(path))
            conn.sendall(b'["web-1", "id"]\n')
            assert "names a container and a command" in conn.makefile().readline()
    assert recorder.calls == [
        ("web-1", ("/bin/sh", "-c", "id")),
        ("gone", ("/bin/sh", "-c", "true")),
    ]
    assert not path.exists()


def test_a_listed_file_sees_its_helper_modules_and_conftests_not_its_data(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    (spec / "tests" / "web").mkdir(parents=True)
    (spec / "tests" / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef greeting():\n    return 'hi'\n"
    )
    (spec / "tests" / "web" / "helpers.py").write_text("VALUE = 42\n")
    (spec / "tests" / "api").mkdir()
    (spec / "tests" / "api" / "test_api.py").write_text("def test_api(greeting):\n    pass\n")
    (spec / "tests" / "notes.txt").write_text("between the listed paths, not listed")
    (spec / "tests" / "web" / "data.json").write_text("{}")
    (spec / "tests" / "web" / "test_one.py").write_text(
        textwrap.dedent(
            """
            import sys
            from pathlib import Path

            sys.path.insert(0, str(Path(__file__).parent))
            import helpers

            def test_helper_and_conftest(greeting):
                assert helpers.VALUE == 42 and greeting == "hi"

            def test_data_beside_a_listed_file_is_not_shown():
                assert not (Path(__file__).parent / "data.json").exists()
                assert not (Path(__file__).parents[1] / "notes.txt").exists()

            def test_the_working_folder_is_writable():
                Path("scratch.txt").write_text("fine")
            """
        )
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    outcome = run_role_tests(
        [spec / "tests" / "web" / "test_one.py", spec / "tests" / "api"], ENV, workdir=workdir
    )
    assert outcome.ok and len(outcome.checks) == 4, outcome.log_tail
