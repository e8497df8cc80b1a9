"""The suite's verdict on a role's own tests and the deploy gate that reads it.

A role that lists tests is tested only if at least one of them ran and passed: a run
where every test was skipped, or whose files collected nothing, is not a pass. The run
that counts is the newest of the image's digest under the role's current test key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.app import _checks
from corral.deploy.desired import RoleRelease
from corral.deploy.service import Context
from corral.engines.fake import FakeEngine
from corral.errors import GateError
from corral.spec import load_spec
from corral.state import State
from corral.testing.suite import (
    _already_passed,
    _with_dependencies,
    gate,
    role_key_parts,
    role_test_key,
    secret_paths,
    spec_dependencies,
    untested_reason,
)
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


SPEC = """\
fleet: shop
roles:
  web:
    base: {image: localhost/web}
    run: {command: [web]}
    tests: [tests/web/]
  api:
    base: {image: localhost/api}
    run: {command: [api]}
    tests: [t/]
  worker:
    base: {image: localhost/worker}
    run: {command: [worker]}
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    for folder in ("tests/web", "t"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "test_a.py").write_text("def test_a():\n    pass\n")
    (tmp_path / "corral.yaml").write_text(SPEC)
    with State.open(tmp_path / "state.db") as state:
        yield Context(load_spec(tmp_path / "corral.yaml"), FakeEngine(), state)


def _record(ctx: Context, rr: RoleRelease, outcome: str, checks: list[dict[str, Any]]) -> None:
    ctx.state.record_test_run(
        "shop",
        rr.role,
        rr.image_id,
        rr.image_digest,
        rr.image_version,
        outcome,
        checks,
        1.0,
        "",
        test_key=role_test_key(ctx, rr.role),
        key_parts=role_key_parts(ctx, rr.role),
    )


def test_the_gate_refuses_a_passed_record_where_every_test_was_skipped(ctx: Context) -> None:
    # Recorded as passed (as before all-skipped runs failed): the gate still refuses it.
    web = role_release("web", tests=["tests/web/"])
    _record(ctx, web, "passed", [HEALTH, check("skipped")])
    with pytest.raises(GateError) as refused:
        gate(ctx, {"web": web}, None)
    message = refused.value.message
    assert "web v-img-a: its tests (tests/web/) skipped all 1 of their tests" in message
    assert "run: corral test web" in message


def test_the_gate_names_each_reason(ctx: Context) -> None:
    api, web = role_release("api", tests=["t/"]), role_release("web", tests=["tests/web/"])
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    with pytest.raises(GateError, match="not tested: api v-img-a: no passing test record; run"):
        gate(ctx, {"api": api, "web": web}, None)
    _record(ctx, api, "passed", [HEALTH, check("passed")])
    gate(ctx, {"api": api, "web": web}, None)  # both tested: no refusal


def test_a_role_without_tests_passes_the_gate_on_health_and_lockdown(ctx: Context) -> None:
    bare = role_release("worker")
    _record(ctx, bare, "passed", [HEALTH, LOCKDOWN])
    gate(ctx, {"worker": bare}, None)


def test_corral_test_runs_again_a_passed_record_that_ran_no_test(ctx: Context) -> None:
    # Otherwise "corral test" would say "already passed" while the gate refuses the image.
    web = role_release("web", tests=["tests/web/"])
    key = role_test_key(ctx, "web")
    _record(ctx, web, "passed", [HEALTH, check("skipped")])
    assert _already_passed(ctx, web, key) is None
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    again = _already_passed(ctx, web, key)
    assert again is not None and again.outcome == "already-passed"


def test_a_new_test_file_invalidates_an_earlier_pass(ctx: Context) -> None:
    web = role_release("web", tests=["tests/web/"])
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    gate(ctx, {"web": web}, None)
    (ctx.spec.root / "tests/web/test_new.py").write_text("def test_b():\n    assert False\n")
    # It names what changed: two trials were told only "test files or test settings".
    with pytest.raises(GateError, match=r"changed since it was last tested: tests/web/\)"):
        gate(ctx, {"web": web}, None)
    assert _already_passed(ctx, web, role_test_key(ctx, "web")) is None  # corral test runs it


def test_the_gate_names_the_setting_that_changed_and_falls_back_for_old_runs(
    ctx: Context,
) -> None:
    web = role_release("web", tests=["tests/web/"])
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    spec = ctx.spec.root / "corral.yaml"
    spec.write_text(spec.read_text().replace("command: [web]}", "command: [web], env: {A: b}}"))
    moved = dataclasses.replace(ctx, spec=load_spec(spec))
    with pytest.raises(GateError, match=r"changed since it was last tested: run\)"):
        gate(moved, {"web": web}, None)
    # A run recorded before the parts were kept: what the gate said before.
    ctx.state.record_test_run(
        "shop", "web", web.image_id, web.image_digest, web.image_version, "passed",
        [HEALTH, check("passed")], 1.0, "", test_key="0" * 64,
    )  # fmt: skip
    with pytest.raises(GateError, match="its test files or test settings changed since"):
        gate(moved, {"web": web}, None)


def test_a_later_failure_of_the_same_digest_and_key_wins(ctx: Context) -> None:
    web = role_release("web", tests=["tests/web/"])
    key = role_test_key(ctx, "web")
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    _record(ctx, web, "failed", [HEALTH, check("failed")])  # corral test --again
    with pytest.raises(GateError, match=r"its newest test run \(.*\) failed"):
        gate(ctx, {"web": web}, None)
    assert _already_passed(ctx, web, key) is None
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    gate(ctx, {"web": web}, None)


def test_a_recorded_role_is_gated_on_a_pass_that_still_stands(ctx: Context) -> None:
    # A rollback's images passed the tests of their day; today's tests may test what came
    # later. A pass stands until a later run of the same tests fails.
    web = role_release("web", tests=["tests/web/"])
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    (ctx.spec.root / "tests/web/test_later.py").write_text("def test_c():\n    pass\n")
    with pytest.raises(GateError):
        gate(ctx, {"web": web}, None)
    gate(ctx, {"web": web}, None, recorded={"web"})
    _record(ctx, web, "failed", [HEALTH, check("failed")])  # today's tests fail it
    gate(ctx, {"web": web}, None, recorded={"web"})  # another key: the old pass stands
    (ctx.spec.root / "tests/web/test_later.py").unlink()
    _record(ctx, web, "failed", [HEALTH, check("failed")])  # the old tests fail it now
    with pytest.raises(GateError, match="no passing test record"):
        gate(ctx, {"web": web}, None, recorded={"web"})


def test_a_role_under_test_comes_up_with_what_it_is_after_each_with_an_instance() -> None:
    desired = {
        "app": role_release("app", after=["db"], replicas=3),
        "db": role_release("db", after=["disk"]),
        "disk": role_release("disk", replicas=0),
        "other": role_release("other"),
    }
    subset = _with_dependencies(desired, ["app"])
    assert sorted(subset) == ["app", "db", "disk"]
    assert {name: rr.replicas for name, rr in subset.items()} == {"app": 3, "db": 1, "disk": 1}


def test_corral_test_builds_the_roles_a_role_is_after(tmp_path: Path) -> None:
    (tmp_path / "corral.yaml").write_text(
        "fleet: shop\nroles:\n"
        "  app: {base: {image: localhost/a}, run: {command: [a]}, after: [db]}\n"
        "  db: {base: {image: localhost/d}, run: {command: [d]}, after: [disk]}\n"
        "  disk: {base: {image: localhost/k}, run: {command: [k]}}\n"
        "  web: {base: {image: localhost/w}, run: {command: [w]}, after: [app]}\n"
    )
    with State.open(tmp_path / "state.db") as state:
        ctx = Context(load_spec(tmp_path / "corral.yaml"), FakeEngine(), state)
        assert spec_dependencies(ctx, ["app"]) == ["app", "db", "disk"]
        assert spec_dependencies(ctx, ["disk"]) == ["disk"]


def test_rollbacks_and_kept_roles_are_gated_as_recorded_deployed_roles_by_key(
    ctx: Context,
) -> None:
    web = role_release("web", tests=["tests/web/"])
    api = role_release("api", tests=["t/"])
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    _record(ctx, api, "passed", [HEALTH, check("passed")])
    (ctx.spec.root / "tests/web/test_later.py").write_text("def test_c():\n    pass\n")
    desired = {"web": web, "api": api}
    with pytest.raises(GateError, match="not tested: web"):
        _checks(ctx, None, ()).before(desired)  # corral deploy: web's tests changed
    _checks(ctx, None, ["api"]).before(desired)  # corral deploy api keeps web as released
    with pytest.raises(GateError, match="not tested: web"):
        _checks(ctx, None, ["web"]).before(desired)
    _checks(ctx, None, None, smoke_test=False).before(desired)  # a rollback


def test_the_tests_sandbox_hides_corrals_files_one_by_one(ctx: Context, tmp_path: Path) -> None:
    """The state folder may be the spec's own (``state: state.db``): its corral files are
    hidden one by one, so that hiding them never hides the tests beside them."""
    where = ctx.spec.state_location
    env = {
        "CORRAL_BACKUP_PASSWORD_FILE": str(tmp_path / "pw"),
        "CORRAL_BACKUP_PRUNE_PASSWORD_FILE": str(tmp_path / "prune-pw"),
        "CORRAL_BACKUP_PRUNE_REPOSITORY": str(tmp_path / "repo"),
    }
    hidden = set(secret_paths(ctx, env))
    assert {
        where.files,
        where.files / "tests",
        where.files / f"{ctx.scope.fleet}.secret-key",
    } <= hidden
    if not where.is_url:
        assert {where.path, where.path.with_name(where.path.name + "-wal")} <= hidden
    assert {tmp_path / "pw", tmp_path / "prune-pw", tmp_path / "repo"} <= hidden
    assert ctx.spec.root / ".corral" in hidden


def test_skip_tests_is_audited_even_when_every_image_is_tested(ctx: Context) -> None:
    # --skip-tests skips the smoke test too: that must leave a trace with its reason.
    web = role_release("web", tests=["tests/web/"])
    _record(ctx, web, "passed", [HEALTH, check("passed")])
    gate(ctx, {"web": web}, "moving a port")
    [entry] = [e for e in ctx.state.audit_log(ctx.scope.fleet) if e.action == "skip-tests"]
    assert entry.target == "smoke-test"
    assert entry.details["reason"] == "moving a port"
    assert entry.details["smoke_test"] == "skipped"
