"""The pure step generators (deploy/steps.py) and the named steps plan_deploy returns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.deploy.observe import Instance
from corral.deploy.plan import (
    EdgePlan,
    EdgeReplacement,
    Observed,
    plan_deploy,
    plan_edge_replace,
)
from corral.deploy.scope import Scope
from corral.deploy.steps import (
    Action,
    Batch,
    Change,
    EdgeServer,
    Replacement,
    blue_green,
    edge_sync,
    rolling,
    stop_first,
)
from tests.unit.builders import role_release

SCOPE = Scope("shop")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def shape(batches: Sequence[Batch]) -> list[list[tuple[str, str]]]:
    return [[(s.action.value, s.instance) for s in batch] for batch in batches]


def olds(*names: str) -> tuple[Change, ...]:
    return tuple(Change(n, "new image v2") for n in names)


def replacement(**fields: object) -> Replacement:
    base: dict[str, object] = {
        "role": "web",
        "version": "v2",
        "public": True,
        "replicas": 3,
        "surge": 1,
        "unavailable": 0,
        "drain": 5.0,
    }
    base.update(fields)
    return Replacement(**base)  # type: ignore[arg-type]


# -- rolling --------------------------------------------------------------------------------


def test_rolling_starts_one_then_retires_one_within_a_surge_of_one() -> None:
    r = replacement(new=("n1", "n2", "n3"), stop=olds("o1", "o2", "o3"))
    assert shape(rolling(r)) == [
        [("start", "n1")],
        [("drain", "o1"), ("remove", "o1")],
        [("start", "n2")],
        [("drain", "o2"), ("remove", "o2")],
        [("start", "n3")],
        [("drain", "o3"), ("remove", "o3")],
    ]
    removes = [s for b in rolling(r) for s in b if s.action == Action.REMOVE]
    assert all(s.record == "replaced" and s.background for s in removes)
    drains = [s for b in rolling(r) for s in b if s.action == Action.DRAIN]
    assert {s.timeout for s in drains} == {5.0}  # the role's own drain time


def test_rolling_retires_idle_old_instances_first() -> None:
    r = replacement(
        surge=0, unavailable=1, new=("n1", "n2"), stop=olds("o1", "o2"), idle=frozenset({"o2"})
    )
    assert shape(rolling(r))[0] == [("drain", "o2"), ("remove", "o2")]


def test_rolling_without_room_to_surge_frees_an_instance_first() -> None:
    r = replacement(surge=0, unavailable=1, new=("n1", "n2", "n3"), stop=olds("o1", "o2", "o3"))
    assert shape(rolling(r))[:2] == [[("drain", "o1"), ("remove", "o1")], [("start", "n1")]]


def test_rolling_of_a_private_role_removes_at_once_after_a_precautionary_drain() -> None:
    r = replacement(public=False, new=("n1",), stop=olds("o1"), replicas=1)
    steps = [s for b in rolling(r) for s in b]
    assert [(s.action, s.background) for s in steps if s.action == Action.REMOVE] == [
        (Action.REMOVE, False)
    ]
    assert [s.timeout for s in steps if s.action == Action.DRAIN] == [5.0]


@settings(max_examples=300, deadline=None)
@given(
    replicas=st.integers(1, 8),
    surge=st.integers(0, 4),
    unavailable=st.integers(0, 4),
    kept=st.integers(0, 8),
    old=st.integers(0, 10),
    restarts=st.integers(0, 3),
)
def test_rolling_keeps_capacity_within_its_bounds_and_names_each_instance_once(
    replicas: int, surge: int, unavailable: int, kept: int, old: int, restarts: int
) -> None:
    kept = min(kept, replicas)
    needed = replicas - kept
    restarts = min(restarts, needed)
    r = replacement(
        replicas=replicas,
        surge=surge,
        unavailable=unavailable,
        keep=tuple(f"k{i}" for i in range(kept)),
        new=tuple(f"n{i}" for i in range(needed - restarts)),
        restart=tuple(f"s{i}" for i in range(restarts)),
        stop=olds(*(f"o{i}" for i in range(old))),
    )
    batches = rolling(r)
    steps = [s for b in batches for s in b]
    started = [s.instance for s in steps if s.action in (Action.START, Action.RESTART)]
    assert sorted(started) == sorted([*r.new, *r.restart])
    assert sorted(s.instance for s in steps if s.action == Action.REMOVE) == sorted(
        c.instance for c in r.stop
    )
    serving = first = kept + old
    peak, low = serving, serving
    for batch in batches:
        serving += sum(s.action in (Action.START, Action.RESTART) for s in batch)
        peak = max(peak, serving)
        serving -= sum(s.action == Action.REMOVE for s in batch)
        low = min(low, serving)
    assert serving == replicas
    assert peak <= max(first, replicas + surge)
    assert low >= min(first, replicas - max(unavailable, 0 if surge else 1))


# -- blue-green and stop-first --------------------------------------------------------------


def test_blue_green_holds_the_new_set_then_switches_in_one_batch_then_keeps_stand_bys() -> None:
    r = replacement(new=("n1", "n2"), stop=olds("o1", "o2"), replicas=2)
    batches = blue_green(r)
    assert shape(batches) == [
        [("start", "n1"), ("start", "n2")],
        [("admit", "n1"), ("admit", "n2"), ("drain", "o1"), ("drain", "o2")],
        [("stop", "o1"), ("stop", "o2")],
    ]
    assert all(s.hold for s in batches[0])
    assert {s.record for s in batches[2]} == {"standby"}


def test_blue_green_with_nothing_to_start_rolls() -> None:
    r = replacement(keep=("k1",), stop=olds("o1"), replicas=1)
    assert blue_green(r) == rolling(r)


def test_stop_first_stops_and_waits_before_it_starts_and_removes_the_old_one_always() -> None:
    r = replacement(new=("n1",), stop=olds("o1"), replicas=1)
    batches = stop_first(r, standby=False)
    assert shape(batches) == [
        [("drain", "o1"), ("stop", "o1")],
        [("wait-gone", "o1")],
        [("start", "n1")],
        [("remove", "o1")],
    ]
    assert batches[0][1].record == "replaced"
    assert batches[-1][0].always and not batches[-1][0].record  # recorded when stopped


def test_stop_first_of_a_blue_green_role_keeps_the_old_one_as_a_stand_by() -> None:
    r = replacement(restart=("s1",), stop=olds("o1"), replicas=1)
    batches = stop_first(r, standby=True)
    assert shape(batches)[-1] == [("restart", "s1")]
    assert batches[0][1].record == "standby"


def test_the_edge_is_made_to_agree_with_the_plan() -> None:
    present = [
        EdgeServer("k1", "ready", True),
        EdgeServer("k2", "drain", True),
        EdgeServer("gone", "ready", False),
        EdgeServer("o1", "ready", True),
    ]
    batches = edge_sync("web", ("k1", "k2", "k3"), {"k1", "k2", "k3", "o1"}, present, 7.0)
    assert shape(batches) == [[("drain", "gone")], [("admit", "k2"), ("add", "k3")]]
    assert batches[1][1].timeout == 7.0


# -- through plan_deploy --------------------------------------------------------------------


def instance(role: str, release: int, index: int, image: str, config: str) -> Instance:
    return Instance(
        name=SCOPE.instance_name(role, release, index),
        role=role,
        release=release,
        index=index,
        image_id=image,
        config_hash=config,
        state="running",
        address="10.0.0.2",
    )


def test_the_plan_names_the_instances_it_starts_within_its_release() -> None:
    rr = role_release("web", "img-b", replicas=3)
    # An undo plans for the previous release: its names go on after the highest index.
    running = [instance("web", 1, 4, "img-a", rr.config_hash)]
    observed = Observed(running, set(), {1}, set(), NOW)
    web = plan_deploy(SCOPE, {"web": rr}, observed, release=1).role("web")
    assert web.new == ("shop-web-r1-5", "shop-web-r1-6", "shop-web-r1-7")
    assert web.start == 3
    starts = [s.instance for s in web.steps if s.action == Action.START]
    assert starts == list(web.new)
    web = plan_deploy(SCOPE, {"web": rr}, observed, release=2).role("web")
    assert web.new == ("shop-web-r2-1", "shop-web-r2-2", "shop-web-r2-3")


def test_the_plan_sees_the_edge_servers_observed_and_the_executor_need_not_read_them() -> None:
    rr = role_release("web", "img-b", replicas=2, public=8080, run={"port": 8080})
    old = [instance("web", 1, i, "img-a", rr.config_hash) for i in (1, 2)]
    servers = {
        "web": [EdgeServer(old[0].name, "ready", True), EdgeServer(old[1].name, "drain", True)]
    }
    observed = Observed(old, set(), {1}, set(), NOW, edge_servers=servers)
    web = plan_deploy(SCOPE, {"web": rr}, observed, release=2).role("web")
    # The drained old instance takes no requests: it goes first, costing no capacity.
    assert shape(web.batches)[0] == [("drain", old[1].name), ("remove", old[1].name)]
    # An edge the plan starts afresh holds no server: every old instance is idle.
    fresh = Observed(old, set(), {1}, set(), NOW, edge=EdgePlan("start", "stopped", "img-e"))
    web = plan_deploy(SCOPE, {"web": rr}, fresh, release=2).role("web")
    assert shape(web.batches)[0] == [
        ("drain", old[0].name),
        ("remove", old[0].name),
        ("drain", old[1].name),
        ("remove", old[1].name),
    ]


def test_an_orphan_is_drained_then_removed_and_recorded() -> None:
    gone = instance("worker", 1, 1, "img-a", "c")
    plan = plan_deploy(SCOPE, {}, Observed([gone], set(), {1}, set(), NOW))
    assert [(s.action, s.role, s.record) for s in plan.orphan_steps] == [
        (Action.DRAIN, "worker", ""),
        (Action.REMOVE, "worker", "orphan"),
    ]


def test_the_plan_as_json_names_every_step_with_a_known_action() -> None:
    rr = role_release("web", "img-b", replicas=2, volumes={"data": "/data"}, shareable=["data"])
    old = [instance("web", 1, 1, "img-a", rr.config_hash)]
    plan = plan_deploy(SCOPE, {"web": rr}, Observed(old, set(), {1}, set(), NOW), release=2)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["release"] == 2 and data["has_changes"] is True
    web = data["roles"][0]
    assert web["start"] == 2 and web["new"] == ["shop-web-r2-1", "shop-web-r2-2"]
    assert web["stop"] == [{"instance": "shop-web-r1-1", "reason": "new image v-img-b"}]
    steps = [step for batch in web["batches"] for step in batch]
    assert {step["action"] for step in steps} <= {a.value for a in Action}
    assert steps[0] == {"action": "create-volume", "role": "web", "instance": "shop-web-data"}
    assert "release" not in web and "image_id" not in json.dumps(data)  # no run spec


# -- corral edge replace --------------------------------------------------------------------


def test_an_edge_replacement_checks_then_takes_in_exactly_the_instances_it_serves() -> None:
    web = role_release("web", "img-b", public=8080, run={"port": 8080})
    worker = role_release("worker", "img-w")
    serving = instance("web", 1, 1, "img-b", web.config_hash)
    others = [
        instance("web", 2, 1, "img-b", web.config_hash),  # of a release that never went live
        instance("web", 1, 2, "img-b", "an-older-config"),  # checked another way
        instance("worker", 1, 1, "img-w", worker.config_hash),  # not behind the edge
    ]
    observed = Observed([serving, *others], set(), {1}, set(), NOW)
    desired = {"web": web, "worker": worker}
    plan = plan_edge_replace(SCOPE, desired, observed, "img-edge", EdgeReplacement.NEW_POD)
    assert plan.edge.action == "replace" and plan.edge.image == "img-edge"
    assert [(s.action, s.instance) for s in plan.edge.checks] == [(Action.CHECK, serving.name)]
    assert [(s.action, s.instance, s.timeout) for s in plan.edge.servers] == [
        (Action.ADD, serving.name, 30.0)
    ]
    assert plan.desired == desired and plan.waves == ()  # no role changes
    assert json.loads(json.dumps(plan.to_dict()))["edge"]["servers"][0]["action"] == "add"

    reload = plan_edge_replace(SCOPE, desired, observed, "img-edge", EdgeReplacement.RELOAD)
    assert reload.edge.action == "reload" and not reload.edge.checks and not reload.edge.servers

    # A new image in the same pod: the same checks, then the new container takes over the
    # old one's sockets and servers, so none is added one by one.
    over = plan_edge_replace(SCOPE, desired, observed, "img-edge", EdgeReplacement.HAND_OVER)
    assert over.edge.action == "hand-over" and over.edge.servers == ()
    assert [(s.action, s.instance) for s in over.edge.checks] == [(Action.CHECK, serving.name)]
