"""corral reaches instances, tests and the edge through the engine's Access protocol,
and says plainly when an engine lacks a capability a command needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.deploy.observe import instance_labels, observe
from corral.deploy.plan import EdgePlan, Observed, needed_capabilities, plan_deploy
from corral.deploy.scope import Scope
from corral.edge.container import SOCKET_IN_CONTAINER, SOCKET_NAME, Edge
from corral.engines.capabilities import Capability, NotSupportedError, require
from corral.engines.fake import FAKE_CAPABILITIES, FakeEngine, fake_exec
from corral.engines.values import ContainerInfo, ContainerSpec, ExecResult, Mount
from corral.testing import lockdown
from corral.testing.environment import TestEnvironment
from corral.testing.lockdown import lockdown_checks
from tests.unit.builders import role_release

SCOPE = Scope("shop")


class ElsewhereEngine(FakeEngine):
    """An engine whose instances corral reaches somewhere else than their own address
    (as through a multi-host engine's routing), with its own test backend and socket."""

    def probe_address(self, info: ContainerInfo, network: str) -> str | None:
        return "192.0.2.7"

    def test_backend(self, name: str) -> str:
        return f"elsewhere://{name}"

    def control_socket(self, mount: Mount, socket: str) -> str:
        return f"/forwarded/{mount.target.strip('/')}/{socket}"


class LackingEngine(FakeEngine):
    """A multi-host engine's shape: no exec, no security introspection, no host sockets."""

    name = "swarm"
    capabilities = FAKE_CAPABILITIES - {
        Capability.EXEC,
        Capability.SECURITY,
        Capability.HOST_SOCKETS,
    }


def _start_instance(engine: FakeEngine, scope: Scope, role: str = "web") -> str:
    name = scope.instance_name(role, 1, 1)
    labels = instance_labels(scope, role, 1, 1, "cfg")
    engine.start(ContainerSpec(name=name, image="img-a", labels=labels, network=scope.network))
    return name


def test_observe_takes_the_address_the_engine_says_corral_reaches(tmp_path: Path) -> None:
    engine = ElsewhereEngine()
    _start_instance(engine, SCOPE)
    [instance] = observe(engine, SCOPE)
    assert instance.address == "192.0.2.7"  # not the container's own 10.88.x address


def test_the_test_description_carries_the_engines_test_backend(tmp_path: Path) -> None:
    engine = ElsewhereEngine()
    env = TestEnvironment(engine, "shop", tmp_path / "owners", tmp_path)
    name = _start_instance(engine, env.scope)
    [described] = env.describe(role_release("web"))["instances"]
    assert described["backend"] == f"elsewhere://{name}"
    assert described["address"] == "192.0.2.7"


def test_an_engine_without_exec_describes_no_test_backend(tmp_path: Path) -> None:
    engine = LackingEngine()
    env = TestEnvironment(engine, "shop", tmp_path / "owners", tmp_path)
    _start_instance(engine, env.scope)
    [described] = env.describe(role_release("web"))["instances"]
    assert described["backend"] is None


def test_the_edge_asks_the_engine_where_its_sockets_are(tmp_path: Path) -> None:
    edge = Edge(ElsewhereEngine(), SCOPE, "key", runtime_root=tmp_path)
    target = SOCKET_IN_CONTAINER.strip("/")
    assert edge.socket(SOCKET_NAME) == f"/forwarded/{target}/{SOCKET_NAME}"
    assert edge.api.socket_path == f"/forwarded/{target}/{SOCKET_NAME}"
    local = Edge(FakeEngine(), SCOPE, "key", runtime_root=tmp_path)
    assert local.socket(SOCKET_NAME) == str(local.folder / "sock" / SOCKET_NAME)


def test_an_edge_on_an_engine_without_host_sockets_is_refused_first(tmp_path: Path) -> None:
    engine = LackingEngine()
    edge = Edge(engine, SCOPE, "key", runtime_root=tmp_path)
    with pytest.raises(NotSupportedError, match="swarm engine cannot reach a container's Unix"):
        edge.start({}, "img-a")
    assert engine.calls == [] and not edge.folder.exists()  # nothing was started or written


def test_lockdown_checks_say_which_capability_the_engine_lacks() -> None:
    engine = LackingEngine()
    name = _start_instance(engine, SCOPE)
    with pytest.raises(NotSupportedError) as refused:
        lockdown_checks(engine, name, role_release("web"))
    assert refused.value.message == (
        "the swarm engine cannot report a container's security settings, "
        "which corral test's lockdown checks needs"
    )
    assert (refused.value.engine, refused.value.capability) == ("swarm", "security-introspection")


def test_lockdown_checks_look_through_security_and_exec() -> None:
    engine = FakeEngine()
    labels = instance_labels(SCOPE, "web", 1, 1, "cfg")
    spec = ContainerSpec(name="shop-web-r1-1", image="img-a", labels=labels, user="app")
    engine.start(spec)
    looks: list[str] = []
    tcp = "  sl  local_address rem_address   st\n   0: 00000000:0016 00000000:0000 0A\n"

    def inside(name: str, command: Sequence[str]) -> ExecResult:
        looks.append(name)
        if list(command[:2]) != ["sh", "-c"]:
            return fake_exec(name, command)
        section = lockdown._SECTION
        return ExecResult(0, f"0\n{section}\n{tcp}{section}\nsleep\ndropbear\n", "")

    engine.exec_answer = inside
    checks = {
        c.name.split(" (")[0]: c for c in lockdown_checks(engine, spec.name, role_release("web"))
    }
    assert checks["lockdown: read-only root"].outcome == "passed"
    assert checks["lockdown: no host ports"].outcome == "passed"
    # "app" maps to uid 0 inside: only exec can tell.
    assert checks["lockdown: non-root user"].message == "the process runs as uid 0"
    assert checks["lockdown: no SSH server"].message == "something listens on port 22"
    assert checks["lockdown: only declared ports listen"].message == (
        "undeclared listening port(s): [22]"
    )
    assert looks == [spec.name]  # one command inside for every check


def test_a_look_inside_that_fails_fails_every_check_that_needs_it() -> None:
    engine = FakeEngine()
    labels = instance_labels(SCOPE, "web", 1, 1, "cfg")
    spec = ContainerSpec(name="shop-web-r1-1", image="img-a", labels=labels, user="app")
    engine.start(spec)  # the fake answers no `sh -c`: status 127
    checks = lockdown_checks(engine, spec.name, role_release("web"))
    could_not = {c.name.split(" (")[0] for c in checks if "could not check" in c.message}
    assert could_not == {
        "lockdown: non-root user",
        "lockdown: no SSH server",
        "lockdown: only declared ports listen",
    }
    assert all(c.outcome == "failed" for c in checks if "could not check" in c.message)


def test_require_passes_a_declared_capability() -> None:
    require(FakeEngine(), Capability.EXEC, "a test")  # declared: no error
    with pytest.raises(NotSupportedError, match="cannot list the files a container changed"):
        require(FakeEngine(), Capability.DIFF, "a test")


def test_a_plan_names_the_capabilities_it_needs_before_anything_changes() -> None:
    db = role_release("db", "img-d", volumes={"data": "/var/lib/db"})
    web = role_release(
        "web", "img-w", public=8080, run={"port": 8000}, health={"command": ["true"]}
    )
    observed = Observed([], set(), set(), set(), datetime.now(UTC))
    plan = plan_deploy(SCOPE, {"db": db, "web": web}, observed, release=1)
    plan = dataclasses.replace(plan, edge=EdgePlan("create", "no edge yet", "img-edge"))
    needed = dict(needed_capabilities(plan))
    assert needed == {
        Capability.VOLUMES: "role db's volumes",
        Capability.RUN_ONCE: "role web's command health check",
        Capability.HOST_SOCKETS: "the edge's admin socket",
        Capability.PODS: "the edge's take-over of its open ports",
    }
    # An engine without host sockets is told before the deploy starts anything.
    engine = LackingEngine()
    missing = [c for c in needed if c not in engine.capabilities]
    assert missing == [Capability.HOST_SOCKETS]
    with pytest.raises(NotSupportedError, match="which the edge's admin socket needs"):
        for capability, purpose in needed_capabilities(plan):
            require(engine, capability, purpose)
