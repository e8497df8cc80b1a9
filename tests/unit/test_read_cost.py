"""`status` and `plan` read a fleet with as many engine calls at 100 instances as at 3."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from corral import app
from corral.deploy.service import Context, plan
from corral.deploy.status import status
from corral.engines.base import Engine
from corral.spec.load import load_spec
from corral.state import State
from tests.unit.builders import role_release
from tests.unit.test_apply_fake import RecordingEngine, deploy

# Every method of the engine's protocols (Engine combines them), but probe_address: it
# reads an already-inspected ContainerInfo and asks the engine nothing.
ENGINE_CALLS = {
    name
    for protocol in Engine.__mro__
    if protocol.__module__ == Engine.__module__
    for name, value in vars(protocol).items()
    if callable(value) and not name.startswith("_")
} - {"probe_address"}


class CountingEngine(RecordingEngine):
    """Counts every call of the Engine interface, whatever the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: Counter[str] = Counter()
        self.counting = False

    def __getattribute__(self, name: str) -> Any:
        if name in ENGINE_CALLS and object.__getattribute__(self, "counting"):
            object.__getattribute__(self, "counted")[name] += 1
        return super().__getattribute__(name)


def _fleet(tmp_path: Path, state: State, replicas: int) -> tuple[Context, CountingEngine]:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        "fleet: shop\n"
        "roles:\n"
        "  web:\n"
        "    base: {debian: bookworm}\n"
        f"    replicas: {replicas}\n"
        "    run: {command: [app]}\n"
        "  worker:\n"
        "    base: {debian: bookworm}\n"
        f"    replicas: {replicas}\n"
        "    run: {command: [work]}\n"
    )
    engine = CountingEngine()
    deploy(
        engine,
        state,
        role_release("web", replicas=replicas),
        role_release("worker", replicas=replicas),
    )
    return Context(load_spec(spec), engine, state), engine


def _calls(tmp_path: Path, state: State, replicas: int) -> tuple[Counter[str], Counter[str]]:
    ctx, engine = _fleet(tmp_path, state, replicas)
    engine.counting = True
    seen = status(ctx)
    assert sum(len(r.instances) for r in seen.roles) == 2 * replicas
    for_status, engine.counted = engine.counted, Counter()
    plan(ctx)
    return for_status, engine.counted


@pytest.mark.parametrize("command", ["status", "plan"])
def test_reads_cost_the_same_at_3_and_100_instances(tmp_path: Path, command: str) -> None:
    small_dir, large_dir = tmp_path / "small", tmp_path / "large"
    small_dir.mkdir()
    large_dir.mkdir()
    with (
        State.open(small_dir / "state.db") as small_state,
        State.open(large_dir / "state.db") as large,
    ):
        small = _calls(small_dir, small_state, 3)
        big = _calls(large_dir, large, 100)
    index = 0 if command == "status" else 1
    assert sum(small[index].values()) > 0  # the counter sees the engine at all
    assert big[index] == small[index]


def test_a_plan_lists_the_fleet_once_for_its_ownership_check_and_itself(tmp_path: Path) -> None:
    with State.open(tmp_path / "state.db") as state:
        ctx, engine = _fleet(tmp_path, state, 3)
    spec = ctx.spec.path
    spec.write_text(f"state: {tmp_path / 'state.db'}\n" + spec.read_text())
    engine.counting = True
    app.plan(spec, engine=engine)
    assert engine.counted["list_containers"] == 1  # it was 2: 0.3 s each at 100 instances
