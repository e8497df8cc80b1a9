"""The suite's verdict on a role's own tests and the deploy gate that reads it.

A role that lists tests is tested only if at least one of them ran and passed: a run
where every test was skipped, or whose files collected nothing, is not a pass.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from corral.deploy.desired import RoleRelease
from corral.deploy.scope import Scope
from corral.errors import GateError
from corral.state import State
from corral.testing.suite import _already_passed, gate, untested_reason
from tests.unit.builders import role_release

HEALTH = {"name": "health", "kind": "health", "outcome": "passed"}
LOCKDOWN = {"name": "lockdown: read-only root (x)", "kind": "lockdown", "outcome": "passed"}


def check(outcome: str, kind: str = "pytest", name: str = "test_a.py::test_a") -> dict[str, Any]:
    return {"name": name, "kind": kind, "outcome": outcome}


@pytest.mark.parametrize(
    ("checks", "found"),
    [
        ([HEALTH, LOCKDOWN], "collected no test"),
        ([HEALTH, check("skipped"), check("skipped", "http")], "skipped all 2 of their tests"),
        ([check("skipped", "testinfra")], "skipped all 1 of their tests"),
    ],
)
def test_a_run_where_no_own_test_ran_is_not_tested(
    checks: list[dict[str, Any]], found: str
) -> None:
    reason = untested_reason(("tests/web/",), checks)
    assert reason is not None
    assert found in reason and "tests/web/" in reason and "not tested" in reason


@pytest.mark.parametrize(
    ("tests", "checks"),
    [
        (("tests/",), [HEALTH, check("passed")]),
        (("tests/",), [HEALTH, check("skipped"), check("passed", "http")]),
        (("tests/",), [HEALTH, check("skipped"), check("failed")]),  # failed already
        (("tests/",), [HEALTH, check("error")]),  # a collection error: failed already
        ((), [HEALTH, LOCKDOWN]),  # no tests at all: validate's "no tests" warning path
    ],
)
def test_a_run_that_ran_a_test_or_lists_none_is_judged_elsewhere(
    tests: tuple[str, ...], checks: list[dict[str, Any]]
) -> None:
    assert untested_reason(tests, checks) is None


def test_lockdown_and_health_passes_alone_do_not_count() -> None:
    assert untested_reason(("t.py",), [HEALTH, LOCKDOWN, check("skipped")]) is not None


def _ctx(state: State) -> Any:
    return SimpleNamespace(state=state, scope=Scope("shop"))


def _record(state: State, rr: RoleRelease, outcome: str, checks: list[dict[str, Any]]) -> None:
    state.record_test_run(
        "shop", rr.role, rr.image_id, rr.image_digest, rr.image_version, outcome, checks, 1.0, ""
    )


def test_the_gate_refuses_a_passed_record_where_every_test_was_skipped(state: State) -> None:
    # Recorded as passed (as before all-skipped runs failed): the gate still refuses it.
    web = role_release("web", tests=["tests/web/"])
    _record(state, web, "passed", [HEALTH, check("skipped")])
    with pytest.raises(GateError) as refused:
        gate(_ctx(state), {"web": web}, None)
    message = refused.value.message
    assert "web v-img-a: its tests (tests/web/) skipped all 1 of their tests" in message
    assert "run: corral test web" in message


def test_the_gate_names_each_reason(state: State) -> None:
    api, web = role_release("api", tests=["t/"]), role_release("web", tests=["t/"])
    _record(state, web, "passed", [HEALTH, check("passed")])
    with pytest.raises(GateError, match="not tested: api v-img-a: no passing test record; run"):
        gate(_ctx(state), {"api": api, "web": web}, None)
    _record(state, api, "passed", [HEALTH, check("passed")])
    gate(_ctx(state), {"api": api, "web": web}, None)  # both tested: no refusal


def test_a_role_without_tests_passes_the_gate_on_health_and_lockdown(state: State) -> None:
    bare = role_release("worker")
    _record(state, bare, "passed", [HEALTH, LOCKDOWN])
    gate(_ctx(state), {"worker": bare}, None)


def test_corral_test_runs_again_a_passed_record_that_ran_no_test(state: State) -> None:
    # Otherwise "corral test" would say "already passed" while the gate refuses the image.
    web = role_release("web", tests=["tests/web/"])
    _record(state, web, "passed", [HEALTH, check("skipped")])
    assert _already_passed(_ctx(state), web) is None
    _record(state, web, "passed", [HEALTH, check("passed")])
    again = _already_passed(_ctx(state), web)
    assert again is not None and again.outcome == "skipped"
