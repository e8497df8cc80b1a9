"""``corral reconcile``: the fleet brought back to its active release through the
planner and executor of a deploy (fake engine; the proof is tests/engine/test_watch.py)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import pytest

from corral import app
from corral.deploy.reconcile import Reconciled, Watcher, drifted_files, taint_of
from corral.engines.base import ContainerSpec, EngineEvent, FileChange
from corral.engines.capabilities import Capability
from corral.engines.fake import FakeEngine
from corral.spec import load_spec
from corral.state import State
from tests.unit.test_cli import SKIP, WORKER_SPEC, run

E = TypeVar("E", bound=FakeEngine)


def _serve(engine: E, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, E]:
    """``engine`` as the one corral's commands use, with the worker spec beside it."""
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/worker-base:1", {})
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    spec = tmp_path / "corral.yaml"
    spec.write_text(WORKER_SPEC)
    return spec, engine


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeEngine]:
    return _serve(FakeEngine(), tmp_path, monkeypatch)


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
    code, out, err = run(capsys, "--json", "-f", str(spec), "status")
    assert code == 1 and json.loads(out)["problems"] == ["role worker: 1 of 2 replicas serving"]
    assert "unwell: role worker: 1 of 2 replicas serving" in err
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    result = json.loads(out)
    assert code == 0 and result["status"] == "converged" and result["release"] == 1
    assert [b["instance"] for b in result["burns"]] == [before[0]]
    after = _workers(engine)
    assert len(after) == 2 and before[1] in after and before[0] not in after
    burns = [e for e in app.audit(spec) if e.action == "burn"]
    assert [e.target for e in burns] == [before[0]]
    assert "not running" in str(burns[0].details)
    code, out, _ = run(capsys, "--json", "-f", str(spec), "status")
    assert code == 0 and json.loads(out)["problems"] == []


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
    watcher = Watcher(ctx=None, interval=2.0, max_backoff=30.0)  # type: ignore[arg-type]
    delays = []
    for failures in range(6):
        watcher.failures = failures
        delays.append(watcher.delay())
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


class StreamingEngine(FakeEngine):
    """A fake that streams the events a test puts in and diffs what it is told."""

    capabilities = frozenset(Capability)

    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.Queue[EngineEvent] = queue.Queue()
        self.changed: dict[str, list[FileChange]] = {}

    def events(self, labels: Mapping[str, str], since: str | None = None) -> Iterator[EngineEvent]:
        while True:
            yield self.queue.get()

    def diff(self, name: str) -> list[FileChange]:
        return self.changed.get(name, [])


@pytest.fixture
def streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, StreamingEngine]:
    return _serve(StreamingEngine(), tmp_path, monkeypatch)


def _watcher(spec: Path, engine: FakeEngine, state: State) -> Watcher:
    from corral.deploy.service import Context
    from corral.progress import NullProgress

    return Watcher(Context(load_spec(spec), engine, state, NullProgress()), interval=60.0)


def test_an_exec_event_burns_its_instance_at_once(
    streaming: tuple[Path, StreamingEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = streaming
    before = _deployed(streaming, capsys)  # type: ignore[arg-type]
    labels = {"io.corral.kind": "instance", "io.corral.role": "worker"}
    with app.open_state(load_spec(spec)) as state:
        watcher = _watcher(spec, engine, state)
        passes: list[Reconciled] = []

        def passed(result: Reconciled) -> None:  # the exec comes after the first pass
            passes.append(result)
            if len(passes) == 1:
                engine.queue.put(EngineEvent("t0", "exec", before[0], labels))

        watcher.on_pass = passed
        started = time.monotonic()
        watcher.run(passes=2)  # the second pass comes on the event, not after 60 s
    assert time.monotonic() - started < 5
    burned = [b for p in passes for b in p.burns]
    assert [(b.instance, b.reason) for b in burned] == [(before[0], "tainted: exec event at t0")]
    assert before[0] not in _workers(engine) and len(_workers(engine)) == 2


def test_a_changed_root_filesystem_burns_its_instance(
    streaming: tuple[Path, StreamingEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = streaming
    before = _deployed(streaming, capsys)  # type: ignore[arg-type]
    engine.changed[before[1]] = [FileChange("A", "/var/lib/app")]  # a mount point
    with app.open_state(load_spec(spec)) as state:
        watcher = _watcher(spec, engine, state)
        watcher.diff_interval = 0
        assert watcher.once() is not None and watcher.taints == {}
        engine.changed[before[1]] += [FileChange("C", "/etc/passwd")]
        result = watcher.once()
    assert result is not None
    assert [(b.instance, b.reason) for b in result.burns] == [
        (before[1], "tainted: files changed: C /etc/passwd")
    ]
    assert before[1] not in _workers(engine)


def test_events_that_say_nothing_leave_the_fleet_alone() -> None:
    assert taint_of(EngineEvent("t", "start", "x", {})) is None
    assert taint_of(EngineEvent("t", "exec", "x", {})) == "exec event at t"
    assert drifted_files([]) is None
    many = [FileChange("A", f"/f{n}") for n in range(7)]
    assert drifted_files(many) == "files changed: A /f0, A /f1, A /f2, A /f3, A /f4 and 2 more"


def test_a_pass_leaves_no_connection_to_the_edge_open(
    streaming: tuple[Path, StreamingEngine],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An open CLI connection stays with the HAProxy worker it reached: after an edge
    reload, a watcher that kept one pinned the old worker and read and changed it."""
    spec, _ = streaming
    _deployed(streaming, capsys)  # type: ignore[arg-type]
    with app.open_state(load_spec(spec)) as state:
        watcher = _watcher(spec, streaming[1], state)
        closed: list[bool] = []
        monkeypatch.setattr(watcher.ctx.edge, "close", lambda: closed.append(True))
        watcher.once()
    assert closed == [True]
