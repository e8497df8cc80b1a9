"""``corral plan`` and ``corral edge replace``; deploy, rollback and undo are the
orchestrator's (``corral.deploy.orchestrate``), re-exported here for callers of old.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from corral.deploy.apply import Executor, Journal

# Re-exported: callers imported them from here before the stages had modules of their own.
from corral.deploy.context import GOOD as GOOD
from corral.deploy.context import Context as Context
from corral.deploy.desired import Desired, RoleRelease, desired_from_record
from corral.deploy.fleet import Sighting
from corral.deploy.fleet import observe_fleet as observe_fleet
from corral.deploy.instances import resolve_secrets
from corral.deploy.observe import Instance
from corral.deploy.orchestrate import NEW_POD_ACTIONS, edge_replacement, same_as_active
from corral.deploy.orchestrate import Checks as Checks
from corral.deploy.orchestrate import DeployResult as DeployResult
from corral.deploy.orchestrate import converge as converge
from corral.deploy.orchestrate import deploy as deploy
from corral.deploy.orchestrate import next_release as next_release
from corral.deploy.orchestrate import no_check as no_check
from corral.deploy.orchestrate import rollback as rollback
from corral.deploy.orchestrate import verify as verify
from corral.deploy.plan import EdgeReplacement, Plan, plan_deploy, plan_edge_replace
from corral.deploy.resolve import bake_edge, edge_image, resolve_desired
from corral.deploy.secrets import stamped
from corral.edge.container import check_from_outside
from corral.errors import CorralError, UsageError


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    unbuilt: tuple[str, ...]  # roles whose current inputs have no image yet
    unbuilt_volumes: tuple[str, ...] = ()  # volumes a deploy of those roles would create
    # Nothing to replace, but the release's recorded settings differ (``deploy.*``, the
    # test key...): a deploy records a new release, so the plan must not say "no changes".
    settings_only: bool = False

    @property
    def has_changes(self) -> bool:
        edge = self.plan.edge.replaced_after_roles
        return self.plan.has_changes or edge or bool(self.unbuilt) or self.settings_only

    @property
    def volumes_touched(self) -> int:
        """Volumes a deploy would create, the unbuilt roles' included; none is deleted."""
        return self.plan.volumes_touched + len(self.unbuilt_volumes)


def plan(ctx: Context, roles: Sequence[str] = (), seen: Sighting | None = None) -> PlanResult:
    """What ``deploy`` would change, without building or changing anything; ``seen``:
    the fleet as the caller just looked at it (None: look now).

    As a deploy of ``roles`` does, the spec's other roles join as the active release runs
    them; an unbuilt role is left out (its build comes first), but the edge is judged with
    its port: before, a plan said "public ports changed" for a code change, and said
    nothing of the new pod a new unbuilt public role needs."""
    resolved = resolve_desired(ctx, roles, keep_released=True)
    unbuilt = set(resolved.unbuilt)
    chosen = {name: rr for name, rr in resolved.desired.items() if name not in unbuilt}
    fresh = (set(roles) if roles else set(chosen)) & set(chosen)
    values = resolve_secrets(chosen, fresh, advice="export them before planning")
    desired = stamped(chosen, fresh, values, ctx.secret_key)
    view, pending = _edge_view(ctx, desired, resolved.unbuilt)
    observed = observe_fleet(ctx, desired, edge_image(ctx, view), seen, True, edge_view=view)
    release = next_release(ctx.state, ctx.scope.fleet)
    new_volumes = (
        ctx.scope.volume_name(name, volume)
        for name in resolved.unbuilt
        for volume in sorted(ctx.spec.fleet.roles[name].volumes)
    )
    untouched = (*resolved.untouched, *(n for n in resolved.unbuilt if n not in resolved.untouched))
    planned = plan_deploy(ctx.scope, desired, observed, untouched, release, pending_public=pending)
    planned = _ports_checked(ctx, planned, view)
    return PlanResult(
        planned,
        resolved.unbuilt,
        tuple(v for v in new_volumes if v not in observed.volumes),
        settings_only=not (planned.has_changes or resolved.unbuilt)
        and not planned.edge.replaced_after_roles  # a port: the edge line says it
        and not same_as_active(ctx, desired),
    )


def _ports_checked(ctx: Context, planned: Plan, view: Desired) -> Plan:
    """``planned``, refused (``edge.blocked``) when its new pod would publish a port
    another program holds: the deploy refuses it before anything changes."""
    if planned.edge.action not in NEW_POD_ACTIONS or planned.edge.blocked:
        return planned
    try:
        ctx.edge.check_ports(view)
    except UsageError as exc:
        return dataclasses.replace(
            planned, edge=dataclasses.replace(planned.edge, blocked=exc.message)
        )
    return planned


def _edge_view(
    ctx: Context, desired: Desired, unbuilt: Sequence[str]
) -> tuple[dict[str, RoleRelease], dict[str, int]]:
    """(the roles the edge is judged with, the public roles the plan leaves out, by
    port: those the running edge lacks need a new pod).

    The edge is judged with ``desired`` and each unbuilt role as the active release runs
    it, on the spec's port. An unbuilt public role the release does not run is left out
    too, unless there is no edge yet: the deploy starts one with every port."""
    active = ctx.state.active_release(ctx.scope.fleet)
    released = desired_from_record(active.roles) if active else {}
    view = dict(desired)
    left_out: dict[str, int] = {}
    for name in unbuilt:
        port = ctx.spec.fleet.roles[name].public
        was = released.get(name)
        if was is not None and was.public is not None:
            view[name] = was.model_copy(update={"public": port})
        if port is not None and (name in view or ctx.edge.container() is not None):
            left_out[name] = port
    return view, left_out


@dataclass(frozen=True)
class EdgeReplaced:
    """What ``corral edge replace`` did: the edge's image, and whether it was reloaded in
    place or handed over to a new container in the same pod (no connection refused
    either way), or started in a new pod."""

    image: str
    reloaded: bool
    handed_over: bool = False  # a new container took over the open ports: none refused
    # It already ran this configuration and image: the reload (still made: a way to
    # refresh the edge's workers) changed nothing.
    unchanged: bool = False


def replace_edge(ctx: Context) -> EdgeReplaced:
    """Bring the edge to the active release's configuration and the current edge image.

    When only the configuration changed (or nothing did), the running edge reloads it in
    place; a new image or uid is a new container that takes over the pod's open sockets:
    no connection is refused either way. New ports or a new address need a new pod. Before
    a new container serves, every instance the edge will send requests to must pass the
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
    details = {
        "image": image,
        "reloaded": replaced.reloaded,
        "handed_over": replaced.handed_over,
        "unchanged": replaced.unchanged,
    }
    ctx.state.record_audit(ctx.scope.fleet, "edge-replace", "edge", "ok", details)
    return replaced


def _replace_edge(ctx: Context, desired: Desired, image: str) -> EdgeReplaced:
    observed = observe_fleet(ctx, desired, image)
    how = edge_replacement(ctx, desired, image)
    plan = plan_edge_replace(ctx.scope, desired, observed, image, how)
    executor = Executor(
        ctx.engine, ctx.scope, Journal(ctx.state, ctx.scope.fleet), ctx.progress, ctx.edge
    )
    executor.replace_edge(plan)
    return EdgeReplaced(
        image,
        reloaded=how is EdgeReplacement.RELOAD,
        handed_over=how is EdgeReplacement.HAND_OVER,
        unchanged=observed.edge.action == "none",
    )


def verify_edge_checks(serving: Sequence[tuple[RoleRelease, Instance, str]]) -> None:
    """Every instance passes, from outside, the check the new edge will make of it.

    Raises:
        GateError: one does not; nothing was changed.
    """
    check_from_outside([(rr, instance.name, address) for rr, instance, address in serving])
