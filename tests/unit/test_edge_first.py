"""A new public role needs a backend the running edge lacks: the deploy's plan replaces
the edge before the roles (a new pod taking in the instances it serves), and refuses when
that would leave a role it serves without a server while the role is being replaced."""

from __future__ import annotations

from datetime import UTC, datetime

from corral.cli.views import plan_lines
from corral.deploy.desired import RoleRelease
from corral.deploy.observe import Instance
from corral.deploy.plan import Action, EdgePlan, Observed, plan_deploy
from corral.deploy.scope import Scope
from corral.deploy.steps import EdgeServer
from tests.unit.builders import role_release

SCOPE = Scope("shop")
PORTS = EdgePlan("replace-needed", "public ports or their address changed", "img-edge")


def _web(image: str = "img-a") -> RoleRelease:
    return role_release("web", image, public=8080, run={"port": 8000}, replicas=2)


def _admin() -> RoleRelease:
    return role_release("admin", "img-b", public=8081, run={"port": 9000})


def _running(rr: RoleRelease, index: int, config: str | None = None) -> Instance:
    name = SCOPE.instance_name(rr.role, 1, index)
    config = config or rr.config_hash
    return Instance(name, rr.role, 1, index, rr.image_id, config, "running", "10.0.0.2")


def _observed(instances: list[Instance], edge_servers: dict[str, list[EdgeServer]]) -> Observed:
    return Observed(
        instances, (), {1}, (), datetime.now(UTC), edge=PORTS, edge_servers=edge_servers,
        networks={SCOPE.network},
    )  # fmt: skip


def test_a_new_public_role_gets_a_new_pod_before_the_roles() -> None:
    web = _web()
    serving = [_running(web, 1), _running(web, 2)]
    servers = {"web": [EdgeServer(i.name, "ready", True) for i in serving]}
    plan = plan_deploy(SCOPE, {"web": web, "admin": _admin()}, _observed(serving, servers), (), 2)
    assert plan.edge.action == "replace" and not plan.edge.blocked
    assert "new public role admin" in plan.edge.reason
    assert [s.instance for s in plan.edge.servers] == [i.name for i in serving]
    assert {s.action for s in plan.edge.checks} == {Action.CHECK}
    assert plan.has_changes


def test_a_role_replaced_beside_a_new_public_role_blocks_the_deploy() -> None:
    old, new = _web("img-a"), _web("img-c")
    serving = [_running(old, 1), _running(old, 2)]
    servers = {"web": [EdgeServer(i.name, "ready", True) for i in serving]}
    plan = plan_deploy(SCOPE, {"web": new, "admin": _admin()}, _observed(serving, servers), (), 2)
    assert plan.edge.action == "replace"
    assert "deploy admin alone first (corral deploy admin)" in plan.edge.blocked
    assert "web would have no server" in plan.edge.blocked
    assert plan.edge.blocked_roles == ("admin", "web")  # the refusal's JSON names them
    assert plan.edge.to_dict()["blocked_roles"] == ["admin", "web"]
    assert plan_lines(plan)[0].startswith("REFUSED: a deploy would stop here: the new")


def test_a_changed_port_of_a_role_the_edge_has_is_replaced_after_the_roles() -> None:
    web = _web()
    serving = [_running(web, 1), _running(web, 2)]
    servers = {"web": [EdgeServer(i.name, "ready", True) for i in serving]}
    moved = web.model_copy(update={"public": 9090})
    plan = plan_deploy(SCOPE, {"web": moved}, _observed(serving, servers), (), 2)
    assert plan.edge.action == "replace-needed"  # converge_edge, after the roles
    assert not plan.edge.servers and not plan.edge.blocked
