"""Running a role's own tests: the runner and the pytest plugin, for real, in subprocesses.

The tests are small generated files in ``tmp_path`` that talk to a tiny HTTP server
running in a thread of this process (``edge_url`` points at it). Nothing here needs
Podman: the testinfra tests use a container that does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from corral.errors import UsageError
from corral.testing.plugin import SMOKE_REASON
from corral.testing.runner import (
    INTERRUPT_GRACE_S,
    CheckResult,
    PytestOutcome,
    child_environ,
    classify,
    parse_junit,
    run_role_tests,
)
from corral.testing.suite import untested_reason
from tests.unit.serving import serving

BOGUS_CONTAINER = "corral-unit-no-such-container-4f1c"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    visits = 0

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"ok": True})
        elif self.path == "/":
            type(self).visits += 1
            self._reply(200, {"greeting": "hello", "visits": type(self).visits})
        else:
            self._reply(404, {"error": "not found"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture
def env(server_url: str) -> dict[str, Any]:
    port = int(server_url.rstrip("/").rsplit(":", 1)[1])
    return {
        "fleet": "unit",
        "role": "web",
        "mode": "full",
        "edge_url": server_url,
        "instances": [
            {
                "name": BOGUS_CONTAINER,
                "url": server_url,
                "address": "127.0.0.1",
                "port": port,
                "backend": f"podman://{BOGUS_CONTAINER}",
            }
        ],
        "engine": "podman",
    }


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source), "utf-8")
    return path


def by_name(outcome: PytestOutcome) -> dict[str, CheckResult]:
    return {check.name.rsplit("::", 1)[-1]: check for check in outcome.checks}


HTTP_TESTS = """
    import httpx

    def test_healthz(edge_url):
        assert httpx.get(edge_url + "healthz", timeout=5).json() == {"ok": True}

    def test_front_page_counts(edge_url):
        first = httpx.get(edge_url, timeout=5).json()["visits"]
        assert httpx.get(edge_url, timeout=5).json()["visits"] > first

    def test_instance(instance_url, instance_urls, corral_env):
        assert instance_urls == [instance_url]
        assert corral_env["role"] == "web"
        assert httpx.get(instance_url + "nope", timeout=5).status_code == 404

    def test_plain():
        assert 1 + 1 == 2
"""

HOST_TESTS = """
    def test_uses_host(host):
        assert host.file("/etc/os-release").exists

    def test_uses_hosts(hosts):
        assert hosts
"""


# -- outcomes ----------------------------------------------------------------------------


def test_passing_tests(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_http.py", HTTP_TESTS)
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert outcome.ok, outcome.log_tail
    assert outcome.exit_code == 0
    checks = by_name(outcome)
    assert set(checks) == {"test_healthz", "test_front_page_counts", "test_instance", "test_plain"}
    assert {c.outcome for c in checks.values()} == {"passed"}
    assert {c.message for c in checks.values()} == {""}
    assert checks["test_healthz"].name == "tests/test_http.py::test_healthz"
    assert checks["test_healthz"].kind == "http"
    assert checks["test_instance"].kind == "http"
    assert checks["test_plain"].kind == "pytest"
    assert all(c.seconds >= 0 for c in outcome.checks)
    assert outcome.counts == {"passed": 4}
    assert "4 passed" in outcome.log_tail
    assert 0 < outcome.seconds < 60


def test_failing_tests_are_results_not_exceptions(tmp_path: Path, env: dict[str, Any]) -> None:
    write(
        tmp_path / "tests",
        "test_fail.py",
        """
        import httpx

        def test_greeting(edge_url):
            body = httpx.get(edge_url, timeout=5).json()
            assert body["greeting"] == "hello from corral"

        def test_ok(edge_url):
            pass

        def test_raises():
            raise RuntimeError("boom")
        """,
    )
    outcome = run_role_tests([tmp_path / "tests" / "test_fail.py"], env, workdir=tmp_path)
    assert not outcome.ok
    assert outcome.exit_code == 1
    checks = by_name(outcome)
    assert checks["test_greeting"].outcome == "failed"
    assert checks["test_greeting"].kind == "http"
    assert "hello from corral" in checks["test_greeting"].message
    assert checks["test_ok"].outcome == "passed"
    assert checks["test_raises"].outcome == "failed"
    assert "RuntimeError: boom" in checks["test_raises"].message
    assert "2 failed, 1 passed" in outcome.log_tail


def test_a_syntax_error_is_one_error_check(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_broken.py", "def test_x(:\n    pass\n")
    write(tmp_path / "tests", "test_fine.py", "def test_fine():\n    pass\n")
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert not outcome.ok
    errors = [c for c in outcome.checks if c.outcome == "error"]
    assert len(errors) == 1
    (error,) = errors
    assert error.kind == "pytest"
    assert error.name == "tests/test_broken.py"
    assert "SyntaxError" in error.message
    assert "def test_x(:" in error.message
    # The other files still run.
    assert by_name(outcome)["test_fine"].outcome == "passed"


def test_a_hanging_test_times_out_and_the_rest_run(tmp_path: Path, env: dict[str, Any]) -> None:
    write(
        tmp_path / "tests",
        "test_hang.py",
        """
        import time

        def test_hangs():
            time.sleep(60)

        def test_after():
            pass
        """,
    )
    started = time.monotonic()
    outcome = run_role_tests([Path("tests")], env, per_test_timeout=2, workdir=tmp_path)
    assert time.monotonic() - started < 20
    assert not outcome.ok
    checks = by_name(outcome)
    assert checks["test_hangs"].outcome == "failed"
    assert "Timeout" in checks["test_hangs"].message
    assert 1.5 < checks["test_hangs"].seconds < 10
    assert checks["test_after"].outcome == "passed"


def _alive_with(marker: str) -> list[int]:
    """The pids (not zombies) whose command line holds ``marker``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            alive.append(int(entry.name))
    return alive


def test_the_whole_run_times_out_and_everything_it_started_dies(
    tmp_path: Path, env: dict[str, Any]
) -> None:
    marker = f"corral-unit-sleeper-{os.getpid()}-{time.monotonic_ns()}"
    write(
        tmp_path / "tests",
        "test_slow.py",
        f"""
        import subprocess
        import time

        def test_quick():
            pass

        def test_sleeps():
            # a grandchild in its own session, which a process-group kill would miss
            sleeper = subprocess.Popen(["sh", "-c", "sleep 60; : {marker}"], start_new_session=True)
            time.sleep(0.3)
            assert sleeper.poll() is None  # it runs: what follows is not proved by a typo
            time.sleep(30)
        """,
    )
    started = time.monotonic()
    outcome = run_role_tests([Path("tests")], env, total_timeout=3, workdir=tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < 3 + INTERRUPT_GRACE_S + 3, f"took {elapsed:.1f}s"  # not the 30 s
    assert not outcome.ok
    assert outcome.exit_code != 0
    checks = by_name(outcome)
    assert checks["test_quick"].outcome == "passed"  # pytest was interrupted, not killed
    assert [c.name for c in outcome.checks] == ["tests/test_slow.py::test_quick", "pytest"]
    last = outcome.checks[-1]
    assert (last.name, last.kind, last.outcome) == ("pytest", "pytest", "error")
    assert last.message == "timed out after 3s"
    assert "timed out after 3s" in outcome.log_tail
    deadline = time.monotonic() + 3
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_with(marker) == []


def test_no_tests_collected_is_a_clean_run_but_not_tested(
    tmp_path: Path, env: dict[str, Any]
) -> None:
    write(tmp_path / "tests", "helpers.py", "VALUE = 1\n")
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert outcome.ok  # pytest had no complaint (a smoke run may well collect nothing)...
    assert outcome.exit_code == 5
    assert outcome.checks == ()
    checks = [c.to_dict() for c in outcome.checks]
    assert "collected no test" in (untested_reason(("tests",), checks) or "")  # ...not a pass


def test_every_test_skipped_is_a_clean_run_but_not_tested(
    tmp_path: Path, env: dict[str, Any]
) -> None:
    write(
        tmp_path / "tests",
        "test_skips.py",
        """
        import pytest

        @pytest.mark.skip(reason="later")
        def test_later():
            pass

        def test_skips_itself():
            pytest.skip("not here")
        """,
    )
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert outcome.ok and outcome.exit_code == 0
    assert {c.outcome for c in outcome.checks} == {"skipped"}
    checks = [c.to_dict() for c in outcome.checks]
    assert "skipped all 2 of their tests" in (untested_reason(("tests",), checks) or "")


# -- modes and kinds ---------------------------------------------------------------------


def test_smoke_mode_runs_only_edge_tests(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_http.py", HTTP_TESTS)
    write(tmp_path / "tests", "test_host.py", HOST_TESTS)
    smoke_env = {**env, "instances": []}  # after a deploy, corral lists no instances
    outcome = run_role_tests([Path("tests")], smoke_env, mode="smoke", workdir=tmp_path)
    assert outcome.ok, outcome.log_tail
    checks = by_name(outcome)
    assert checks["test_healthz"].outcome == "passed"
    assert checks["test_front_page_counts"].outcome == "passed"
    assert checks["test_plain"].outcome == "passed"
    for name in ("test_instance", "test_uses_host", "test_uses_hosts"):
        assert checks[name].outcome == "skipped", name
        assert checks[name].message == SMOKE_REASON
    assert checks["test_uses_host"].kind == "testinfra"
    assert checks["test_uses_hosts"].kind == "testinfra"
    assert checks["test_instance"].kind == "http"


def test_the_mode_argument_wins_over_the_env(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_host.py", HOST_TESTS)
    outcome = run_role_tests(
        [Path("tests")], {**env, "mode": "full"}, mode="smoke", workdir=tmp_path
    )
    assert {c.outcome for c in outcome.checks} == {"skipped"}


def test_full_mode_with_a_missing_container_errors(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_host.py", HOST_TESTS)
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert not outcome.ok
    checks = by_name(outcome)
    for name in ("test_uses_host", "test_uses_hosts"):
        assert checks[name].kind == "testinfra"
        assert checks[name].outcome == "error"
        assert f"cannot run commands in container {BOGUS_CONTAINER}" in checks[name].message


def test_an_engine_without_a_test_backend_fails_host_tests_saying_so(
    tmp_path: Path, env: dict[str, Any]
) -> None:
    write(tmp_path / "tests", "test_host.py", HOST_TESTS)
    instances = [{**env["instances"][0], "backend": None}]
    outcome = run_role_tests(
        [Path("tests")], {**env, "engine": "swarm", "instances": instances}, workdir=tmp_path
    )
    checks = by_name(outcome)
    for name in ("test_uses_host", "test_uses_hosts"):
        assert checks[name].outcome == "error"
        message = checks[name].message
        assert f"the swarm engine cannot run commands in container {BOGUS_CONTAINER}" in message


def test_a_null_edge_url_skips_edge_tests(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_http.py", HTTP_TESTS)
    outcome = run_role_tests([Path("tests")], {**env, "edge_url": None}, workdir=tmp_path)
    assert outcome.ok, outcome.log_tail
    checks = by_name(outcome)
    assert checks["test_healthz"].outcome == "skipped"
    assert "no edge" in checks["test_healthz"].message
    assert checks["test_instance"].outcome == "passed"


def test_late_requested_fixtures_are_classified(tmp_path: Path, env: dict[str, Any]) -> None:
    write(
        tmp_path / "tests",
        "test_late.py",
        """
        def test_late(request):
            assert request.getfixturevalue("edge_url")
        """,
    )
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert outcome.ok, outcome.log_tail
    assert by_name(outcome)["test_late"].kind == "http"


def test_conftest_fixtures_and_the_project_ini_are_isolated(
    tmp_path: Path, env: dict[str, Any]
) -> None:
    # A project's pytest settings (here: an addopts corral's pytest cannot honour) stay out.
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --no-such-option\n")
    write(
        tmp_path / "tests",
        "conftest.py",
        """
        import pytest

        @pytest.fixture
        def greeting():
            return "hello"
        """,
    )
    write(tmp_path / "tests", "test_c.py", "def test_c(greeting):\n    assert greeting\n")
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert outcome.ok, outcome.log_tail


def test_classify() -> None:
    assert classify(frozenset({"host", "edge_url"})) == "testinfra"
    assert classify(frozenset({"hosts"})) == "testinfra"
    assert classify(frozenset({"edge_url", "corral_env"})) == "http"
    assert classify(frozenset({"instance_urls"})) == "http"
    assert classify(frozenset({"corral_env"})) == "pytest"
    assert classify(frozenset()) == "pytest"


def test_parse_junit_without_a_file(tmp_path: Path) -> None:
    assert parse_junit(tmp_path / "missing.xml") == ()
    (tmp_path / "bad.xml").write_text("<testsuites><testcase")
    assert parse_junit(tmp_path / "bad.xml") == ()


# -- the plugin on its own ---------------------------------------------------------------


def test_the_plugin_without_corral_says_how_to_run(tmp_path: Path) -> None:
    write(tmp_path, "test_e.py", "def test_e(edge_url):\n    pass\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_TEST")}
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "corral.testing.plugin"]
    result = subprocess.run(
        [*pytest_argv, "-p", "no:cacheprovider", "-q", "-c", os.devnull, str(tmp_path)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "run these tests with corral test" in result.stdout


# -- misuse ------------------------------------------------------------------------------


def test_misuse_raises_usage_error(tmp_path: Path, env: dict[str, Any]) -> None:
    write(tmp_path / "tests", "test_ok.py", "def test_ok():\n    pass\n")
    tests = [Path("tests")]
    with pytest.raises(UsageError, match="mode"):
        run_role_tests(tests, env, mode="partial", workdir=tmp_path)
    with pytest.raises(UsageError, match="no test paths"):
        run_role_tests([], env, workdir=tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        run_role_tests([Path("tests/nope")], env, workdir=tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        run_role_tests(tests, env, workdir=tmp_path / "nope")
    with pytest.raises(UsageError, match="positive"):
        run_role_tests(tests, env, per_test_timeout=0, workdir=tmp_path)
    with pytest.raises(UsageError, match="JSON"):
        run_role_tests(tests, {**env, "bad": object()}, workdir=tmp_path)


# -- the test process's environment -------------------------------------------------------

ENV_PROBE = """
    import os

    def test_environment():
        assert "CORRAL_UNIT_LIVE_SECRET" not in os.environ
        assert "PYTEST_ADDOPTS" not in os.environ
        assert not [v for v in os.environ.values() if "live-value-4c1e" in v]
        assert os.environ["DECLARED"] == "test-value"
        assert os.environ["PATH"] and os.environ["LC_UNIT_PROBE"] == "kept"
"""


def test_the_tests_get_only_allowed_and_declared_variables(
    tmp_path: Path, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_UNIT_LIVE_SECRET", "live-value-4c1e")
    monkeypatch.setenv("DB_PASSWORD", "live-value-4c1e")
    monkeypatch.setenv("LC_UNIT_PROBE", "kept")
    write(tmp_path / "tests", "test_env.py", ENV_PROBE)
    outcome = run_role_tests(
        [Path("tests")], env, workdir=tmp_path, variables={"DECLARED": "test-value"}
    )
    assert outcome.ok, outcome.log_tail
    assert outcome.counts == {"passed": 1}


def test_declared_variables_never_replace_the_contract_ones(tmp_path: Path) -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x", "LC_ALL": "C"}
    variables = {"CORRAL_TEST_ENV": "/elsewhere", "API_TOKEN": "t"}
    made = child_environ(environ, variables, tmp_path / "env.json", tmp_path / "fixtures.json")
    assert made["CORRAL_TEST_ENV"] == str(tmp_path / "env.json")
    assert made["API_TOKEN"] == "t" and made["LC_ALL"] == "C" and made["PATH"] == "/bin"
    assert "AWS_SECRET_ACCESS_KEY" not in made


def test_a_long_failure_is_told_once(tmp_path: Path, env: dict[str, Any]) -> None:
    """pytest 9 shortens a multi-line junit message and says so ("full report in element
    text"); the check's message is the E lines, once, without that note."""
    write(
        tmp_path / "tests",
        "test_long.py",
        """
        def test_long():
            assert False, "\\n".join(f"line {i} " + "w" * 40 for i in range(30)) + "\\nzzzz"
        """,
    )
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    message = by_name(outcome)["test_long"].message
    assert "element text" not in message, message
    assert message.count("line 1 ") == 1 and "zzzz" in message, message


def test_only_the_listed_plugins_load(tmp_path: Path, env: dict[str, Any]) -> None:
    """Autoloading loaded every plugin installed beside corral; hypothesis's alone took a
    second of each run. The role's tests get corral's, timeout's, testinfra's and anyio's."""
    write(
        tmp_path / "tests",
        "test_plugins.py",
        """
        def test_plugins(request):
            names = {name for name, _ in request.config.pluginmanager.list_name_plugin()}
            assert "hypothesispytest" not in names and "xdist" not in names, names
            assert {"corral.testing.plugin", "pytest_timeout", "testinfra.plugin"} <= names
            assert "anyio.pytest_plugin" in names, names
        """,
    )
    outcome = run_role_tests([Path("tests")], env, workdir=tmp_path)
    assert outcome.ok, outcome.log_tail
    assert outcome.counts == {"passed": 1}
