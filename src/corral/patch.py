"""The emergency lane (``corral patch``): from a fix in the archive to a fleet replaced.

    refresh -> build -> test -> plan -> canary -> watch -> rollout -> settle -> report

Each stage is an existing part of corral: the base refresh (``build.refresh``), the bake
(cached layers reused, only the roles on a refreshed base change), the test gate's run
(roles in parallel in one environment, ``testing.suite``), and one deploy through the
planner and executor with a canary stage (``orchestrate.Canary``, ``deploy.canary``): a
canary that fails takes the fleet back to the release it ran, and the lane stops saying
why. The caller holds the deploy lock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.build.refresh import (
    Refreshed,
    bases_of,
    diff_packages,
    label_packages,
    lineage_of,
    refresh_base,
)
from corral.deploy import canary as canary_watch
from corral.deploy import orchestrate
from corral.deploy.desired import Desired
from corral.deploy.observe import observe
from corral.deploy.orchestrate import Canary, DeployResult
from corral.deploy.plan import Plan
from corral.deploy.resolve import bake_images
from corral.deploy.service import Context
from corral.errors import CorralError, GateError, UsageError
from corral.testing import suite

STAGES = ("refresh", "build", "test", "plan", "canary", "watch", "rollout", "settle")


@dataclass(frozen=True)
class Options:
    archives: tuple[Path, ...] = ()  # local flat archives to upgrade from, beside the base's
    default_archives: bool = True  # the base's own archives (its mirror, -updates, -security)
    watch: float = 10.0  # seconds the canary is watched
    timeouts: suite.Timeouts = field(default_factory=suite.Timeouts)


@dataclass(frozen=True)
class RolePatch:
    """One role: the image it ran and runs, the packages that changed, the instances."""

    role: str
    old_version: str | None
    new_version: str
    packages: dict[str, tuple[str | None, str | None]]
    retired: tuple[str, ...] = ()
    started: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "packages": [
                {"name": n, "old": old, "new": new} for n, (old, new) in self.packages.items()
            ],
            "retired": list(self.retired),
            "started": list(self.started),
        }


@dataclass(frozen=True)
class PatchReport:
    """The time-to-fix report (``--json``: ``to_dict``)."""

    fleet: str
    status: str  # patched | unchanged | dry-run
    bases: tuple[dict[str, Any], ...]
    roles: tuple[RolePatch, ...]
    stages: tuple[tuple[str, float], ...]
    release: int | None = None
    canary: tuple[canary_watch.Verdict, ...] = ()
    would_replace: dict[str, list[str]] = field(default_factory=dict)  # dry run: role -> names

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "status": self.status,
            "release": self.release,
            "bases": list(self.bases),
            "roles": [r.to_dict() for r in self.roles],
            "stages": [{"stage": s, "seconds": round(t, 3)} for s, t in self.stages],
            "total_seconds": round(self.total, 3),
            "canary": [v.to_dict() for v in self.canary],
            "would_replace": self.would_replace,
        }


class Clock:
    """The stages' times: ``mark(stage)`` ends the running stage and begins ``stage``."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self._current: tuple[str, float] | None = None

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        if self._current is not None:
            self.stages.append((self._current[0], now - self._current[1]))
        self._current = (stage, now)

    def stop(self) -> tuple[tuple[str, float], ...]:
        self.mark("")
        self._current = None
        return tuple(self.stages)


def patch(ctx: Context, roles: Sequence[str] = (), options: Options = Options()) -> PatchReport:
    """Refresh the Debian bases of ``roles`` (default: every role on one), rebuild the
    roles on them, test them, and deploy them with a canary.

    Raises:
        UsageError: a role is unknown, or no role is built on a Debian base.
        GateError: a rebuilt image failed its tests; nothing was deployed.
        ReleaseFailed: the canary or the rollout failed; the fleet is back on the old
            release (the message says why).
    """
    bases = _bases(ctx, roles)
    targets = sorted({name for _, names in bases.values() for name in names})
    clock = Clock()
    clock.mark("refresh")
    revoked = ctx.state.stores.revocations.standing(ctx.scope.fleet).bases
    old_images = _running_images(ctx)
    verdicts: list[canary_watch.Verdict] = []
    refreshed: list[Refreshed] = []
    try:
        for base, _ in bases.values():  # one at a time: a failure puts back those done
            refreshed.append(
                refresh_base(
                    ctx.engine, base, ctx.progress, options.archives, options.default_archives,
                    revoked,
                )
            )  # fmt: skip
        result = _rebuild_and_deploy(ctx, targets, options, clock, verdicts)
    except CorralError:
        _put_back(ctx, refreshed)
        raise
    stages = clock.stop()
    return PatchReport(
        ctx.scope.fleet,
        "patched" if result.status == "active" else result.status,
        tuple(_base_dict(r, bases) for r in refreshed),
        tuple(_role_patches(ctx, result, old_images, targets)),
        stages,
        result.release,
        tuple(verdicts),
    )


def _rebuild_and_deploy(
    ctx: Context,
    targets: Sequence[str],
    options: Options,
    clock: Clock,
    verdicts: list[canary_watch.Verdict],
) -> DeployResult:
    """The build, test and deploy stages; the canary's verdicts go to ``verdicts``."""
    clock.mark("build")
    bake_images(ctx, targets)
    clock.mark("test")
    _test(ctx, targets, options.timeouts)
    clock.mark("plan")

    def watch(plan: Plan) -> None:
        verdicts.extend(canary_watch.watch(ctx, plan, options.watch))

    spec_roles = ctx.spec.fleet.roles
    counts = {n: spec_roles[n].deploy.canary.count(spec_roles[n].replicas) for n in targets}
    stage = Canary(counts=counts, watch=watch, mark=clock.mark)
    return orchestrate.deploy(ctx, targets, checks=_checks(ctx, targets), canary=stage)


def _put_back(ctx: Context, refreshed: Sequence[Refreshed]) -> None:
    """After a failed lane, each refreshed base's tag goes back to the image it named: a
    plain ``corral deploy`` must not carry a refresh that failed its tests or its canary
    (the refreshed image stays, untagged, for a look; the next patch refreshes again)."""
    for base in refreshed:
        if base.moved:
            ctx.engine.tag_image(base.old_id, base.tag)
            ctx.progress.step("base", f"{base.tag} is back on the image it named before")


def dry_run(ctx: Context, roles: Sequence[str] = ()) -> PatchReport:
    """What ``patch`` would refresh, rebuild and replace; reads the spec and the engine's
    listing only (a few seconds), changes nothing. Whether the archive holds a newer
    package is only known by refreshing: every role on a base is named."""
    started = time.monotonic()
    bases = _bases(ctx, roles)
    instances = [i for i in observe(ctx.engine, ctx.scope) if i.running]
    replace = {
        name: [i.name for i in instances if i.role == name]
        for _, names in bases.values()
        for name in names
    }
    revoked = set(ctx.state.stores.revocations.standing(ctx.scope.fleet).bases)
    return PatchReport(
        ctx.scope.fleet,
        "dry-run",
        tuple(
            {"tag": tag, "roles": names, "bootstrap": _on_revoked(ctx, tag, revoked)}
            for tag, (_, names) in bases.items()
        ),
        (),
        (("dry-run", time.monotonic() - started),),
        would_replace=replace,
    )


def _on_revoked(ctx: Context, tag: str, revoked: set[str]) -> bool:
    """Whether the base under ``tag`` is, or is layered on, a revoked base (``patch``
    bootstraps it anew)."""
    image = ctx.engine.inspect_image(tag)
    return image is not None and bool(lineage_of(ctx.engine, image) & revoked)


def _bases(ctx: Context, roles: Sequence[str]) -> dict[str, Any]:
    unknown = [r for r in roles if r not in ctx.spec.fleet.roles]
    if unknown:
        known = ", ".join(ctx.spec.fleet.roles)
        raise UsageError(f"no role called {', '.join(unknown)} in the spec (roles: {known})")
    bases = bases_of(ctx.spec, roles)
    if not bases:
        raise UsageError(
            "no role "
            + ("of " + ", ".join(roles) + " " if roles else "")
            + "is built on a Debian base: corral patch refreshes Debian bases only"
        )
    return bases


def _test(ctx: Context, roles: Sequence[str], timeouts: suite.Timeouts) -> None:
    """The test gate's run of the rebuilt images (all roles side by side); any failure
    stops the lane before anything changes."""
    results = suite.run_tests(ctx, roles, timeouts=timeouts)
    failed = [r for r in results if r.outcome == "failed"]
    if failed:
        active = ctx.state.active_release(ctx.scope.fleet)
        where = f"r{active.number}" if active else "what it ran"
        detail = "; ".join(f"{r.role} {r.image_version}: {r.log_excerpt[:300]}" for r in failed)
        raise GateError(
            f"the patched images failed their tests ({detail}); nothing was deployed, the "
            f"fleet stays on {where}",
            roles=[r.role for r in failed],
        )


def _checks(ctx: Context, targets: Sequence[str]) -> orchestrate.Checks:
    """The deploy's gate (the images just tested) and its smoke test, as ``corral deploy``'s."""

    def recorded(desired: Desired) -> set[str]:
        return set(desired) - set(targets)

    return orchestrate.Checks(
        before=lambda desired: suite.gate(ctx, desired, None, True, recorded(desired)),
        after=lambda desired: suite.smoke(ctx, desired),
    )


def _running_images(ctx: Context) -> dict[str, tuple[str, str]]:
    """Per role of the active release: (its image version, its image id)."""
    active = ctx.state.active_release(ctx.scope.fleet)
    if active is None:
        return {}
    return {
        name: (str(rr["image_version"]), str(rr["image_id"])) for name, rr in active.roles.items()
    }


def _role_patches(
    ctx: Context, result: DeployResult, old: dict[str, tuple[str, str]], targets: Sequence[str]
) -> list[RolePatch]:
    patches = []
    for rp in result.plan.roles:
        if rp.role not in targets or rp.release is None:
            continue
        before = old.get(rp.role)
        old_labels = _labels(ctx, before[1]) if before else {}
        new_labels = _labels(ctx, rp.release.image_id)
        first = result.canary.role(rp.role).new if result.canary else ()
        patches.append(
            RolePatch(
                rp.role,
                before[0] if before else None,
                rp.release.image_version,
                diff_packages(label_packages(old_labels), label_packages(new_labels)),
                retired=tuple(c.instance for c in rp.stop),
                started=(*first, *rp.new),
            )
        )
    return patches


def _labels(ctx: Context, image_id: str) -> dict[str, str]:
    found = ctx.engine.inspect_image(image_id)
    return dict(found.labels) if found else {}


def _base_dict(refreshed: Refreshed, bases: dict[str, Any]) -> dict[str, Any]:
    return {
        "tag": refreshed.tag,
        "roles": bases[refreshed.tag][1],
        "old_id": refreshed.old_id,
        "new_id": refreshed.new_id,
        "refreshed": refreshed.moved,
        "packages": [
            {"name": n, "old": old, "new": new} for n, (old, new) in refreshed.changed.items()
        ],
    }
