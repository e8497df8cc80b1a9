"""A tainted instance (one the coming drift watcher found changed) is replaced through the
same planner and executor as a stale one: exactly it, nothing else."""

from __future__ import annotations

from corral.deploy.apply import Executor, Journal
from corral.deploy.plan import plan_deploy
from corral.deploy.steps import Action
from corral.progress import NullProgress
from corral.state import State
from tests.unit.builders import role_release
from tests.unit.test_apply_fake import (
    FLEET,
    SCOPE,
    RecordingEngine,
    containers,
    deploy,
    observed,
    outcomes,
)


def test_a_plan_replaces_exactly_the_tainted_instance(state: State) -> None:
    engine = RecordingEngine()
    web = role_release("web", "img-a", replicas=3)
    first, _ = deploy(engine, state, web)
    names = [SCOPE.instance_name("web", first, i) for i in (1, 2, 3)]
    seen = observed(engine, state)
    assert not plan_deploy(SCOPE, {"web": web}, seen, release=first + 1).has_changes

    tainted = seen.taint(names[1], "/etc/passwd changed")
    plan = plan_deploy(SCOPE, {"web": web}, tainted, release=first + 1)
    rp = plan.role("web")
    assert rp.keep == (names[0], names[2])
    assert [(c.instance, c.reason) for c in rp.stop] == [(names[1], "tainted: /etc/passwd changed")]
    assert rp.new == (SCOPE.instance_name("web", first + 1, 1),)
    retired = {s.instance for s in rp.steps if s.action in (Action.DRAIN, Action.REMOVE)}
    assert retired == {names[1]}

    release = state.start_release(FLEET, "deploy", {"web": web.to_record()})
    assert release.number == plan.release
    Executor(engine, SCOPE, Journal(state, FLEET), NullProgress()).apply(plan)
    state.finish_release(release.id, "active")
    assert [c.name for c in containers(engine, "web")] == [names[0], names[2], *rp.new]
    assert outcomes(state)[names[1]] == "replaced"


def test_a_tainted_stand_by_is_removed_not_restarted(state: State) -> None:
    engine = RecordingEngine()
    bg = {"strategy": "blue-green", "keep_old": 600}
    first, _ = deploy(engine, state, role_release("web", "img-a", deploy=bg))
    deploy(engine, state, role_release("web", "img-b", deploy=bg))
    standby = SCOPE.instance_name("web", first, 1)
    back = role_release("web", "img-a", deploy=bg)
    seen = observed(engine, state)
    assert plan_deploy(SCOPE, {"web": back}, seen).role("web").restart == (standby,)

    rp = plan_deploy(SCOPE, {"web": back}, seen.taint(standby, "drifted")).role("web")
    assert rp.restart == () and rp.start == 1
    assert [(c.instance, c.reason) for c in rp.cleanup] == [(standby, "tainted: drifted")]
