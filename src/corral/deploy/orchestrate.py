"""The orchestrator: the one place where a change of the live fleet runs its stages, in order.

    clean-up -> bake -> resolve -> plan -> gate -> hooks -> apply -> smoke -> settle -> outcome

A deploy (from the spec), a rollback (an earlier release's record) and the undo after a
failure (back to the release before) run through the same planner and executor; only how
the desired state is found differs. Each stage lives in its own module: ``gc`` (what
killed deploys left), ``resolve`` (bake, then the desired state), ``fleet`` (observe),
``plan`` (pure), ``apply`` (the executor), ``settle`` (replicas before a release is live),
``outcome`` (how a failed release ends). The gate and the smoke test come from
``corral.testing`` through ``Checks``; the deploy core never imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NoReturn

from corral.deploy.apply import BackupRunner, Executor, Journal, run_backups
from corral.deploy.context import GOOD, Context
from corral.deploy.desired import Desired, desired_from_record
from corral.deploy.fleet import Sighting, look, observe_fleet
from corral.deploy.gc import sweep_killed
from corral.deploy.instances import resolve_secrets
from corral.deploy.observe import list_scope, observe
from corral.deploy.outcome import Failed, as_deploy_error, fail
from corral.deploy.plan import (
    EdgeReplacement,
    Plan,
    needed_capabilities,
    plan_canary,
    plan_deploy,
    plan_edge_replace,
    single_writer_conflicts,
)
from corral.deploy.resolve import (
    Resolved,
    bake_edge,
    bake_images,
    resolve_desired,
    resolve_release,
)
from corral.deploy.revoked import check_not_revoked, unfit_images
from corral.deploy.scope import LIVE
from corral.deploy.secrets import (
    changed_secrets,
    check_unchanged,
    live_values,
    secret_names,
    stamped,
)
from corral.deploy.settle import Watch, settle, settle_time
from corral.engines.capabilities import require
from corral.errors import (
    CorralError,
    DataGuardError,
    DeployError,
    GateError,
    LockedError,
    StateError,
    UsageError,
)
from corral.state import ReleaseRecord, State


@dataclass(frozen=True)
class DeployResult:
    fleet: str
    kind: str  # deploy | rollback
    status: str  # active | failed | unchanged
    release: int | None
    plan: Plan
    message: str = ""
    rolled_back_to: int | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # what the operator should know (a rollback's new secrets)
    canary: Plan | None = None  # with a canary stage: its plan (``plan`` is the rest's)


def no_check(desired: Desired) -> None:
    pass


@dataclass(frozen=True)
class Checks:
    """What a deploy asks of the test gate; ``corral.testing`` provides the real ones.

    ``before`` runs once the desired images are known and before anything changes (it
    may refuse with GateError); ``after`` runs once the new release serves (a smoke test:
    a DeployError there takes the fleet back like a failed health check).
    """

    before: Callable[[Desired], None] = no_check
    after: Callable[[Desired], None] = no_check


@dataclass(frozen=True)
class Planned:
    """What a hook is told before apply: the change about to be made, as plain data."""

    fleet: str
    kind: str  # deploy | rollback
    plan: Plan
    desired: Desired

    def replaced_volumes(self) -> dict[str, tuple[str, ...]]:
        """Per role whose running instances this plan stops (replaced, scaled down or left
        by a killed deploy), the engine names of the volumes they mount: what a pre-deploy
        backup must save before apply."""
        return {rp.role: rp.volumes for rp in self.plan.roles if rp.volumes and rp.stop}


@dataclass(frozen=True)
class Canary:
    """A canary stage for ``deploy`` (``corral patch``): before the rest of the release,
    ``counts[role]`` new instances start beside the old ones and ``watch`` judges them.

    ``watch`` gets the canary's plan (``plan.plan_canary``) once its instances run, and
    raises a CorralError to fail the release (the fleet goes back, as for a failed health
    check). ``mark`` is told each stage as it begins: canary, watch, rollout, settle.
    """

    counts: Mapping[str, int]
    watch: Callable[[Plan], None]
    mark: Callable[[str], None] = lambda stage: None


# Asked, with the data guard's concerns in words, whether a deploy may go on (the CLI:
# --yes, or yes on a terminal). The default refuses: data is never cut off unasked.
Approve = Callable[[Sequence[str]], bool]


def refuse(concerns: Sequence[str]) -> bool:
    return False


# Called with the plan after the gate and before anything changes; an error it raises
# (a CorralError) refuses the change, no release recorded. The undo after a failure runs
# no hook: it must go back whatever happens, and the deploy's hooks ran before it started.
Hook = Callable[[Planned], None]


@dataclass(frozen=True)
class _Change:
    """What one run of the pipeline is asked to do."""

    kind: str  # deploy | rollback
    roles: tuple[str, ...] = ()  # a deploy of these roles only; empty: all of them
    source: ReleaseRecord | None = None  # a rollback: the release deployed again
    rebind: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)


def deploy(
    ctx: Context,
    roles: Sequence[str] = (),
    kind: str = "deploy",
    source: ReleaseRecord | None = None,
    checks: Checks = Checks(),
    hooks: Sequence[Hook] = (),
    backup: BackupRunner | None = None,
    rebind: Mapping[str, Mapping[str, str]] | None = None,
    canary: Canary | None = None,
    approve: Approve = refuse,
) -> DeployResult:
    """Bring the fleet to the spec (or, for a rollback, to ``source``'s recorded state).

    ``backup`` carries out the plan's pre-deploy backups (``Action.BACKUP`` steps) before
    anything changes; ``rebind`` switches roles' volumes to other engine volumes (a
    restore, see ``resolve_desired``).

    The caller holds the deploy lock. Stages, in order: clean-up of what killed deploys
    left, bake (none for a rollback) with the fleet read side by side, resolve, plan,
    the gate (``checks.before``), ``hooks`` with the plan, then ``converge``.

    Raises:
        UsageError: a role is unknown, or a recorded release is not deployable.
        GateError: an image is not tested; nothing was changed.
        RevokedError: an image to deploy or start is revoked (or its base); nothing changed.
        DataGuardError: the plan has data concerns ``approve`` did not approve.
        DeployError: a role failed; the fleet was taken back (see ``converge``).
    """
    started = time.monotonic()
    change = _Change(kind, tuple(roles), source, rebind or {})
    _clean_up(ctx)
    resolved, edge, seen = _bake_and_resolve(ctx, change)
    desired, secrets, fresh = _with_secrets(ctx, change, resolved)
    notes = _rotation_notes(ctx, source, desired)
    observed = observe_fleet(ctx, desired, edge, seen, backups=True)
    release = next_release(ctx.state, ctx.scope.fleet)
    back_to = source.number if source else None  # a rollback's release
    plan = plan_deploy(ctx.scope, desired, observed, resolved.untouched, release, source=back_to)
    if plan.edge.blocked:
        raise GateError(
            plan.edge.blocked, roles=plan.edge.blocked_roles, failures=(plan.edge.blocked,)
        )
    if edge and plan.edge.action in NEW_POD_ACTIONS:  # before anything changes
        ctx.edge.check_ports(desired)
    unfit = unfit_images(ctx.state, ctx.scope.fleet)
    check_not_revoked(desired, plan, () if source else change.roles, unfit)
    if not plan.has_changes and not plan.edge.replaced_after_roles and same_as_active(ctx, desired):
        took = time.monotonic() - started
        fleet = ctx.scope.fleet
        return DeployResult(
            fleet, kind, "unchanged", None, plan, "nothing to change", seconds=took, notes=notes
        )
    secrets = {**secrets, **_kept_roles_values(ctx, plan, desired, fresh)}
    for capability, purpose in needed_capabilities(plan):  # before anything changes
        require(ctx.engine, capability, purpose)
    _guard_data(ctx, plan, kind, approve)
    checks.before(desired)
    planned = Planned(ctx.scope.fleet, kind, plan, desired)
    for hook in hooks:
        hook(planned)
    run_backups(plan, backup, ctx.progress)  # before anything changes: no release yet
    result = converge(
        ctx, plan, secrets, edge, kind, source, checks.after, canary, resolved.untouched
    )
    return dataclasses.replace(result, seconds=time.monotonic() - started, notes=notes)


def _guard_data(ctx: Context, plan: Plan, kind: str, approve: Approve) -> None:
    """Ask before a plan cuts data off from its role (see ``dataguard``); audit the yes.

    Raises:
        DataGuardError: not approved; nothing was changed.
    """
    concerns = plan.data.concerns
    if not concerns:
        return
    for concern in concerns:
        ctx.progress.step("data", concern)
    if not approve(concerns):
        raise DataGuardError(
            "the data guard refused: " + "; ".join(concerns) + " (run again with --yes to "
            "go on; no volume is ever deleted by a deploy)",
            failures=tuple(concerns),
        )
    details = {"kind": kind, "release": plan.release, "concerns": list(concerns)}
    ctx.state.record_audit(ctx.scope.fleet, "data-guard", "fleet", "approved", details)


def _clean_up(ctx: Context) -> None:
    """Under the deploy lock: abort what killed deploys left ``deploying``, forget their
    orphan secrets. Their stopped instances are the plan's clean-up (see ``gc``)."""
    for release in sweep_killed(ctx):
        ctx.progress.step(
            "fleet", f"release r{release.number} was left unfinished by a killed deploy; converging"
        )


def _bake_and_resolve(
    ctx: Context, change: _Change
) -> tuple[Resolved, str | None, Sighting | None]:
    """The bake stage, then the desired state: (what to run, the edge image, the fleet as
    read meanwhile, or None when something was baked: a build takes a while, so the plan
    reads the fleet again and sees it as it is)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Reading the fleet and baking the images are independent: side by side.
        seeing = pool.submit(look, ctx)
        if change.source is None:
            baked = bake_images(ctx, change.roles)
            resolved = resolve_desired(
                ctx, change.roles, baked=baked, keep_released=True, rebind=change.rebind
            )
        else:  # a rollback bakes no role: its images are recorded
            baked, resolved = {}, resolve_release(change.source)
        edge = bake_edge(ctx, resolved.desired)
    conflicts = single_writer_conflicts(resolved.desired)
    if conflicts:  # only an older corral's release can hold one: the spec refuses them
        raise UsageError(
            "; ".join(conflicts) + ": two instances must never mount a single-writer volume; "
            "deploy a spec that runs one replica or declares the volume shareable"
        )
    built = any(r.status == "built" for r in [*baked.values(), *([edge] if edge else [])])
    return resolved, edge.image_id if edge else None, None if built else seeing.result()


def _with_secrets(
    ctx: Context, change: _Change, resolved: Resolved
) -> tuple[Desired, dict[str, str], set[str]]:
    """(the desired state with its secrets' keyed hashes, their values, the roles whose
    values are today's): the roles the change is about (a rollback: all) get today's."""
    desired = resolved.desired
    everything = change.source is not None or not change.roles
    fresh = set(desired) if everything else set(change.roles) & set(desired)
    secrets = resolve_secrets(desired, fresh)
    return stamped(desired, fresh, secrets, ctx.secret_key), secrets, fresh


def _kept_roles_values(
    ctx: Context, plan: Plan, desired: Desired, fresh: set[str]
) -> dict[str, str]:
    """The values a partial deploy needs for the other roles: only those of roles it must
    start an instance of (one died), and only if they are still the recorded ones."""
    starting = [rp.role for rp in plan.roles if rp.start and rp.role not in fresh]
    values = resolve_secrets(desired, starting)
    check_unchanged(desired, starting, values, ctx.secret_key)
    return values


def _rotation_notes(
    ctx: Context, source: ReleaseRecord | None, desired: Desired
) -> tuple[str, ...]:
    """For a rollback: the secrets whose value changed since ``source`` (its instances get
    today's value: old values are never kept), each also said as progress."""
    if source is None:
        return ()
    recorded = desired_from_record(source.roles)
    notes = []
    for name, rr in sorted(desired.items()):
        for secret in changed_secrets(recorded[name], rr) if name in recorded else ():
            note = (
                f"secret {secret} changed since release r{source.number}: {name}'s instances "
                "get today's value (old values are not kept)"
            )
            ctx.progress.step(name, note)
            notes.append(f"{name}: {note}")
    return tuple(notes)


def same_as_active(ctx: Context, desired: Desired) -> bool:
    """Whether ``desired`` is the active release as recorded (settings included: a
    change of only ``deploy.*`` or of the test key records a release, replacing nothing)."""
    active = ctx.state.active_release(ctx.scope.fleet)
    if active is None:
        return False
    recorded = desired_from_record(active.roles)
    return {k: v.to_record() for k, v in recorded.items()} == {
        k: v.to_record() for k, v in desired.items()
    }


def next_release(state: State, fleet: str) -> int:
    """The number the fleet's next release gets (every release counts, failed ones too)."""
    return max((r.number for r in state.releases(fleet, limit=1)), default=0) + 1


def converge(
    ctx: Context,
    plan: Plan,
    secrets: Mapping[str, str],
    edge: str | None,
    kind: str,
    source: ReleaseRecord | None,
    after: Callable[[Desired], None] = no_check,
    canary: Canary | None = None,
    untouched: Sequence[str] = (),
) -> DeployResult:
    """Record a release, apply the plan, smoke-test and settle it; undo if a role fails.

    With ``canary``, the plan is carried out in two parts of the same release: the
    canary's instances, watched, then the rest planned from the fleet as it is then.

    The outcome is decided here: active, or (``outcome.fail``) rolled back with the undo
    or failed; an interruption marks the release aborted and undoes nothing.

    Raises:
        StateError: the release recorded is not the one the plan names its instances
            for (another deploy started one meanwhile); nothing was changed.
    """
    fleet = ctx.scope.fleet
    desired = plan.desired
    previous = ctx.state.active_release(fleet)
    release = ctx.state.start_release(
        fleet,
        kind,
        {k: v.to_record() for k, v in desired.items()},
        source.number if source else None,
    )
    journal = Journal(ctx.state, fleet)
    details = {"release": release.number, "kind": kind}
    if release.number != plan.release:
        why = f"the plan is for release r{plan.release}, the state started r{release.number}"
        ctx.state.finish_release(release.id, "aborted", why)
        raise StateError(f"{why}: another deploy ran meanwhile; plan again")
    first: Plan | None = None
    try:
        if canary is None:
            _apply(ctx, plan, secrets, edge, journal)
        else:
            first, plan = _canary_first(ctx, plan, secrets, edge, journal, canary, untouched)
            canary.mark("settle")
        if plan.edge.replaced_after_roles:
            converge_edge(ctx, desired, release.number, edge, journal)
        verify(ctx, desired, 0.0, edge)  # every role at its replicas before the smoke test
        settling = settle_time(desired, _changed(plan))
        side_by_side(lambda: after(desired), lambda: verify(ctx, desired, settling, edge))
    except CorralError as exc:
        if isinstance(exc, LockedError):  # another process took the lock: it owns the fleet
            _abort(ctx, journal, release, details, exc.message)
            raise
        if _state_failed(exc):
            _stop_unwritable(ctx, journal, release, details, exc)
        undo_it = functools.partial(undo, ctx, previous, secrets, edge)
        fail(ctx.state, Failed(release, previous, as_deploy_error(exc), kind, undo_it))
    except BaseException as exc:  # Ctrl-C, or a bug: nothing was decided, nothing undone
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}"
        _abort(ctx, journal, release, details, why)
        raise
    ctx.state.finish_release(release.id, "active")
    remember_edge(ctx, desired, edge)
    _record_volumes(ctx, plan, release.number)
    journal.audit(kind, "fleet", "ok", {**details, "source": source.number if source else None})
    return DeployResult(fleet, kind, "active", release.number, plan, canary=first)


def _canary_first(
    ctx: Context,
    plan: Plan,
    secrets: Mapping[str, str],
    edge: str | None,
    journal: Journal,
    canary: Canary,
    untouched: Sequence[str],
) -> tuple[Plan, Plan]:
    """Apply the canary's part of ``plan``, let ``canary.watch`` judge it, then plan and
    apply the rest. The canary's instances belong to the release being made: the rest's
    plan counts that release as good, so it keeps them as current."""
    first = plan_canary(plan, canary.counts)
    canary.mark("canary")
    _apply(ctx, first, secrets, edge, journal)
    canary.mark("watch")
    canary.watch(first)
    canary.mark("rollout")
    observed = observe_fleet(ctx, plan.desired, edge)
    good = {*observed.good_releases, plan.release}
    observed = dataclasses.replace(observed, good_releases=good)
    rest = plan_deploy(ctx.scope, plan.desired, observed, untouched, plan.release)
    _apply(ctx, rest, secrets, edge, journal)
    return first, rest


def _state_failed(exc: CorralError) -> bool:
    """Whether ``exc`` is the state failing to record a step (a full or read-only disk, a
    server gone), for one role or for all, rather than a role's own failure."""
    if isinstance(exc, StateError):
        return True
    if isinstance(exc, DeployError):
        return exc.cause == StateError.kind or any(_state_failed(f) for f in exc.failures)
    return False


def _stop_unwritable(
    ctx: Context,
    journal: Journal,
    release: ReleaseRecord,
    details: dict[str, Any],
    exc: CorralError,
) -> NoReturn:
    """Stop where the deploy is, undoing nothing: going back records each step too, so it
    would stop half-way on the same state and leave the fleet neither here nor there. The
    instances already replaced serve beside the old ones, as after an interruption; the
    next deploy (the state writable again) marks this release aborted and finishes.

    Raises:
        DeployError: saying so (its ``cause`` is ``state``: exit code 7).
    """
    live = [i for i in observe(ctx.engine, ctx.scope) if i.running]
    counts = ", ".join(
        f"{role}: {sum(1 for i in live if i.role == role)} running (of {rr.replicas} wanted; "
        f"{sum(1 for i in live if i.role == role and i.release == release.number)} of "
        f"release r{release.number})"
        for role, rr in sorted(release_desired(release).items())
    )
    with suppress(CorralError):  # the state may take this one write, or not
        _abort(ctx, journal, release, details, f"the state could not be written: {exc.message}")
    raise DeployError(
        f"release r{release.number} stopped: the state {ctx.scope.state} could not record a "
        f"step ({exc.message}). Nothing was undone (going back would stop half-way on the "
        f"same state): old and new instances serve side by side ({counts}). Make the state "
        f"writable, then run `corral deploy` again: it finishes the deploy",
        reason=exc.message,
        cause=StateError.kind,
    ) from exc


def release_desired(release: ReleaseRecord) -> dict[str, Any]:
    """The roles ``release`` was started with (as recorded when it began)."""
    return dict(desired_from_record(release.roles))


def remember_edge(ctx: Context, desired: Desired, edge: str | None) -> None:
    """The edge's configuration on disk made to declare its servers as they run now, so
    that the engine's restart of a crashed edge brings them back (``Edge.remember``).
    A failure here changes nothing that runs: the next deploy or watch pass writes it."""
    if edge is None:
        return
    with contextlib.suppress(CorralError, OSError):
        ctx.edge.remember(desired)


def _record_volumes(ctx: Context, plan: Plan, release: int) -> None:
    """Once a release is live: every volume it mounts is recorded as in use (one an
    earlier corral made is recorded now), and each the plan retains is marked so, with why.
    Nothing is removed: a retained volume keeps its data until the operator names it."""
    if ctx.scope.env != LIVE:
        return
    fleet = ctx.scope.fleet
    for name, rr in sorted(plan.desired.items()):
        for volume, path in sorted(rr.volumes.items()):
            engine_name = rr.engine_volume(ctx.scope, volume)
            ctx.state.record_volume(fleet, engine_name, name, volume, path, release)
    known = {v.name for v in ctx.state.volumes(fleet)}
    for kept in plan.data.retained:
        if kept.name in known:
            ctx.state.retain_volume(fleet, kept.name, kept.reason)


def _abort(
    ctx: Context, journal: Journal, release: ReleaseRecord, details: dict[str, Any], why: str
) -> None:
    """End ``release`` aborted (nothing decided, nothing undone) and audit it."""
    ctx.state.finish_release(release.id, "aborted", why)
    journal.audit(str(details["kind"]), "fleet", "aborted", {**details, "error": why})


def _apply(
    ctx: Context, plan: Plan, secrets: Mapping[str, str], edge: str | None, journal: Journal
) -> None:
    """The apply stage, for a deploy, a rollback and an undo alike: the plan is its input."""
    executor = Executor(
        ctx.engine,
        ctx.scope,
        journal,
        ctx.progress,
        ctx.edge if edge else None,
        secrets,
        key=ctx.secret_key,
    )
    executor.apply(plan)


def _changed(plan: Plan) -> list[str]:
    return [name for wave in plan.waves for name in wave if plan.role(name).changed]


def side_by_side(beside: Callable[[], None], here: Callable[[], None]) -> None:
    """Run ``beside`` in a thread while ``here`` runs; both end before this returns.

    The smoke test and the settling watch each wait (on pytest starting, on the clock):
    one after the other they added up. An error of ``here`` wins (a settling shortfall
    names the instances that fell), else ``beside``'s is raised.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(beside)
        try:
            here()
        except BaseException:
            running.exception()  # it ends before the caller undoes anything
            raise
        running.result()


def verify(ctx: Context, desired: Desired, seconds: float, edge: str | None) -> None:
    """Every role at its replicas, serving, for ``seconds`` (once when 0); see ``settle``.

    Raises:
        DeployError: a role fell below its replicas; names the instances and their logs.
    """
    public = sorted(rr.role for rr in desired.values() if rr.public is not None)
    if seconds > 0:
        ctx.progress.step("fleet", f"settling: watching the instances for {seconds:g}s")
    watch = Watch(
        listing=lambda: list_scope(ctx.engine, ctx.scope),
        edge_up=lambda: {role: _up_in_edge(ctx, role) for role in public} if edge else {},
        logs=ctx.engine.logs,
    )
    settle(desired, seconds, watch)


def _up_in_edge(ctx: Context, role: str) -> set[str]:
    return {s.name for s in ctx.edge.servers(role) if s.admin == "ready" and s.operational == "up"}


def undo(
    ctx: Context, previous: ReleaseRecord | None, secrets: Mapping[str, str], edge: str | None
) -> int | None:
    """Converge back to ``previous`` (or to nothing), through the same planner and executor.

    Returns:
        The number of the release gone back to, or None when there was none.
    """
    ctx.progress.step("fleet", "deploy failed: going back to the previous release")
    desired = resolve_release(previous).desired if previous else {}
    observed = observe_fleet(ctx, desired, edge)
    # The failed release is not "good": its instances are replaced by the previous ones,
    # named on from the highest index the previous release's instances have.
    number = previous.number if previous else 0
    plan = plan_deploy(ctx.scope, desired, observed, release=number, source=number)
    # Instances the undo starts get today's values (old ones are never kept); their
    # labels say so (the executor's key), so the next plan sees what they really hold.
    starting = secret_names(desired, (rp.role for rp in plan.roles if rp.start))
    advice = "export them: going back to the previous release needs them"
    values = {**secrets, **live_values((n for n in starting if n not in secrets), advice)}
    journal = Journal(ctx.state, ctx.scope.fleet)
    _apply(ctx, plan, values, edge, journal)
    if plan.edge.replaced_after_roles:  # the failed release had brought the edge to its ports
        converge_edge(ctx, desired, number, edge, journal)
    return previous.number if previous else None


#: The edge actions that may start a new pod, which publishes the spec's ports afresh.
NEW_POD_ACTIONS = ("create", "start", "replace", "replace-needed")


def edge_replacement(ctx: Context, desired: Desired, image: str) -> EdgeReplacement:
    """How the edge comes to serve ``desired`` with ``image``: the least that does it."""
    if ctx.edge.can_reload(desired, image):
        return EdgeReplacement.RELOAD
    if ctx.edge.can_hand_over(desired):
        return EdgeReplacement.HAND_OVER
    return EdgeReplacement.NEW_POD


def converge_edge(
    ctx: Context, desired: Desired, release: int, edge: str | None, journal: Journal
) -> None:
    """Bring the edge to ``desired``'s frame once the roles are in place, as ``corral
    edge replace`` does: a new container takes over the open ports (a new image or uid),
    or a new pod takes in every instance serving (new ports: they refuse connections for
    about a second). The instances of ``release`` count as serving: the release is not
    live yet, and the smoke test that makes it live goes through these ports.

    Raises:
        GateError: an instance fails the new edge's check; the old edge keeps serving.
        EngineError: the edge refused, or the new one does not see every instance healthy.
    """
    if edge is None:
        return
    observed = observe_fleet(ctx, desired, edge)
    if not observed.edge.replaced_after_roles:
        return
    observed = dataclasses.replace(observed, good_releases={*observed.good_releases, release})
    how = edge_replacement(ctx, desired, edge)
    ctx.progress.step("edge", observed.edge.reason)
    executor = Executor(ctx.engine, ctx.scope, journal, ctx.progress, ctx.edge)
    executor.replace_edge(plan_edge_replace(ctx.scope, desired, observed, edge, how))
    details = {"image": edge, "how": how.value, "release": release}
    journal.audit("edge-replace", "edge", "ok", details)


def rollback(
    ctx: Context,
    to: int | None = None,
    checks: Checks = Checks(),
    hooks: Sequence[Hook] = (),
    backup: BackupRunner | None = None,
    approve: Approve = refuse,
) -> DeployResult:
    """Deploy an earlier release's images and configuration again, through ``deploy``.

    Raises:
        UsageError: there is no such release, or no earlier good release.
    """
    _clean_up(ctx)  # a release a killed deploy left must not be taken for a target
    target = rollback_target(ctx, to)
    return deploy(
        ctx,
        kind="rollback",
        source=target,
        checks=checks,
        hooks=hooks,
        backup=backup,
        approve=approve,
    )


def rollback_target(ctx: Context, to: int | None) -> ReleaseRecord:
    """Release ``to`` (default: the previous good one), checked to be deployable again.

    Raises:
        UsageError: there is no such release, it never went live, or its images are gone.
    """
    fleet = ctx.scope.fleet
    target = ctx.state.get_release(fleet, to) if to is not None else _previous_good(ctx)
    if target is None:
        raise UsageError(
            f"no release r{to} of fleet {fleet}"
            if to is not None
            else "no earlier good release to roll back to"
        )
    if target.status not in GOOD:
        raise UsageError(
            f"release r{target.number} is {target.status}; only releases that "
            "went live can be rolled back to"
        )
    missing = [
        rr.image_tag
        for rr in desired_from_record(target.roles).values()
        if ctx.engine.inspect_image(rr.image_id) is None
    ]
    if missing:
        raise UsageError(f"release r{target.number}'s images are gone: {', '.join(missing)}")
    return target


def _previous_good(ctx: Context) -> ReleaseRecord | None:
    releases = ctx.state.releases_with_status(ctx.scope.fleet, GOOD)
    active = next((r for r in releases if r.status == "active"), None)
    earlier = [
        r
        for r in releases
        if r.status == "superseded"
        and (active is None or r.number < active.number)
        and (active is None or r.roles != active.roles)
    ]
    return earlier[-1] if earlier else None
