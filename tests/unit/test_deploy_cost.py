"""A rolling replacement costs the same engine and edge calls per instance at 3 and at 30.

Issue 15: per-instance cost grew tenfold from 30 to 100 replicas. The cause was outside
corral (the edge's neighbour table, see tests/engine/test_edge_addresses.py), but a read
of the whole fleet or the whole backend per instance would make the same curve: these
counts keep it from creeping in.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from corral.deploy import apply as apply_module
from corral.deploy.desired import RoleRelease
from corral.deploy.health import HealthResult
from corral.deploy.plan import plan_deploy
from corral.state import State
from tests.unit.builders import role_release
from tests.unit.test_apply_fake import FLEET, SCOPE, FakeEdge, observed, with_edge
from tests.unit.test_read_cost import CountingEngine


class CountingEdge(FakeEdge):
    """Counts every call the executor makes of the edge."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name not in ("counted", "admin", "fewest_ready"):
            object.__getattribute__(self, "counted")[name] += 1
        return super().__getattribute__(name)


def _web(image: str, replicas: int, surge: int | str) -> RoleRelease:
    return role_release(
        "web",
        image,
        replicas=replicas,
        public=8080,
        run={"port": 8000},
        health={"http": "/healthz", "interval": 0.5},
        deploy={"max_surge": surge, "max_unavailable": 0},
    )


def _replace(state: State, replicas: int, surge: int | str) -> tuple[Counter[str], Counter[str]]:
    """Deploy ``replicas``, then count the calls of replacing every one of them."""
    engine, edge = CountingEngine(), CountingEdge()
    for image in ("img-a", "img-b"):
        engine.counted, edge.counted = Counter(), Counter()
        engine.counting = image == "img-b"
        desired = {"web": _web(image, replicas, surge)}
        release = state.start_release(FLEET, "deploy", {"web": desired["web"].to_record()})
        plan = plan_deploy(SCOPE, desired, observed(engine, state, edge), release=release.number)
        with_edge(engine, state, edge).apply(plan)
        state.finish_release(release.id, "active")
    return engine.counted, edge.counted


@pytest.mark.parametrize("surge", [1, "25%"])
def test_each_replaced_instance_costs_the_same_calls_at_3_and_at_30(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, surge: int | str
) -> None:
    monkeypatch.setattr(
        apply_module, "wait_healthy", lambda *args, **kwargs: HealthResult(True, "healthy", 1)
    )
    with State.open(tmp_path / "small.db") as small, State.open(tmp_path / "large.db") as large:
        engine_3, edge_3 = _replace(small, 3, surge)
        engine_30, edge_30 = _replace(large, 30, surge)
    # Per instance: one start and one removal, one edge registration, wait and drain;
    # per deploy, whatever its size: two listings of containers (the fleet, and the probe
    # containers a killed deploy may have left) and one of volumes, one network check, one
    # look at the backend; the new image is distributed once.
    assert _per_instance(engine_3, engine_30) == {"start": 1, "remove": 1}
    assert _fixed(engine_3, engine_30) == {
        "list_containers": 2,
        "list_volumes": 1,
        "ensure_network": 1,
        "distribute": 1,
    }
    assert _per_instance(edge_3, edge_30) == {"prepare": 1, "confirm": 1, "drain": 1}
    assert _fixed(edge_3, edge_30) == {"servers": 1}


def _per_instance(at_3: Counter[str], at_30: Counter[str]) -> dict[str, float]:
    """Each call's growth from 3 to 30 instances, per added instance."""
    return {k: (at_30[k] - at_3[k]) / 27 for k in at_30 if at_30[k] != at_3[k]}


def _fixed(at_3: Counter[str], at_30: Counter[str]) -> dict[str, int]:
    """The calls made as often at 30 instances as at 3."""
    return {k: n for k, n in at_30.items() if at_3[k] == n}
