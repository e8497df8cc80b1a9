"""Single-writer volumes: stop-first replacement and the executor's refusal, on the fake
engine. After every container call the engine samples how many instances of each role
run; for a role with a single-writer volume that must never exceed one.

The real proof (PostgreSQL on a volume, Podman) is tests/engine/test_single_writer.py.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corral import app
from corral.cli.views import plan_lines
from corral.deploy.apply import Executor, Journal
from corral.deploy.desired import RoleRelease
from corral.deploy.plan import STOP_FIRST, plan_deploy, role_batches, single_writer_conflicts
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.errors import DeployError, SpecError, UsageError
from corral.progress import NullProgress
from corral.spec import load_spec
from corral.state import State
from tests.unit.builders import role_release
from tests.unit.test_apply_fake import (
    FLEET,
    SCOPE,
    FakeEdge,
    RecordingEngine,
    containers,
    deploy,
    observed,
    outcomes,
    with_edge,
)

DB = {"volumes": {"data": "/var/lib/db"}}
POLICIES = {
    "rolling surge 1": {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0},
    "rolling surge 2": {"strategy": "rolling", "max_surge": 2, "max_unavailable": 1},
    "blue-green": {"strategy": "blue-green", "keep_old": 600},
}


def most_running(engine: RecordingEngine, role: str, since: int = 0) -> int:
    return max((running.get(role, 0) for _, _, running in engine.samples[since:]), default=0)


def call_index(engine: RecordingEngine, call: str, name: str) -> int:
    return engine.calls.index((call, name))


# -- the plan ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_every_strategy_plans_a_single_writer_role_stop_first(
    state: State, policy: dict[str, Any]
) -> None:
    engine = RecordingEngine()
    deploy(engine, state, role_release("db", "img-a", deploy=policy, **DB))
    desired = {"db": role_release("db", "img-b", deploy=policy, **DB)}
    rp = plan_deploy(SCOPE, desired, observed(engine, state)).role("db")
    assert rp.strategy == STOP_FIRST
    assert rp.exclusive == ("shop-db-data",)
    assert rp.interrupts and rp.unavailable_s is None  # never measured yet


def test_shareable_volumes_keep_the_declared_strategy(state: State) -> None:
    engine = RecordingEngine()
    shared = {"volumes": {"data": "/var/lib/web"}, "shareable": ["data"], "replicas": 2}
    deploy(engine, state, role_release("web", "img-a", **shared))
    mark = len(engine.samples)
    engine.calls.clear()
    _, plan = deploy(engine, state, role_release("web", "img-b", **shared))
    assert plan.role("web").strategy == "rolling" and not plan.role("web").exclusive
    assert engine.calls[0][0] == "start"  # new first, as rolling with surge does
    assert most_running(engine, "web", mark) == 3


def test_old_releases_with_several_replicas_on_a_single_writer_volume_are_named() -> None:
    # A release recorded before `shareable` existed reads every volume as single-writer.
    old = role_release("web", "img-a", replicas=3, volumes={"data": "/d"})
    assert single_writer_conflicts({"web": old}) == [
        "role web has 3 replicas on single-writer volume(s) data"
    ]
    shared = role_release("web", "img-a", replicas=3, volumes={"data": "/d"}, shareable=["data"])
    assert single_writer_conflicts({"web": shared, "db": role_release("db", **DB)}) == []


def test_plan_says_how_long_the_role_will_be_unavailable(state: State) -> None:
    engine = RecordingEngine()
    deploy(engine, state, role_release("db", "img-a", **DB))
    deploy(engine, state, role_release("db", "img-b", **DB))
    [(role, seconds)] = state.last_unavailable(FLEET).items()
    assert role == "db" and 0 <= seconds < 5
    desired = {"db": role_release("db", "img-c", **DB)}
    plan = plan_deploy(SCOPE, desired, observed(engine, state))
    assert plan.role("db").unavailable_s is None  # observed() of the unit tests omits it
    known = dataclasses.replace(observed(engine, state), last_unavailable={"db": 1.2})
    lines = plan_lines(plan_deploy(SCOPE, desired, known, release=3))
    assert "db: stop-first, about 1.2 s unavailable (last replacement)" in lines
    assert "  start shop-db-r3-1" in lines  # the plan names what it starts
    assert "db: stop-first, unavailable for an unknown time (never measured)" in plan_lines(plan)


# -- the executor ----------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_stop_first_never_runs_two_instances_on_the_volume(
    state: State, policy: dict[str, Any]
) -> None:
    engine = RecordingEngine()
    first, _ = deploy(engine, state, role_release("db", "img-a", deploy=policy, **DB))
    mark = len(engine.samples)
    engine.calls.clear()
    second, _ = deploy(engine, state, role_release("db", "img-b", deploy=policy, **DB))

    old, new = SCOPE.instance_name("db", first, 1), SCOPE.instance_name("db", second, 1)
    assert most_running(engine, "db", mark) == 1
    assert call_index(engine, "stop", old) < call_index(engine, "start", new)
    assert engine.containers[new].state == "running"
    # blue-green keeps its old instance as a stopped stand-by; rolling removes it, once
    # the new one serves (removing it first would only lengthen the outage)
    if policy["strategy"] == "blue-green":
        assert outcomes(state)[old] == "standby" and ("remove", old) not in engine.calls
    else:
        assert outcomes(state)[old] == "replaced" and old not in engine.containers
        assert call_index(engine, "start", new) < call_index(engine, "remove", old)
    assert "db" in state.last_unavailable(FLEET)


class LoggingEdge(FakeEdge):
    """A FakeEdge whose drains and admissions go into the engine's call list, in order."""

    def __init__(self, engine: RecordingEngine) -> None:
        super().__init__()
        self.engine = engine

    def drain(self, role: str, name: str, timeout: float) -> bool:
        self.engine.calls.append(("drain", name))
        return super().drain(role, name, timeout)

    def confirm(self, rr: RoleRelease, name: str, timeout: float, ready: bool) -> None:
        self.engine.calls.append(("ready", name))
        super().confirm(rr, name, timeout, ready)


def test_a_public_stop_first_role_is_drained_then_stopped_then_replaced(state: State) -> None:
    engine = RecordingEngine()
    edge = LoggingEdge(engine)
    public = {"public": 5432, "run": {"port": 5432}, **DB}
    for image in ("img-a", "img-b"):
        desired = {"db": role_release("db", image, **public)}
        release = state.start_release(FLEET, "deploy", {"db": desired["db"].to_record()})
        plan = plan_deploy(SCOPE, desired, observed(engine, state, edge), release=release.number)
        engine.calls.clear()
        with_edge(engine, state, edge).apply(plan)
        state.finish_release(release.id, "active")
    assert engine.calls == [
        ("drain", "shop-db-r1-1"),
        ("stop", "shop-db-r1-1"),
        ("start", "shop-db-r2-1"),
        ("ready", "shop-db-r2-1"),
        ("remove", "shop-db-r1-1"),
    ]


def test_switch_back_stops_the_current_instance_before_the_standby_restarts(
    state: State,
) -> None:
    engine = RecordingEngine()
    bg = {"strategy": "blue-green", "keep_old": 600}
    deploy(engine, state, role_release("db", "img-a", deploy=bg, **DB))
    deploy(engine, state, role_release("db", "img-b", deploy=bg, **DB))
    mark = len(engine.samples)
    engine.calls.clear()
    _, plan = deploy(engine, state, role_release("db", "img-a", deploy=bg, **DB))
    assert plan.role("db").restart == ("shop-db-r1-1",)
    assert engine.calls == [("stop", "shop-db-r2-1"), ("restart", "shop-db-r1-1")]
    assert most_running(engine, "db", mark) == 1


def test_the_executor_refuses_a_start_while_another_container_mounts_the_volume(
    state: State,
) -> None:
    engine = RecordingEngine()
    first, _ = deploy(engine, state, role_release("db", "img-a", **DB))
    # A plan that ignores the volume (new first, as plain rolling would) is refused by
    # the executor: it asks the engine, not the plan.
    desired = {"db": role_release("db", "img-b", **DB)}
    release = state.start_release(FLEET, "deploy", {"db": desired["db"].to_record()})
    seen = observed(engine, state)
    plan = plan_deploy(SCOPE, desired, seen, release=release.number)
    rolling = dataclasses.replace(plan.role("db"), strategy="rolling")
    rolling = dataclasses.replace(
        rolling, batches=tuple(role_batches(rolling, desired["db"], seen))
    )
    executor = Executor(engine, SCOPE, Journal(state, FLEET), NullProgress())
    engine.calls.clear()
    with pytest.raises(DeployError) as caught:
        executor.apply_role(rolling, release.number)
    old = SCOPE.instance_name("db", first, 1)
    assert caught.value.holder == old
    assert caught.value.volume == "shop-db-data"
    assert f"{old} (running) mounts single-writer volume shop-db-data" in caught.value.message
    assert not [c for c in engine.calls if c[0] == "start"]
    assert most_running(engine, "db") == 1


def test_a_stray_container_of_the_fleet_on_the_volume_blocks_the_start(state: State) -> None:
    engine = RecordingEngine()
    stray = ContainerInfo(
        "x", "shop-debug", "img-x", {"io.corral.fleet": FLEET}, "running", {}, "",
        volumes=("shop-db-data",),
    )  # fmt: skip
    engine.containers["shop-debug"] = stray
    with pytest.raises(DeployError, match=r"shop-debug \(running\) mounts single-writer volume"):
        deploy(engine, state, role_release("db", "img-a", **DB))
    assert "shop-db-r1-1" not in engine.containers
    # Once it has exited it holds nothing: the same deploy goes through.
    engine.containers["shop-debug"] = dataclasses.replace(stray, state="exited")
    deploy(engine, state, role_release("db", "img-a", **DB))
    assert engine.containers["shop-db-r2-1"].state == "running"


class SlowStop(RecordingEngine):
    """``stop`` returns while the container is still stopping, for ``polls`` inspects."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls
        self.dying: dict[str, int] = {}

    def stop(self, name: str, timeout: int = 10) -> None:
        with self.lock:
            if name in self.containers:
                self.containers[name] = dataclasses.replace(self.containers[name], state="stopping")
                self.dying[name] = self.polls
                self._sample("stop", name)
                self.calls.append(("stop", name))

    def inspect(self, name: str) -> ContainerInfo | None:
        with self.lock:
            if name in self.dying:
                self.dying[name] -= 1
                if self.dying[name] <= 0:
                    del self.dying[name]
                    self.containers[name] = dataclasses.replace(
                        self.containers[name], state="exited"
                    )
            return super().inspect(name)

    def running(self) -> dict[str, int]:  # a stopping container still holds its volumes
        counts: dict[str, int] = {}
        for c in self.containers.values():
            if c.holds_mounts:
                role = c.labels.get("io.corral.role", "")
                counts[role] = counts.get(role, 0) + 1
        return counts


def test_the_new_instance_waits_until_the_old_one_is_really_gone(state: State) -> None:
    engine = SlowStop(polls=3)
    deploy(engine, state, role_release("db", "img-a", **DB))
    mark = len(engine.samples)
    deploy(engine, state, role_release("db", "img-b", **DB))
    assert most_running(engine, "db", mark) == 1
    assert "shop-db-r1-1" not in engine.containers  # removed once the new one served


def test_an_old_instance_that_never_goes_away_stops_the_replacement(state: State) -> None:
    engine = SlowStop(polls=10**9)
    deploy(engine, state, role_release("db", "img-a", **DB))
    release = state.start_release(FLEET, "deploy", {})
    desired = {"db": role_release("db", "img-b", **DB)}
    plan = plan_deploy(SCOPE, desired, observed(engine, state), release=release.number)
    executor = Executor(engine, SCOPE, Journal(state, FLEET), NullProgress(), gone_timeout=0.2)
    with pytest.raises(DeployError, match=r"still stopping .* its replacement was not started"):
        executor.apply(plan)
    assert [n for c, n in engine.calls if c == "start"] == ["shop-db-r1-1"]


# -- through the library: a failed replacement and the automatic undo -------------------

SPEC = """\
fleet: shop
roles:
  db:
    base: {image: localhost/db-base:1}
    run: {command: [db], user: postgres, env: {MODE: "%s"}}
    volumes: {data: /var/lib/db}
    deploy: {strategy: %s}
"""


class CrashingWhenBroken(RecordingEngine):
    """Instances whose MODE is ``broken`` exit at once (they never become healthy)."""

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        info = super().start(spec)
        if spec.env.get("MODE") == "broken":
            info = dataclasses.replace(info, state="exited", exit_code=1)
            self.containers[spec.name] = info
        return info


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, CrashingWhenBroken]:
    engine = CrashingWhenBroken()
    engine.now = datetime.now(UTC).isoformat()  # when stops happen: stand-bys stay fresh
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/db-base:1", {})
    return tmp_path / "corral.yaml", engine


@pytest.mark.parametrize("strategy", ["rolling", "blue-green"])
def test_a_failed_stop_first_replacement_goes_back_one_instance_at_a_time(
    fleet: tuple[Path, CrashingWhenBroken], strategy: str
) -> None:
    path, engine = fleet
    path.write_text(SPEC % ("good", strategy))
    app.deploy(path, engine=engine, skip_tests="unit test")
    mark = len(engine.samples)
    path.write_text(SPEC % ("broken", strategy))
    with pytest.raises(DeployError, match="back on release r1"):
        app.deploy(path, engine=engine, skip_tests="unit test")
    assert most_running(engine, "db", mark) == 1
    starts = [(c, n) for c, n in engine.calls if c in ("start", "restart")]
    assert starts[-2][1] == "shop-db-r2-1"  # the broken one, then the way back
    # The broken instance is gone before the previous release's instance comes back.
    back = len(engine.calls) - 1 - engine.calls[::-1].index(starts[-1])
    assert call_index(engine, "remove", "shop-db-r2-1") < back
    [running] = [c for c in containers(engine, "db") if c.state == "running"]
    assert running.labels["io.corral.release"] == "1"
    if strategy == "blue-green":  # the stopped stand-by itself came back
        assert starts[-1] == ("restart", "shop-db-r1-1")


def test_rollback_is_stop_first_too(fleet: tuple[Path, CrashingWhenBroken]) -> None:
    path, engine = fleet
    path.write_text(SPEC % ("one", "rolling"))
    app.deploy(path, engine=engine, skip_tests="unit test")
    path.write_text(SPEC % ("two", "rolling"))
    app.deploy(path, engine=engine, skip_tests="unit test")
    mark = len(engine.samples)
    engine.calls.clear()
    result = app.rollback(path, engine=engine, skip_tests="unit test")
    assert result.status == "active" and result.plan.role("db").strategy == STOP_FIRST
    assert engine.calls[:3] == [
        ("stop", "shop-db-r2-1"),
        ("start", "shop-db-r3-1"),
        ("remove", "shop-db-r2-1"),
    ]
    assert most_running(engine, "db", mark) == 1


# -- the spec and validate -------------------------------------------------------------

ROLE = """\
fleet: shop
roles:
  db:
    base: {image: localhost/db-base:1}
    run: {command: [db]}
    tests: [corral.yaml]
"""


def test_replicas_on_a_single_writer_volume_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(ROLE + "    replicas: 2\n    volumes: {data: /var/lib/db}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    [problem] = caught.value.diagnostics
    assert problem.path == "roles.db" and (problem.line, problem.column) == (3, 3)
    assert "2 replicas would all mount the single-writer volume(s) data" in problem.message
    path.write_text(
        ROLE + "    replicas: 2\n    volumes: {data: {path: /var/lib/db, shareable: true}}\n"
    )
    role = load_spec(path).fleet.roles["db"]
    assert role.mounts == {"data": "/var/lib/db"} and role.single_writer == ()


def test_a_volume_mapping_is_checked_like_a_path(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(ROLE + "    volumes: {data: {path: /proc/x, shareable: yes}}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    found = {d.path: d.message for d in caught.value.diagnostics}
    assert set(found) == {"roles.db.volumes.data.path", "roles.db.volumes.data.shareable"}
    assert "expected true or false" in found["roles.db.volumes.data.shareable"]


def test_validate_warns_about_one_replica_with_data(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(ROLE + "    volumes: {data: /var/lib/db, logs: /var/log/db}\n")
    [warning] = app.validate(path).warnings
    assert warning.path == "roles.db.replicas"
    assert "single-writer volume(s) data, logs" in warning.message
    assert "stop-first" in warning.message
    path.write_text(ROLE + "    replicas: 0\n    volumes: {data: /var/lib/db}\n")
    assert app.validate(path).warnings == ()


def test_a_release_recorded_before_shareable_existed_is_refused_before_any_change(
    fleet: tuple[Path, CrashingWhenBroken],
) -> None:
    path, engine = fleet
    spec = SPEC % ("one", "rolling")
    shared = "volumes: {data: {path: /var/lib/db, shareable: true}}\n    replicas: 2"
    path.write_text(spec.replace("volumes: {data: /var/lib/db}", shared))
    app.deploy(path, engine=engine, skip_tests="unit test")
    with State.open(load_spec(path).state_path) as state:
        release = state.active_release(FLEET)
        assert release is not None
        roles = {"db": {**release.roles["db"], "shareable": []}}  # as an older corral wrote
        old = state.start_release(FLEET, "deploy", roles)
        state.finish_release(old.id, "active")
    path.write_text(spec)
    app.deploy(path, engine=engine, skip_tests="unit test")
    engine.calls.clear()
    with pytest.raises(UsageError, match="role db has 2 replicas on single-writer volume"):
        app.rollback(path, to=old.number, engine=engine, skip_tests="unit test")
    assert engine.calls == []


def test_the_newest_replacement_of_each_role_is_the_estimate(state: State) -> None:
    release = state.start_release(FLEET, "deploy", {})
    for role, seconds in [("db", 3.0), ("queue", 0.4), ("db", 1.2)]:
        state.record_replacement(FLEET, role, release.number, seconds)
    state.record_replacement("other", "db", release.number, 9.0)
    assert state.last_unavailable(FLEET) == {"db": 1.2, "queue": 0.4}
    with pytest.raises(ValueError, match=">= 0 seconds"):
        state.record_replacement(FLEET, "db", release.number, -1)


def test_the_outage_ends_when_the_new_instance_serves_not_when_the_old_is_removed(
    state: State,
) -> None:
    class SlowRemove(RecordingEngine):
        def remove(self, name: str) -> None:
            time.sleep(0.5)  # a container's storage and stored secrets take a while
            super().remove(name)

    engine = SlowRemove()
    deploy(engine, state, role_release("db", "img-a", **DB))
    deploy(engine, state, role_release("db", "img-b", **DB))
    assert "shop-db-r1-1" not in engine.containers
    assert state.last_unavailable(FLEET)["db"] < 0.4
