"""``corral reconcile``: the fleet brought back to its active release through the
planner and executor of a deploy (fake engine; the proof is tests/engine/test_watch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral import app
from corral.engines.base import ContainerSpec
from corral.engines.fake import FakeEngine
from corral.spec import load_spec
from corral.state import State
from tests.unit.test_cli import SKIP, WORKER_SPEC, run


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeEngine]:
    engine = FakeEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/worker-base:1", {})
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    spec = tmp_path / "corral.yaml"
    spec.write_text(WORKER_SPEC)
    return spec, engine


def _workers(engine: FakeEngine) -> list[str]:
    listed = engine.list_containers({"io.corral.fleet": "clidemo", "io.corral.role": "worker"})
    return sorted(c.name for c in listed if c.state == "running")


def _deployed(fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]) -> list[str]:
    spec, engine = fleet
    code, _, _ = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == 0
    return _workers(engine)


def test_an_unchanged_fleet_is_left_alone(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _deployed(fleet, capsys)
    code, out, _ = run(capsys, "--json", "-f", str(fleet[0]), "reconcile")
    assert code == 0 and json.loads(out)["status"] == "unchanged"
    assert _workers(fleet[1]) == before


def test_a_stopped_instance_is_replaced_and_the_burn_audited(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    engine.stop(before[0])
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    result = json.loads(out)
    assert code == 0 and result["status"] == "converged" and result["release"] == 1
    assert [b["instance"] for b in result["burns"]] == [before[0]]
    after = _workers(engine)
    assert len(after) == 2 and before[1] in after and before[0] not in after
    burns = [e for e in app.audit(spec) if e.action == "burn"]
    assert [e.target for e in burns] == [before[0]]
    assert "not running" in str(burns[0].details)


def test_a_tainted_instance_is_replaced_new_first(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    from corral.deploy import reconcile as rec
    from corral.deploy.service import Context
    from corral.progress import NullProgress

    loaded = load_spec(spec)
    with app.open_state(loaded) as state:
        ctx = Context(loaded, engine, state, NullProgress())
        result = rec.reconcile(ctx, {before[1]: "exec: sh"})
    assert result.status == "converged"
    assert [(b.instance, b.reason) for b in result.burns] == [(before[1], "tainted: exec: sh")]
    assert before[1] not in _workers(engine) and len(_workers(engine)) == 2


def test_an_orphan_is_removed(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    listed = engine.list_containers({"io.corral.fleet": "clidemo", "io.corral.role": "worker"})
    labels = {**next(c for c in listed if c.name == before[0]).labels, "io.corral.role": "ghost"}
    engine.start(ContainerSpec(name="clidemo-ghost-r1-1", image=listed[0].image_id, labels=labels))
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    assert code == 0 and "clidemo-ghost-r1-1" in [b["instance"] for b in json.loads(out)["burns"]]
    assert engine.inspect("clidemo-ghost-r1-1") is None
    assert _workers(engine) == before


def test_a_pass_never_fights_a_deploy(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    engine.stop(before[0])
    with State.open(load_spec(spec).state_path) as state, state.lock("deploy", purpose="x"):
        code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    assert code == 0 and json.loads(out)["status"] == "skipped"
    assert _workers(engine) == [before[1]]


def test_the_watcher_backs_off_while_passes_fail() -> None:
    from corral.deploy.reconcile import Watcher

    watcher = Watcher(ctx=None, interval=2.0, max_backoff=30.0)  # type: ignore[arg-type]
    delays = []
    for failures in range(6):
        watcher.failures = failures
        delays.append(watcher.delay())
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
