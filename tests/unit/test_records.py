"""True records: how a release ends (status, reason, audit) and the settling check,
through ``service.converge`` with the FakeEngine and a real state database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corral import app
from corral.deploy import service
from corral.deploy import status as fleet_status
from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.outcome import ReleaseFailed
from corral.deploy.plan import plan_deploy
from corral.deploy.scope import LABEL, Scope
from corral.deploy.settle import Watch, settle, settle_time, shortfalls
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.fake import FakeEngine
from corral.errors import DeployError, EngineError, GateError, UsageError
from corral.spec import load_spec
from corral.spec.model import DeployPolicy
from corral.state import State
from tests.unit.builders import role_release

FLEET = "shop"
SCOPE = Scope(FLEET)


class Engine(FakeEngine):
    """A FakeEngine whose starts can be made to fail, and that prints a log line."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_starts = False

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        if self.refuse_starts:
            raise EngineError(f"cannot start {spec.name}: out of space")
        return super().start(spec)

    def logs(self, name: str, tail: int = 40) -> str:
        return f"{name} says password=hunter2\n{name}: last words\n"


@pytest.fixture
def ctx(tmp_path: Path) -> service.Context:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        f"fleet: {FLEET}\nroles:\n  web:\n    base: {{debian: bookworm}}\n"
        "    run: {command: [app], user: app}\n"
    )
    state = State.open(tmp_path / ".corral" / "state.db")
    return service.Context(load_spec(spec), Engine(), state)


def _web(image: str, replicas: int = 2, settle: str = "0s") -> dict[str, RoleRelease]:
    return {"web": role_release("web", image, replicas=replicas, deploy={"settle": settle})}


def _converge(
    ctx: service.Context, desired: Desired, after: Callable[[Desired], None] = service.no_check
) -> service.DeployResult:
    observed = service.observe_fleet(ctx, desired, None)
    plan = plan_deploy(SCOPE, desired, observed, release=service.next_release(ctx.state, FLEET))
    return service.converge(ctx, plan, {}, None, "deploy", None, after)


def _fail_with(error: BaseException) -> Callable[[Desired], None]:
    def after(desired: Desired) -> None:
        raise error

    return after


def test_a_failed_release_taken_back_is_rolled_back_with_its_reason_kept_and_audited(
    ctx: service.Context,
) -> None:
    _converge(ctx, _web("img-a"))
    smoke = DeployError(
        "role web: smoke test failed: test_home: assert 'v2' in 'v1'", role="web", log=["x"]
    )
    with pytest.raises(DeployError, match="back on release r1") as raised:
        _converge(ctx, _web("img-b"), _fail_with(smoke))
    assert "assert 'v2' in 'v1'" in raised.value.message
    second = ctx.state.get_release(FLEET, 2)
    assert second is not None and second.status == "rolled-back"
    assert second.message == smoke.message
    assert second.failure["log"] == ["x"] and second.failure["rolled_back_to"] == 1
    entry = ctx.state.audit_log(FLEET)[-1]
    assert (entry.action, entry.outcome) == ("deploy", "rolled-back")
    assert entry.details["error"] == smoke.message and entry.details["rolled_back_to"] == 1


def test_the_first_release_failing_is_failed_not_rolled_back(ctx: service.Context) -> None:
    with pytest.raises(DeployError, match="no earlier release"):
        _converge(ctx, _web("img-a"), _fail_with(DeployError("role web: broken", role="web")))
    first = ctx.state.get_release(FLEET, 1)
    assert first is not None and (first.status, first.message) == ("failed", "role web: broken")
    assert ctx.state.audit_log(FLEET)[-1].outcome == "failed"


def test_a_release_whose_way_back_fails_too_is_failed_never_left_for_the_sweep(
    ctx: service.Context,
) -> None:
    """The bug behind "aborted: the deploy process died": going back raised, the release
    stayed deploying, and the next run's sweep labelled it aborted."""
    _converge(ctx, _web("img-a"))
    engine = ctx.engine
    assert isinstance(engine, Engine)

    def after(desired: Desired) -> None:
        engine.refuse_starts = True  # r1's instances cannot come back
        raise DeployError("role web: smoke test failed", role="web")

    with pytest.raises(DeployError, match="going back to r1 failed too: role web: cannot start"):
        _converge(ctx, _web("img-b"), after)
    second = ctx.state.get_release(FLEET, 2)
    assert second is not None and second.status == "failed"
    assert "going back to r1 failed too" in (second.message or "")
    assert ctx.state.audit_log(FLEET)[-1].outcome == "failed"
    assert ctx.state.sweep_stale_releases(FLEET) == []
    again = ctx.state.get_release(FLEET, 2)
    assert again is not None and again.status == "failed"


def test_an_engine_error_fails_the_release_rather_than_aborting_it(ctx: service.Context) -> None:
    _converge(ctx, _web("img-a"))
    with pytest.raises(DeployError, match="disk full"):
        _converge(ctx, _web("img-b"), _fail_with(EngineError("disk full", command="x")))
    second = ctx.state.get_release(FLEET, 2)
    assert second is not None and second.status == "rolled-back"


def test_an_interrupted_release_is_aborted_and_audited(ctx: service.Context) -> None:
    with pytest.raises(KeyboardInterrupt):
        _converge(ctx, _web("img-a"), _fail_with(KeyboardInterrupt()))
    first = ctx.state.get_release(FLEET, 1)
    assert first is not None and (first.status, first.message) == ("aborted", "interrupted")
    entry = ctx.state.audit_log(FLEET)[-1]
    assert (entry.outcome, entry.details["error"]) == ("aborted", "interrupted")


def test_an_instance_that_dies_after_its_check_fails_the_release(ctx: service.Context) -> None:
    _converge(ctx, _web("img-a"))
    engine = ctx.engine

    def kill_one(desired: Desired) -> None:  # the smoke test ran; one instance dies
        name = sorted(c.name for c in engine.list_containers(SCOPE.labels("instance")))[-1]
        engine.stop(name)

    with pytest.raises(DeployError, match=r"only 1 of 2 instances serve \(shop-web-r2-2 exited"):
        _converge(ctx, _web("img-b"), kill_one)
    second = ctx.state.get_release(FLEET, 2)
    assert second is not None and second.status == "rolled-back"
    log = second.failure["failures"][0]["log"]
    assert "shop-web-r2-2: shop-web-r2-2: last words" in log
    assert not any("hunter2" in line for line in log)  # what looks secret is scrubbed
    running = [c for c in engine.list_containers(SCOPE.labels("instance")) if c.state == "running"]
    assert sorted(c.labels[LABEL + "release"] for c in running) == ["1", "1"]


def test_a_good_release_is_active_and_audited_ok(ctx: service.Context) -> None:
    result = _converge(ctx, _web("img-a"))
    assert result.status == "active"
    assert ctx.state.audit_log(FLEET)[-1].outcome == "ok"


# -- the settling check, pure -----------------------------------------------------------


def _info(
    name: str, rr: RoleRelease, state: str = "running", code: int | None = None
) -> ContainerInfo:
    labels = {
        **SCOPE.labels("instance"),
        LABEL + "role": rr.role,
        LABEL + "config-hash": rr.config_hash,
    }
    return ContainerInfo(f"id-{name}", name, rr.image_id, labels, state, {}, "", exit_code=code)


def test_shortfalls_count_running_instances_of_the_release_and_the_edges_view() -> None:
    web = role_release("web", "img-b", replicas=3)
    old = role_release("web", "img-a")
    listing = [
        _info("w1", web),
        _info("w2", web, "exited", 137),
        _info("w3", web),
        _info("old", old),  # another image: not this release's
    ]
    [short] = shortfalls({"web": web}, listing, {})
    assert (short.serving, short.replicas, short.down) == (2, 3, ("w2 exited with code 137",))
    [edge_short] = shortfalls({"web": web}, listing, {"web": {"w1"}})
    assert edge_short.serving == 1
    assert "w3 is down in the edge (its health check fails)" in edge_short.down
    full = [_info("w1", web), _info("w2", web), _info("w3", web)]
    assert shortfalls({"web": web}, full, {"web": {"w1", "w2", "w3"}}) == []


def test_settle_watches_for_its_time_and_fails_on_the_first_shortfall() -> None:
    web = role_release("web", "img-b", replicas=1)
    looks: list[int] = []

    def listing() -> list[ContainerInfo]:
        looks.append(1)
        return [_info("w1", web, "running" if len(looks) < 3 else "exited", 1)]

    watch = Watch(listing, dict, lambda name: "boom\n")
    with pytest.raises(DeployError, match="only 0 of 1") as raised:
        settle({"web": web}, 30, watch)
    assert len(looks) == 3
    assert raised.value.failures[0].log == ["w1: boom"]


def test_settle_of_0_looks_once() -> None:
    web = role_release("web", "img-b", replicas=1)
    looks: list[int] = []

    def listing() -> list[ContainerInfo]:
        looks.append(1)
        return [_info("w1", web)]

    settle({"web": web}, 0, Watch(listing, dict, str))
    assert looks == [1]


def test_settle_time_is_the_longest_of_the_changed_roles() -> None:
    desired = {
        "web": role_release("web", deploy={"settle": "3s"}),
        "db": role_release("db", deploy={"settle": "10s"}),
    }
    assert settle_time(desired, ["web"]) == 3.0
    assert settle_time(desired, ["web", "db"]) == 10.0
    assert settle_time(desired, []) == 0.0


# -- history: each row against its real predecessor --------------------------------------


def _release(ctx: service.Context, roles: Desired, status: str, source: int | None = None) -> None:
    kind = "rollback" if source else "deploy"
    record = {k: v.to_record() for k, v in roles.items()}
    release = ctx.state.start_release(FLEET, kind, record, source)
    ctx.state.finish_release(release.id, status, None if status == "active" else "it broke")


def test_history_rows_are_the_same_at_every_limit(ctx: service.Context) -> None:
    _release(ctx, _web("img-a"), "active")
    _release(ctx, _web("img-b"), "active")
    _release(ctx, _web("img-c"), "rolled-back")
    _release(ctx, _web("img-b", replicas=3), "active")
    _release(ctx, _web("img-a"), "active", source=1)
    full = fleet_status.history(ctx, limit=5)
    assert [e.changes for e in full] == [
        ("web: added (v-img-a x2)",),
        ("web: image v-img-a -> v-img-b",),
        ("web: image v-img-b -> v-img-c",),  # against r2, the release live then
        ("web: replicas 2 -> 3",),  # against r2 again: r3 never went live
        ("web: image v-img-b -> v-img-a", "web: replicas 3 -> 2"),
    ]
    for limit in range(1, 6):
        assert fleet_status.history(ctx, limit=limit) == full[-limit:], limit
    [only] = fleet_status.history(ctx, release=4)
    assert only == full[3]


def test_history_names_a_port_and_a_deploy_settings_change(ctx: service.Context) -> None:
    # A port change showed as "-": nothing in the release's instances had changed.
    web = _web("img-a")["web"]
    _release(ctx, {"web": web}, "active")
    _release(ctx, {"web": web.model_copy(update={"public": 9090})}, "active")
    slower = DeployPolicy.model_validate({"drain": "9s"})
    _release(ctx, {"web": web.model_copy(update={"public": None, "deploy": slower})}, "active")
    changes = [e.changes for e in fleet_status.history(ctx)]
    assert changes[1:] == [
        (f"web: public port {web.public or 'none'} -> 9090",),
        ("web: public port 9090 -> none", "web: deploy settings changed"),
    ]


def test_history_of_one_release_keeps_its_whole_reason(ctx: service.Context) -> None:
    _converge(ctx, _web("img-a"))
    smoke = DeployError("role web: smoke test failed: test_x: assert 1 == 2", log=["E boom"])
    with pytest.raises(DeployError):
        _converge(ctx, _web("img-b"), _fail_with(smoke))
    [entry] = fleet_status.history(ctx, release=2)
    assert (entry.status, entry.message) == ("rolled-back", smoke.message)
    assert entry.failure["log"] == ["E boom"]
    with pytest.raises(UsageError, match="no release r9"):
        fleet_status.history(ctx, release=9)


# -- every failing action is audited -----------------------------------------------------


def test_a_failing_action_is_audited_once_with_its_error(ctx: service.Context) -> None:
    with pytest.raises(EngineError), app._audited(ctx, "edge-replace", "edge"):
        raise EngineError("the edge did not open its admin socket within 10s")
    with pytest.raises(GateError), app._audited(ctx, "deploy"):
        raise GateError("not tested: web")
    with pytest.raises(ReleaseFailed), app._audited(ctx, "deploy"):
        raise ReleaseFailed("release r2 failed: audited where it was recorded")
    entries = [(e.action, e.target, e.outcome, e.details["error"]) for e in ctx.state.audit_log()]
    assert entries == [
        ("edge-replace", "edge", "failed", "the edge did not open its admin socket within 10s"),
        ("deploy", "fleet", "refused", "not tested: web"),
    ]
