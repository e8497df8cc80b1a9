"""The desired fleet: per role, the image already baked from its current inputs.

``resolve_desired`` is the one way plan, deploy, ``corral test`` and the coverage report
learn what they would run. It never bakes: baking is a stage of its own (``bake_images``,
``bake_edge``) that a deploy or a test runs before it, and a role whose current inputs
have no image yet is named in ``Resolved.unbuilt``, never silently skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from corral.build.bake import BakeTarget, BuildResult, bake_target, build_fleet, find_current_image
from corral.deploy.context import Context
from corral.deploy.desired import Desired, RoleRelease, desired_from_record
from corral.edge.container import EDGE_ROLE, edge_role, frontends
from corral.errors import UsageError
from corral.state import ImageRecord, ReleaseRecord


@dataclass(frozen=True)
class Resolved:
    """What a deploy of some roles would run, and which roles it leaves alone.

    ``desired`` maps each role to the image and configuration it would run; ``untouched``
    are roles of the spec whose instances are left as they are; ``unbuilt`` are asked-for
    roles whose current inputs have no image yet (they are in neither mapping).
    """

    desired: dict[str, RoleRelease]
    untouched: tuple[str, ...] = ()
    unbuilt: tuple[str, ...] = ()


def bake_images(ctx: Context, roles: Sequence[str] = ()) -> dict[str, BuildResult]:
    """The bake stage of a deploy or a test: build what changed of ``roles`` (default: all).

    Raises:
        UsageError: a named role is not in the spec.
        BuildError: a build failed; nothing of that role is deployed.
    """
    results = build_fleet(ctx.spec, ctx.engine, ctx.state, roles or None, ctx.progress)
    return {r.role: r for r in results}


def bake_edge(ctx: Context, desired: Desired) -> BuildResult | None:
    """Bake (or find) the edge's image when a role of ``desired`` is public; else None."""
    if not frontends(desired):
        return None
    target = BakeTarget(ctx.scope.fleet, EDGE_ROLE, edge_role(), ctx.spec.root)
    return bake_target(target, ctx.engine, ctx.state, ctx.progress)


def edge_image(ctx: Context, desired: Desired) -> str | None:
    """The newest edge image already baked, or None when no role is public (no baking)."""
    if not frontends(desired):
        return None
    latest = ctx.state.latest_image(ctx.scope.fleet, EDGE_ROLE)
    return latest.image_id if latest else None


def resolve_desired(
    ctx: Context,
    roles: Sequence[str] = (),
    *,
    baked: Mapping[str, BuildResult] | None = None,
    keep_released: bool = False,
    rebind: Mapping[str, Mapping[str, str]] | None = None,
) -> Resolved:
    """Per role of ``roles`` (default: all), the image baked from its current inputs.

    Args:
        baked: the bake stage's results; a role found there is taken from them, with no
            engine call. The others are looked for as ``corral plan`` does.
        keep_released: for a deploy of some roles: the spec's other roles join the
            desired state as the active release runs them (a kept role whose instance
            died is started again as released).
        rebind: per role, volumes switched to other engine volumes by this change
            (``corral restore``); the others stay on those the active release uses.

    Raises:
        UsageError: a named role is not in the spec.
    """
    names = _select(ctx, roles)
    desired: dict[str, RoleRelease] = {}
    unbuilt = []
    active = ctx.state.active_release(ctx.scope.fleet)
    wanted = {(n, v) for n in names for v in ctx.spec.fleet.roles[n].volumes}
    bound = volume_bindings(_newest_good(ctx, active), wanted)
    for name in names:
        image = _image(ctx, name, baked or {})
        if image is None:
            unbuilt.append(name)
        else:
            rr = RoleRelease.from_role(name, ctx.spec.fleet.roles[name], image)
            names_now = {**bound.get(name, {}), **(rebind or {}).get(name, {})}
            desired[name] = rr.with_volume_names(names_now)
    if keep_released and roles and active is not None:
        for name, rr in desired_from_record(active.roles).items():
            if name not in desired and name in ctx.spec.fleet.roles:
                desired[name] = rr
    untouched = tuple(name for name in ctx.spec.fleet.roles if name not in desired)
    return Resolved(desired, untouched, tuple(unbuilt))


# How many good releases volume_bindings looks through at most (a volume no release
# declared, a new one, is looked for in all of them).
BINDING_LOOKBACK = 200


def _newest_good(ctx: Context, active: ReleaseRecord | None) -> Iterator[ReleaseRecord]:
    """The releases that went live, newest first: the active one (if any), then, only if
    asked for, the superseded ones (read once, when the active one did not settle it)."""
    if active is not None:
        yield active
    yield from reversed(ctx.state.releases_with_status(ctx.scope.fleet, ("superseded",)))


def volume_bindings(
    newest_first: Iterable[ReleaseRecord], wanted: Collection[tuple[str, str]]
) -> dict[str, dict[str, str]]:
    """Per role, the restored volumes it runs on (see ``RoleRelease.volume_names``), for
    each (role, volume) of ``wanted``: a deploy from the spec keeps them.

    The newest good release that declared a volume decides its binding, not only the
    active one: a volume dropped from the spec and declared again comes back to the copy
    the role last ran on (a restored one), not to the one it was restored from."""
    bound: dict[str, dict[str, str]] = {}
    undecided = set(wanted)
    for release in itertools.islice(newest_first, BINDING_LOOKBACK):
        for name in {r for r, _ in undecided} & set(release.roles):
            rr = RoleRelease.model_validate(release.roles[name])
            for volume in {v for r, v in undecided if r == name} & set(rr.volumes):
                undecided.discard((name, volume))
                if volume in rr.volume_names:
                    bound.setdefault(name, {})[volume] = rr.volume_names[volume]
        if not undecided:
            break
    return bound


def resolve_release(release: ReleaseRecord) -> Resolved:
    """The desired state a recorded release asks for (a rollback, an undo): every role of
    it, and no role left untouched (instances of any other role are retired)."""
    return Resolved(desired_from_record(release.roles))


def _select(ctx: Context, roles: Sequence[str]) -> list[str]:
    unknown = [name for name in roles if name not in ctx.spec.fleet.roles]
    if unknown:
        raise UsageError(f"no role called {', '.join(unknown)} in the spec")
    return list(dict.fromkeys(roles)) if roles else list(ctx.spec.fleet.roles)


def _image(ctx: Context, name: str, baked: Mapping[str, BuildResult]) -> ImageRecord | None:
    if name in baked:
        version = baked[name].version
        return next(i for i in ctx.state.images(ctx.scope.fleet, name) if i.version == version)
    role = ctx.spec.fleet.roles[name]
    target = BakeTarget(ctx.scope.fleet, name, role, ctx.spec.root)
    return find_current_image(target, ctx.engine, ctx.state, retag=False)  # reads only
