"""Reasons an operator can read: HAProxy's check codes in words, a smoke test's failure
with its assertion and the instances' log lines."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from corral.cli.views import show_error
from corral.edge.runtime import describe_check
from corral.errors import DeployError
from corral.testing.reasons import smoke_failure
from corral.testing.runner import CheckResult


@pytest.mark.parametrize(
    ("status", "code", "desc", "words"),
    [
        (
            "L7STS",
            "404",
            "HTTP status check returned code <3C>404<3E>",
            "the health check got HTTP 404",
        ),
        ("L7STS", "503", "", "the health check got HTTP 503"),
        (
            "L4CON",
            "",
            "Connection refused",
            "the health check's connection was refused (nothing listens on the port)",
        ),
        (
            "L4TOUT",
            "",
            "",
            "the health check's connection timed out (nothing answered on the port)",
        ),
        ("L7TOUT", "", "", "the health check got no HTTP answer in time"),
        ("L7RSP", "", "", "the health check got an answer that is not HTTP"),
        ("* L7OK", "200", "", "the health check got HTTP 200"),  # a check in progress
        ("INI", "", "Initializing", "the first health check has not finished yet (Initializing)"),
        ("", "", "", "no health check has run yet"),
        ("L9NEW", "", "", "the health check reported L9NEW"),
    ],
)
def test_haproxy_check_results_are_said_in_words(
    status: str, code: str, desc: str, words: str
) -> None:
    assert describe_check(status, code, desc) == words


def _check(name: str, outcome: str, message: str = "") -> CheckResult:
    return CheckResult(name, "http", outcome, 0.1, message)


def test_a_smoke_failure_carries_the_assertion_and_the_instances_last_lines() -> None:
    checks = [
        _check("test_web.py::test_ok", "passed"),
        _check(
            "test_web.py::test_version",
            "failed",
            "AssertionError: assert 'v2' in 'v1'\nassert 'v2' in 'v1'\n + where 'v1' = r.text",
        ),
    ]
    logs = {"shop-web-r2-1": "".join(f"line {n}\n" for n in range(30))}
    error = smoke_failure("web", checks, "pytest output", logs)
    assert error.message == (
        "role web: smoke test failed: test_web.py::test_version: "
        "AssertionError: assert 'v2' in 'v1'"
    )
    log = error.log
    assert log[:3] == [
        "test_web.py::test_version: AssertionError: assert 'v2' in 'v1'",
        "test_web.py::test_version: assert 'v2' in 'v1'",
        "test_web.py::test_version:  + where 'v1' = r.text",
    ]
    assert log[3:] == [f"shop-web-r2-1: line {n}" for n in range(20, 30)]
    assert [c["name"] for c in error.checks] == ["test_web.py::test_version"]


def test_the_assertion_is_shown_above_instance_logs_however_long_they_are() -> None:
    """On the stack example, two app instances' tracebacks (10 lines each) pushed the
    failed test's ``assert 3660 <= 50`` out of the 15 lines the deploy printed."""
    checks = [
        _check("test_rows.py::test_page", "failed", "AssertionError: 3660 rows\nassert 3660 <= 50")
    ]
    logs = {f"shop-app-r6-{n}": "".join(f"trace {i}\n" for i in range(30)) for n in (1, 2)}
    smoke = smoke_failure("app", checks, "", logs)
    out = io.StringIO()
    show_error(Console(file=out, width=200), DeployError(smoke.message, failures=[smoke]))
    shown = [line.strip() for line in out.getvalue().splitlines()]
    assert shown[1:3] == [
        "| test_rows.py::test_page: AssertionError: 3660 rows",
        "| test_rows.py::test_page: assert 3660 <= 50",
    ]
    for n in (1, 2):  # every instance keeps the 10 lines the failure has of it
        assert [s for s in shown if f"shop-app-r6-{n}:" in s] == [
            f"| shop-app-r6-{n}: trace {i}" for i in range(20, 30)
        ]


def test_a_health_failures_log_shows_its_last_lines() -> None:
    failure = DeployError(
        "role app: did not become healthy", role="app", log=[f"l{i}" for i in range(40)]
    )
    out = io.StringIO()
    show_error(Console(file=out, width=200), DeployError("deploy failed", failures=[failure]))
    assert [line.strip() for line in out.getvalue().splitlines()[1:]] == [
        f"| l{i}" for i in range(25, 40)
    ]


def test_a_smoke_failure_without_a_failed_test_says_what_pytest_said() -> None:
    error = smoke_failure("web", [], "collected 0 items\nERROR: file not found: x.py\n", {})
    assert error.message == "role web: smoke test failed: ERROR: file not found: x.py"
    assert error.log == ["collected 0 items", "ERROR: file not found: x.py"]


def test_a_servers_last_check_is_read_with_its_code_and_said_in_words() -> None:
    from corral.edge.runtime import _server

    row = {
        "srv_admin_state": "0",
        "srv_name": "web-r2-1",
        "srv_addr": "10.89.0.5",
        "srv_port": "8000",
        "srv_op_state": "0",
        "srv_uweight": "1",
        "srv_check_state": "6",
        "srv_check_status": "17",
        "srv_check_result": "2",
    }
    stat = {"check_status": "L7STS", "check_code": "404", "status": "DOWN", "check_desc": "x"}
    server = _server("web", row, stat)
    assert (server.check_code, server.check_words) == ("404", "the health check got HTTP 404")
