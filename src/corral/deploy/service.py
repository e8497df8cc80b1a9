"""``corral plan`` and ``corral edge replace``; deploy, rollback and undo are the
orchestrator's (``corral.deploy.orchestrate``), re-exported here for callers of old.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

# Re-exported: callers imported them from here before the stages had modules of their own.
from corral.deploy.context import GOOD as GOOD
from corral.deploy.context import Context as Context
from corral.deploy.desired import Desired, RoleRelease, desired_from_record
from corral.deploy.fleet import observe_fleet as observe_fleet
from corral.deploy.health import network_check, probe_once
from corral.deploy.instances import resolve_secrets
from corral.deploy.observe import Instance
from corral.deploy.orchestrate import Checks as Checks
from corral.deploy.orchestrate import DeployResult as DeployResult
from corral.deploy.orchestrate import converge as converge
from corral.deploy.orchestrate import deploy as deploy
from corral.deploy.orchestrate import no_check as no_check
from corral.deploy.orchestrate import rollback as rollback
from corral.deploy.orchestrate import verify as verify
from corral.deploy.plan import Plan, plan_deploy
from corral.deploy.resolve import bake_edge, edge_image, resolve_desired
from corral.deploy.secrets import stamped
from corral.errors import CorralError, EngineError, GateError, UsageError
from corral.spec.model import TcpHealth

VERIFY_TRIES, VERIFY_PAUSE = 3, 0.2  # an instance's check before an edge is replaced


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    unbuilt: tuple[str, ...]  # roles whose current inputs have no image yet
    unbuilt_volumes: tuple[str, ...] = ()  # volumes a deploy of those roles would create

    @property
    def has_changes(self) -> bool:
        return self.plan.has_changes or bool(self.unbuilt)

    @property
    def volumes_touched(self) -> int:
        """Volumes a deploy would create, the unbuilt roles' included; none is deleted."""
        return self.plan.volumes_touched + len(self.unbuilt_volumes)


def plan(ctx: Context, roles: Sequence[str] = ()) -> PlanResult:
    """What ``deploy`` would change, without building or changing anything."""
    resolved = resolve_desired(ctx, roles)
    values = resolve_secrets(resolved.desired, advice="export them before planning")
    desired = stamped(resolved.desired, set(resolved.desired), values, ctx.secret_key)
    observed = observe_fleet(ctx, desired, edge_image(ctx, desired))
    new_volumes = (
        ctx.scope.volume_name(name, volume)
        for name in resolved.unbuilt
        for volume in sorted(ctx.spec.fleet.roles[name].volumes)
    )
    return PlanResult(
        plan_deploy(ctx.scope, desired, observed, resolved.untouched),
        resolved.unbuilt,
        tuple(v for v in new_volumes if v not in observed.volumes),
    )


@dataclass(frozen=True)
class EdgeReplaced:
    """What ``corral edge replace`` did: the edge's image, and whether it was reloaded in
    place (no connection refused) or started as a new container."""

    image: str
    reloaded: bool


def replace_edge(ctx: Context) -> EdgeReplaced:
    """Bring the edge to the active release's configuration and the current edge image.

    When only the configuration changed (or nothing did), the running edge reloads it in
    place and no connection is refused. A new image or new ports need a new container:
    before the old one goes, every instance the edge will send requests to must pass the
    check it will get there, from outside; if one does not, the old edge keeps serving.

    Raises:
        UsageError: no role of the active release is public.
        GateError: an instance fails its check; nothing was changed.
        EngineError: the edge refused; a failed reload leaves the old configuration.
    """
    active = ctx.state.active_release(ctx.scope.fleet)
    desired = desired_from_record(active.roles) if active else {}
    baked = bake_edge(ctx, desired)
    image = baked.image_id if baked else None
    if image is None:
        raise UsageError("no role of the active release is public: there is no edge to replace")
    try:
        replaced = _replace_edge(ctx, desired, image)
    except CorralError as exc:
        ctx.state.record_audit(
            ctx.scope.fleet,
            "edge-replace",
            "edge",
            "failed",
            {"image": image, "error": exc.message},
        )
        raise
    details = {"image": image, "reloaded": replaced.reloaded}
    ctx.state.record_audit(ctx.scope.fleet, "edge-replace", "edge", "ok", details)
    return replaced


def _replace_edge(ctx: Context, desired: Desired, image: str) -> EdgeReplaced:
    if ctx.edge.can_reload(desired, image):
        ctx.progress.step("edge", "reloading the edge's configuration in place")
        ctx.edge.reload(desired, image)
        return EdgeReplaced(image, reloaded=True)
    serving = _edge_instances(ctx, desired)
    verify_edge_checks(serving)
    ctx.progress.step("edge", "replacing the edge container (a short interruption)")
    ctx.engine.ensure_network(ctx.scope.network, ctx.scope.labels("network"))
    ctx.edge.start(desired, image)
    failed: list[str] = []
    for rr, instance, address in serving:
        try:
            ctx.edge.add(rr, instance.name, address, timeout=30)
        except CorralError as exc:
            failed.append(f"{instance.name}: {exc.message}")
    if failed:
        raise EngineError("the new edge does not see every instance healthy: " + "; ".join(failed))
    return EdgeReplaced(image, reloaded=False)


def _edge_instances(ctx: Context, desired: Desired) -> list[tuple[RoleRelease, Instance, str]]:
    """The running instances of good releases that run ``desired``'s configuration of a
    public role, with their addresses: those the edge sends requests to."""
    observed = observe_fleet(ctx, desired, None)
    found = []
    for instance in observed.instances:
        rr = desired.get(instance.role)
        if (
            rr is not None
            and rr.public is not None
            and instance.running
            and instance.release in observed.good_releases
            and instance.address is not None
            and instance.config_hash == rr.config_hash  # its health is this release's
        ):
            found.append((rr, instance, instance.address))
    return found


def verify_edge_checks(serving: Sequence[tuple[RoleRelease, Instance, str]]) -> None:
    """Every instance passes, from outside, the check the new edge will make of it.

    Raises:
        GateError: one does not; nothing was changed.
    """
    problems = []
    for rr, instance, address in serving:
        assert rr.run.port is not None
        # The edge checks a command role over TCP: that is what the new edge will see.
        health = network_check(rr.health) if rr.health else TcpHealth(tcp=True)
        problem = None
        for _ in range(VERIFY_TRIES):
            problem = probe_once(address, rr.run.port, health)
            if problem is None:
                break
            time.sleep(VERIFY_PAUSE)
        if problem is not None:
            problems.append(f"{instance.name}: {problem}")
    if problems:
        raise GateError(
            "not replacing the edge, the old one keeps serving: the new edge would see "
            + "; ".join(problems),
            failures=problems,
        )
