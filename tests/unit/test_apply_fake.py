"""The executor against the in-memory FakeEngine: the order of engine calls and the
rolling / blue-green invariants, with a real state database and no edge.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import corral.deploy.apply as apply_module
from corral.deploy.apply import Executor, Journal
from corral.deploy.desired import RoleRelease
from corral.deploy.health import HealthResult
from corral.deploy.instances import container_spec
from corral.deploy.observe import observe
from corral.deploy.plan import EdgePlan, EdgeServer, Observed, Plan, parse_time, plan_deploy
from corral.deploy.scope import LABEL, Scope
from corral.deploy.service import observe_fleet
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.capabilities import Capability
from corral.engines.fake import FakeEngine
from corral.errors import DeployError, EngineError, LockedError
from corral.progress import NullProgress
from corral.state import State
from tests.unit.builders import role_release

FLEET = "shop"
SCOPE = Scope(FLEET)
GOOD = ("active", "superseded")


class RecordingEngine(FakeEngine):
    """A FakeEngine that samples, after every container call, how many instances run.

    It also hands out unique addresses (FakeEngine reuses them after a removal), so a
    patched health check can tell instances apart by address.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()
        self.samples: list[tuple[str, str, dict[str, int]]] = []
        self.by_address: dict[str, str] = {}
        self._addresses = 0
        # The fake clock: FakeEngine.stop stamps `now`; the planner looks 10 s later.
        self.observed_at = _at(self.now) + timedelta(seconds=10)

    def running(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.containers.values():
            if c.state == "running":
                role = c.labels.get(LABEL + "role", "")
                counts[role] = counts.get(role, 0) + 1
        return counts

    def _sample(self, call: str, name: str) -> None:
        self.samples.append((call, name, self.running()))

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        with self.lock:
            info = super().start(spec)
            self._addresses += 1
            address = f"10.89.{self._addresses // 200}.{self._addresses % 200 + 2}"
            info = dataclasses.replace(info, addresses={SCOPE.network: address})
            self.containers[spec.name] = info
            self.by_address[address] = spec.name
            self._sample("start", spec.name)
            return info

    def resume(self, name: str) -> ContainerInfo:
        with self.lock:
            info = super().resume(name)
            self._sample("restart", name)
            return info

    def stop(self, name: str, timeout: int = 10) -> None:
        with self.lock:
            super().stop(name, timeout)
            self._sample("stop", name)

    def remove(self, name: str) -> None:
        with self.lock:
            super().remove(name)
            self._sample("remove", name)


def _at(text: str) -> datetime:
    parsed = parse_time(text)
    assert parsed is not None
    return parsed


def observed(engine: RecordingEngine, state: State, edge: FakeEdge | None = None) -> Observed:
    """What service.observe_fleet gathers; the edge's servers only if ``edge`` is given."""
    releases = state.releases(FLEET, limit=100000)
    servers = [EdgeServer(s.name, s.admin, s.healthy) for s in edge.servers("web")] if edge else []
    return Observed(
        instances=observe(engine, SCOPE),
        volumes=set(engine.list_volumes(SCOPE.labels("volume"))),
        good_releases={r.number for r in releases if r.status in GOOD},
        standby={i.name for i in state.instances(FLEET, live_only=False) if i.outcome == "standby"},
        now=engine.observed_at,
        edge_servers={"web": servers} if edge else {},
    )


def deploy(engine: RecordingEngine, state: State, *roles: RoleRelease) -> tuple[int, Plan]:
    """Plan and apply one release; the release ends active, or failed on DeployError."""
    desired = {rr.role: rr for rr in roles}
    release = state.start_release(FLEET, "deploy", {k: v.to_record() for k, v in desired.items()})
    plan = plan_deploy(SCOPE, desired, observed(engine, state), release=release.number)
    executor = Executor(engine, SCOPE, Journal(state, FLEET), NullProgress())
    try:
        executor.apply(plan)
    except DeployError as exc:
        state.finish_release(release.id, "failed", exc.message)
        raise
    state.finish_release(release.id, "active")
    return release.number, plan


def containers(engine: FakeEngine, role: str) -> list[ContainerInfo]:
    return sorted(
        (c for c in engine.containers.values() if c.labels.get(LABEL + "role") == role),
        key=lambda c: c.name,
    )


def outcomes(state: State) -> dict[str, str | None]:
    return {i.name: i.outcome for i in state.instances(FLEET, live_only=False)}


# -- rolling ---------------------------------------------------------------------------

POLICIES = [(1, 0), (2, 0), (0, 1), (1, 1)]


@pytest.mark.parametrize("replicas", [1, 3, 10])
@pytest.mark.parametrize(("surge", "unavailable"), POLICIES)
def test_rolling_keeps_capacity_within_bounds(
    state: State, replicas: int, surge: int, unavailable: int
) -> None:
    engine = RecordingEngine()
    policy = {"max_surge": surge, "max_unavailable": unavailable}
    first, _ = deploy(engine, state, role_release("web", "img-a", replicas=replicas, deploy=policy))
    assert [c.state for c in containers(engine, "web")] == ["running"] * replicas
    mark = len(engine.samples)
    engine.calls.clear()

    second, plan = deploy(
        engine, state, role_release("web", "img-b", replicas=replicas, deploy=policy)
    )
    assert plan.role("web").start == replicas
    assert len(plan.role("web").stop) == replicas

    low, high = replicas - unavailable, replicas + surge
    during = [running.get("web", 0) for _, _, running in engine.samples[mark:]]
    assert during, "the second deploy made no engine call"
    assert min(during) >= low, (during, engine.calls)
    assert max(during) <= high, (during, engine.calls)
    if unavailable == 0:  # nothing may stop before its replacement serves
        assert engine.calls[0][0] == "start"

    # Every old instance was removed (the engine stops it gracefully first); exactly
    # `replicas` new ones run.
    old = {SCOPE.instance_name("web", first, i) for i in range(1, replicas + 1)}
    new = {SCOPE.instance_name("web", second, i) for i in range(1, replicas + 1)}
    for name in old:
        assert ("remove", name) in engine.calls
    assert {n for call, n in engine.calls if call == "start"} == new
    final = containers(engine, "web")
    assert {c.name for c in final} == new
    assert all(c.state == "running" and c.image_id == "img-b" for c in final)
    assert outcomes(state) == {**dict.fromkeys(old, "replaced"), **dict.fromkeys(new, None)}
    assert {i.name for i in state.instances(FLEET)} == new


@pytest.mark.parametrize(("surge", "unavailable"), POLICIES)
def test_rolling_scale_down_and_up_without_new_image(
    state: State, surge: int, unavailable: int
) -> None:
    engine = RecordingEngine()
    policy = {"max_surge": surge, "max_unavailable": unavailable}
    deploy(engine, state, role_release("web", "img-a", replicas=4, deploy=policy))
    engine.calls.clear()
    deploy(engine, state, role_release("web", "img-a", replicas=2, deploy=policy))
    assert [c for c, _ in engine.calls] == ["remove"] * 2
    assert {c.name for c in containers(engine, "web")} == {"shop-web-r1-1", "shop-web-r1-2"}
    engine.calls.clear()
    deploy(engine, state, role_release("web", "img-a", replicas=3, deploy=policy))
    assert engine.calls == [("start", "shop-web-r3-1")]


def test_unchanged_deploy_makes_no_engine_call(state: State) -> None:
    engine = RecordingEngine()
    web = role_release("web", "img-a", replicas=2)
    deploy(engine, state, web)
    engine.calls.clear()
    _, plan = deploy(engine, state, web)
    assert not plan.has_changes
    assert engine.calls == []


def test_waves_follow_after_and_volumes_are_created_first(state: State) -> None:
    engine = RecordingEngine()
    db = role_release("db", "img-db", volumes={"data": "/var/lib/db"})
    api = role_release("api", "img-a", after=["db"], replicas=2)
    web = role_release("web", "img-w", after=["api"])
    deploy(engine, state, web, api, db)
    starts = [name for call, name in engine.calls if call == "start"]
    assert starts[0] == "shop-db-r1-1"
    assert sorted(starts[1:3]) == ["shop-api-r1-1", "shop-api-r1-2"]
    assert starts[3] == "shop-web-r1-1"
    assert engine.list_volumes(SCOPE.labels("volume")) == ["shop-db-data"]


class SlowEngine(RecordingEngine):
    """Starting an instance takes a while; when each start began and ended is kept."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.spans: dict[str, tuple[float, float]] = {}

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        began = time.monotonic()
        time.sleep(self.seconds)
        info = super().start(spec)
        self.spans[spec.name] = (began, time.monotonic())
        return info


def test_roles_of_a_wave_start_side_by_side_and_the_next_wave_waits(state: State) -> None:
    engine = SlowEngine(seconds=0.3)
    a, b = role_release("a", "img-a"), role_release("b", "img-b")
    c = role_release("c", "img-c", after=["a", "b"])
    deploy(engine, state, c, b, a)
    (a0, a1), (b0, b1) = engine.spans["shop-a-r1-1"], engine.spans["shop-b-r1-1"]
    assert a0 < b1 and b0 < a1  # a and b depend on nothing: they start together
    assert engine.spans["shop-c-r1-1"][0] >= max(a1, b1)  # c waits for both to be healthy


def test_orphans_are_stopped_and_removed(state: State) -> None:
    engine = RecordingEngine()
    deploy(engine, state, role_release("web", "img-a"), role_release("worker", "img-w"))
    engine.calls.clear()
    deploy(engine, state, role_release("web", "img-a"))
    assert engine.calls == [("remove", "shop-worker-r1-1")]
    assert outcomes(state)["shop-worker-r1-1"] == "orphan"


# -- blue-green ------------------------------------------------------------------------


def test_blue_green_keeps_old_instances_stopped_as_standby(state: State) -> None:
    engine = RecordingEngine()
    bg = {"strategy": "blue-green", "keep_old": 300}
    deploy(engine, state, role_release("web", "img-a", replicas=2, deploy=bg))
    mark = len(engine.samples)
    engine.calls.clear()
    deploy(engine, state, role_release("web", "img-b", replicas=2, deploy=bg))

    # The whole new set comes up before any old instance stops; none is removed.
    assert [c for c, _ in engine.calls] == ["start", "start", "stop", "stop"]
    assert max(r.get("web", 0) for _, _, r in engine.samples[mark:]) == 4
    by_name = {c.name: c for c in containers(engine, "web")}
    assert {n: c.state for n, c in by_name.items()} == {
        "shop-web-r1-1": "exited",
        "shop-web-r1-2": "exited",
        "shop-web-r2-1": "running",
        "shop-web-r2-2": "running",
    }
    assert outcomes(state) == {
        "shop-web-r1-1": "standby",
        "shop-web-r1-2": "standby",
        "shop-web-r2-1": None,
        "shop-web-r2-2": None,
    }

    # Going back to img-a restarts the stand-bys instead of starting new instances.
    engine.calls.clear()
    _, plan = deploy(engine, state, role_release("web", "img-a", replicas=2, deploy=bg))
    assert plan.role("web").restart == ("shop-web-r1-1", "shop-web-r1-2")
    assert sorted(engine.calls) == [
        ("restart", "shop-web-r1-1"),
        ("restart", "shop-web-r1-2"),
        ("stop", "shop-web-r2-1"),
        ("stop", "shop-web-r2-2"),
    ]
    assert {c.name: c.state for c in containers(engine, "web")} == {
        "shop-web-r1-1": "running",
        "shop-web-r1-2": "running",
        "shop-web-r2-1": "exited",
        "shop-web-r2-2": "exited",
    }
    live = {i.name for i in state.instances(FLEET)}
    assert live == {"shop-web-r1-1", "shop-web-r1-2"}


def test_blue_green_expired_standby_is_removed(state: State) -> None:
    engine = RecordingEngine()
    bg = {"strategy": "blue-green", "keep_old": 60}
    deploy(engine, state, role_release("web", "img-a", deploy=bg))
    deploy(engine, state, role_release("web", "img-b", deploy=bg))
    engine.calls.clear()
    engine.observed_at += timedelta(seconds=60)  # r1-1 stopped 70 s ago, r2-1 runs
    deploy(engine, state, role_release("web", "img-c", deploy=bg))
    assert ("remove", "shop-web-r1-1") in engine.calls
    assert outcomes(state)["shop-web-r1-1"] == "standby"  # retired once, not twice
    assert {c.name for c in containers(engine, "web")} == {"shop-web-r2-1", "shop-web-r3-1"}


# -- failures --------------------------------------------------------------------------


def unhealthy_in(engine: RecordingEngine, marker: str) -> Any:
    """A wait_healthy stand-in: instances whose name contains ``marker`` never pass."""

    def fake(
        address: str, port: int, health: Any, still_running: Any = None, probe: Any = None
    ) -> HealthResult:
        name = engine.by_address[address]
        if marker in name:
            return HealthResult(False, "GET /healthz: HTTP 503 after 3 checks", 3)
        return HealthResult(True, "healthy", 1)

    return fake


@pytest.mark.parametrize("strategy", ["rolling", "blue-green"])
def test_failing_new_instance_raises_and_is_removed(
    state: State, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    engine = RecordingEngine()
    monkeypatch.setattr(apply_module, "wait_healthy", unhealthy_in(engine, "-r2-"))
    fields: Mapping[str, Any] = {
        "replicas": 2,
        "run": {"port": 8080},
        "health": {"http": "/healthz", "retries": 3},
        "deploy": {"strategy": strategy},
    }
    deploy(engine, state, role_release("web", "img-a", **fields))
    with pytest.raises(DeployError) as caught:
        deploy(engine, state, role_release("web", "img-b", **fields))
    error = caught.value
    assert "web" in error.message
    assert "did not become healthy" in error.message
    assert error.roles == ["web"]
    failed = [n for call, n in engine.calls if call == "start" and "-r2-" in n]
    assert failed
    for name in failed:
        assert name not in engine.containers
        assert outcomes(state)[name] == "failed-health"
    # The old release still serves at full strength.
    running = {c.name for c in containers(engine, "web") if c.state == "running"}
    assert {"shop-web-r1-1", "shop-web-r1-2"} <= running


def test_failure_in_one_role_names_that_role_only(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = RecordingEngine()
    monkeypatch.setattr(apply_module, "wait_healthy", unhealthy_in(engine, "api-r2-"))
    checked = {"run": {"port": 8080}, "health": {"tcp": True}}
    deploy(engine, state, role_release("api", "img-a", **checked), role_release("web", "img-a"))
    with pytest.raises(DeployError) as caught:
        deploy(
            engine,
            state,
            role_release("api", "img-b", **checked),
            role_release("web", "img-b", after=["api"]),
        )
    assert caught.value.roles == ["api"]
    # web's wave never ran.
    assert {c.name for c in containers(engine, "web")} == {"shop-web-r1-1"}


def test_instance_that_exits_at_once_fails_without_health_check(state: State) -> None:
    class Crashing(RecordingEngine):
        def start(self, spec: ContainerSpec) -> ContainerInfo:
            info = super().start(spec)
            if "-r2-" in spec.name:
                self.containers[spec.name] = ContainerInfo(
                    info.id, info.name, info.image_id, info.labels, "exited",
                    info.addresses, info.created, exit_code=3,
                )  # fmt: skip
            return info

    engine = Crashing()
    deploy(engine, state, role_release("web", "img-a"))
    with pytest.raises(DeployError, match=r"role web: .*exited \(code 3\)"):
        deploy(engine, state, role_release("web", "img-b"))
    assert "shop-web-r2-1" not in engine.containers
    assert engine.containers["shop-web-r1-1"].state == "running"


def test_engine_error_names_the_role(state: State) -> None:
    engine = RecordingEngine()
    deploy(engine, state, role_release("web", "img-a"))
    # A stray container holds the name the next instance needs: engine.start refuses.
    engine.containers["shop-web-r2-1"] = ContainerInfo(
        "x", "shop-web-r2-1", "img-x", {}, "exited", {}, ""
    )
    with pytest.raises(DeployError) as caught:
        deploy(engine, state, role_release("web", "img-b"))
    assert caught.value.roles == ["web"]
    assert "web" in caught.value.message


def test_fake_engine_addresses_are_unique() -> None:
    engine = FakeEngine()
    a = engine.start(ContainerSpec(name="a", image="i", network="n"))
    engine.start(ContainerSpec(name="b", image="i", network="n"))
    engine.remove(a.name)
    engine.start(ContainerSpec(name="c", image="i", network="n"))
    live = [c.addresses["n"] for c in engine.containers.values()]
    assert len(set(live)) == len(live)


def test_restarted_standby_that_crashes_is_replaced(state: State) -> None:
    engine = RecordingEngine()
    bg = {"strategy": "blue-green", "keep_old": 300}
    deploy(engine, state, role_release("web", "img-a", deploy=bg))
    deploy(engine, state, role_release("web", "img-b", deploy=bg))
    deploy(engine, state, role_release("web", "img-a", deploy=bg))  # switch back: restart
    assert engine.containers["shop-web-r1-1"].state == "running"
    engine.stop("shop-web-r1-1")  # it crashes later
    desired = {"web": role_release("web", "img-a", deploy=bg)}
    ctx = SimpleNamespace(
        engine=engine,
        scope=SCOPE,
        state=state,
        edge=SimpleNamespace(observe=lambda desired, image, listing: EdgePlan("none")),
    )
    seen = dataclasses.replace(observe_fleet(ctx, desired, None), now=engine.observed_at)  # type: ignore[arg-type]
    web = plan_deploy(SCOPE, desired, seen).role("web")
    assert web.restart == ()
    assert [c.instance for c in web.cleanup] == ["shop-web-r1-1"]
    assert web.start == 1


# -- what a killed deploy leaves -----------------------------------------------------------


class FakeEdge:
    """The edge's admin states by server name; counts the servers taking requests."""

    def __init__(self) -> None:
        self.admin: dict[str, str] = {}
        self.fewest_ready: int | None = None  # since ``watch``

    def watch(self) -> None:
        self.fewest_ready = self.ready()

    def ready(self) -> int:
        return sum(state == "ready" for state in self.admin.values())

    def _note(self) -> None:
        if self.fewest_ready is not None:
            self.fewest_ready = min(self.fewest_ready, self.ready())

    def servers(self, role: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n, admin=a, healthy=True) for n, a in self.admin.items()]

    def prepare(self, rr: RoleRelease, name: str, address: str) -> None:
        self.admin[name] = "drain"  # checked, no requests yet

    def confirm(self, rr: RoleRelease, name: str, timeout: float, ready: bool) -> None:
        if ready:
            self.admin[name] = "ready"

    def add(self, rr: RoleRelease, name: str, address: str, timeout: float) -> None:
        self.admin[name] = "ready"

    def readmit(self, role: str, name: str) -> None:
        self.admin[name] = "ready"

    def drain(self, role: str, name: str, timeout: float) -> bool:
        self.admin.pop(name, None)
        self._note()
        return True


def with_edge(engine: FakeEngine, state: State, edge: FakeEdge) -> Executor:
    journal = Journal(state, FLEET)
    return Executor(engine, SCOPE, journal, NullProgress(), edge)  # type: ignore[arg-type]


def test_leftovers_that_take_no_requests_go_before_the_last_serving_instance(
    state: State,
) -> None:
    engine, edge = RecordingEngine(), FakeEdge()
    v1 = role_release("web", "img-a", replicas=3, public=8080)
    desired = {"web": v1}
    release = state.start_release(FLEET, "deploy", {"web": v1.to_record()})
    plan = plan_deploy(SCOPE, desired, observed(engine, state, edge), release=release.number)
    with_edge(engine, state, edge).apply(plan)
    state.finish_release(release.id, "active")
    # Killed deploys since: two of the three serving instances were retired, and three
    # replacements were left behind: admitted but drained, or never admitted. Counted as
    # serving, they would leave no room to surge: the first to go must not be r1-3.
    for gone in ("shop-web-r1-1", "shop-web-r1-2"):
        engine.remove(gone)
        edge.admin.pop(gone)
    for number, admitted in ((2, True), (3, False), (4, True)):
        killed = state.start_release(FLEET, "deploy", {"web": v1.to_record()})
        state.finish_release(killed.id, "aborted", "killed")
        engine.start(container_spec(SCOPE, v1, killed.number, 1, {}))
        if admitted:
            edge.admin[f"shop-web-r{number}-1"] = "drain"
    assert edge.ready() == 1

    v2 = role_release("web", "img-b", replicas=3, public=8080)
    release = state.start_release(FLEET, "deploy", {"web": v2.to_record()})
    plan = plan_deploy(SCOPE, {"web": v2}, observed(engine, state, edge), release=release.number)
    assert [c.instance for c in plan.role("web").stop] == [
        "shop-web-r1-3",
        "shop-web-r2-1",
        "shop-web-r3-1",
        "shop-web-r4-1",
    ]
    edge.watch()
    with_edge(engine, state, edge).apply(plan)
    assert edge.fewest_ready == 1  # the one serving instance served until replaced
    assert sorted(n for n, a in edge.admin.items() if a == "ready") == [
        f"shop-web-r{release.number}-{i}" for i in (1, 2, 3)
    ]


PERCENT_POLICIES = [("25%", 0), ("25%", "25%"), (0, "25%"), ("100%", 0), (1, "10%")]


@pytest.mark.parametrize("replicas", [4, 10, 30])
@pytest.mark.parametrize(("surge", "unavailable"), PERCENT_POLICIES)
def test_rolling_with_percentages_keeps_capacity_within_bounds(
    state: State, replicas: int, surge: int | str, unavailable: int | str
) -> None:
    """Serving instances stay within [replicas - unavailable, replicas + surge], where a
    percentage of surge rounds up and one of unavailable rounds down (as Kubernetes)."""
    engine = RecordingEngine()
    policy = {"max_surge": surge, "max_unavailable": unavailable}
    deploy(engine, state, role_release("web", "img-a", replicas=replicas, deploy=policy))
    mark = len(engine.samples)
    _, plan = deploy(engine, state, role_release("web", "img-b", replicas=replicas, deploy=policy))
    assert plan.role("web").start == replicas

    rr = role_release("web", replicas=replicas, deploy=policy)
    max_surge, max_unavailable = rr.deploy.surge(replicas), rr.deploy.unavailable(replicas)
    assert (max_surge, max_unavailable) == (
        _percent(surge, replicas, up=True),
        _percent(unavailable, replicas, up=False),
    )
    during = [running.get("web", 0) for _, _, running in engine.samples[mark:]]
    assert min(during) >= replicas - max_unavailable, during
    assert max(during) <= replicas + max_surge, during
    # The surge is used: a batch of new instances runs beside every old one at some point.
    assert max(during) == replicas + max_surge or max_surge == 0
    final = containers(engine, "web")
    assert len(final) == replicas and all(c.image_id == "img-b" for c in final)


def _percent(amount: int | str, replicas: int, up: bool) -> int:
    if isinstance(amount, int):
        return amount
    share = int(amount[:-1]) * replicas / 100
    return int(-(-share // 1)) if up else int(share // 1)


def test_a_batch_starts_and_probes_its_instances_side_by_side(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_surge 25% of 20: five instances start together and wait on health together."""
    engine = RecordingEngine()
    policy = {"max_surge": "25%", "max_unavailable": 0}
    deploy(engine, state, role_release("web", "img-a", replicas=20, deploy=policy))
    waiting, peak, lock = 0, 0, threading.Lock()

    def slow_health(*args: Any, **kwargs: Any) -> HealthResult:
        nonlocal waiting, peak
        with lock:
            waiting += 1
            peak = max(peak, waiting)
        time.sleep(0.05)
        with lock:
            waiting -= 1
        return HealthResult(True, "healthy", 1)

    monkeypatch.setattr(apply_module, "wait_healthy", slow_health)
    health = {"http": "/healthz"}
    run = {"port": 8000}
    started = time.monotonic()
    deploy(
        engine,
        state,
        role_release("web", "img-b", replicas=20, deploy=policy, health=health, run=run),
    )
    assert peak == 5  # a batch's probes overlap, and no batch outgrows the surge
    assert time.monotonic() - started < 20 * 0.05  # four batches of 50 ms, not twenty


def test_an_edge_that_refuses_its_new_configuration_fails_the_deploy(state: State) -> None:
    """A DeployError, so the deploy goes back to the previous release (not "aborted")."""

    class Refusing(FakeEdge):
        def reload(self, desired: Any, image: str) -> None:
            raise EngineError("the old worker keeps serving")

    engine = FakeEngine()
    plan = Plan(FLEET, (), (), EdgePlan("reload", "the health checks changed", "img-edge"))
    executor = with_edge(engine, state, Refusing())
    with pytest.raises(DeployError, match="the edge: the old worker keeps serving"):
        executor.apply(plan)


def test_a_deploy_that_lost_its_lock_changes_nothing_more(state: State) -> None:
    # The lease was taken over (this process stalled past it): the next step refuses.
    engine = RecordingEngine()
    with state.lock("deploy", purpose="deploy") as held:
        held._lost.set()  # type: ignore[attr-defined]  # what the renewing thread sets
        with pytest.raises(LockedError, match="deploy lock was lost"):
            deploy(engine, state, role_release("web", "img-a", replicas=2))
    assert engine.samples == []  # not one container started
    deploy(engine, state, role_release("web", "img-a", replicas=2))  # no lock held: no check
    assert len(containers(engine, "web")) == 2


class RegistryEngine(RecordingEngine):
    """An engine that runs images from a registry: each is pushed once before it runs."""

    capabilities = RecordingEngine.capabilities - {Capability.LOCAL_IMAGES}

    def __init__(self) -> None:
        super().__init__()
        self.pushed: list[str] = []
        self.started: list[str] = []

    def distribute(self, image: str) -> str:
        self.pushed.append(image)
        return f"registry.example/{image}"

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        self.started.append(spec.image)
        return super().start(spec)


def test_each_image_is_distributed_once_and_started_as_the_engine_says(state: State) -> None:
    engine = RegistryEngine()
    deploy(engine, state, role_release("web", "img-a", replicas=3))
    assert engine.pushed == ["img-a"]
    assert engine.started == ["registry.example/img-a"] * 3
    # The instances run what corral built, whatever reference the engine started them by.
    again = plan_deploy(
        SCOPE, {"web": role_release("web", "img-a", replicas=3)}, observed(engine, state)
    )
    assert not again.has_changes


class Steps(NullProgress):
    def __init__(self) -> None:
        self.said: list[str] = []

    def step(self, subject: str, message: str) -> None:
        self.said.append(f"{subject}: {message}")


class CuttingEdge(FakeEdge):
    """An edge whose drained servers still had requests running when the drain ran out."""

    def drain(self, role: str, name: str, timeout: float) -> bool:
        super().drain(role, name, timeout)
        return False


def test_requests_cut_at_the_end_of_a_drain_are_said(state: State) -> None:
    engine, edge, progress = RecordingEngine(), CuttingEdge(), Steps()
    for image in ("img-a", "img-b"):
        rr = role_release("web", image, replicas=1, public=8080)
        release = state.start_release(FLEET, "deploy", {"web": rr.to_record()})
        plan = plan_deploy(
            SCOPE, {"web": rr}, observed(engine, state, edge), release=release.number
        )
        executor = Executor(engine, SCOPE, Journal(state, FLEET), progress, edge)  # type: ignore[arg-type]
        executor.apply(plan)
        state.finish_release(release.id, "active")
    [cut] = [line for line in progress.said if "cut the requests" in line]
    assert cut.startswith("web: cut the requests shop-web-r1-1 was still answering after its drain")
