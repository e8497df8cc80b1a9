"""corral's library API: what the CLI calls, and what scripts and tests can call directly.

Each function takes the spec path and returns plain values; nothing here prints.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral import patch as lane
from corral.backup import service as backups
from corral.backup.restic import (
    PASSWORD_FILES,
    PASSWORD_VALUE,
    PRUNE_PASSWORD_FILE,
    Password,
)
from corral.build import BuildResult, build_fleet, lineage
from corral.build.bake import LABEL
from corral.deploy import ancestry, breakglass, orchestrate, ownership, service, supervise
from corral.deploy import chaos as fleet_chaos
from corral.deploy import gc as fleet_gc
from corral.deploy import reconcile as fleet_reconcile
from corral.deploy import recover as fleet_recover
from corral.deploy import status as fleet_status
from corral.deploy import volumes as fleet_volumes
from corral.deploy.ancestry import ImagesReport, PackageReport
from corral.deploy.context import FLEET_EDGE_KEY
from corral.deploy.desired import Desired, desired_from_record
from corral.deploy.fleet import look
from corral.deploy.gc import Collected
from corral.deploy.metrics import WatchMetrics
from corral.deploy.observe import list_scope
from corral.deploy.orchestrate import Approve, DeployResult, Hook, refuse
from corral.deploy.outcome import ReleaseFailed
from corral.deploy.reconcile import Reconciled as Reconciled
from corral.deploy.scope import Scope
from corral.deploy.service import Context, PlanResult
from corral.deploy.status import FleetStatus, HistoryEntry
from corral.deploy.supervise import Alert as Alert
from corral.deploy.volumes import Deletion as Deletion
from corral.deploy.volumes import VolumeList, check_deletion
from corral.edge.container import adopt_runtime_folder
from corral.engines import Engine, get_engine
from corral.errors import (
    CorralError,
    Diagnostic,
    GateError,
    LockedError,
    StateError,
    UsageError,
)
from corral.progress import NullProgress, Progress
from corral.scrub import Scrubber
from corral.spec import LoadedSpec, load_spec
from corral.spec.model import Role
from corral.state import AuditEntry, ImageRecord, RevocationRecord, State, transfer
from corral.state.ancestry import parse_packages
from corral.state.location import take_over_legacy
from corral.testing import suite

if TYPE_CHECKING:
    from corral.build.sbom import ImageContents

TEST_LOCK_WAIT_S = 3600.0  # how long `corral test` waits for another run of the fleet's


@dataclass(frozen=True)
class Validation:
    spec: LoadedSpec
    warnings: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class Sbom:
    fleet: str
    role: str
    version: str
    image_id: str
    packages: tuple[tuple[str, str], ...]  # (name, version)


def validate(path: Path) -> Validation:
    """Load and check the spec at ``path``; warnings are advice, not errors.

    Raises:
        SpecError: with every problem found, each located by file:line:column.
    """
    spec = load_spec(path)
    warnings = [
        Diagnostic(str(spec.path), 0, 0, f"roles.{name}.tests", "this role has no tests of its own")
        for name, role in spec.fleet.roles.items()
        if not role.tests
    ]
    warnings += [
        Diagnostic(str(spec.path), 0, 0, f"roles.{name}.replicas", _lone_replica(role))
        for name, role in spec.fleet.roles.items()
        if role.replicas == 1 and role.volumes
    ]
    return Validation(spec, tuple(warnings))


def _lone_replica(role: Role) -> str:
    """Why one replica with data is worth a word: there is no redundancy."""
    if not role.single_writer:
        return "one replica with data on volumes: no redundancy if it fails"
    return (
        f"one replica with data on single-writer volume(s) {', '.join(role.single_writer)}: "
        "no redundancy, and it is replaced stop-first, so nothing serves while it is "
        "replaced (`corral plan` says for how long)"
    )


def scrubber(spec: LoadedSpec) -> Scrubber:
    """What removes the fleet's secrets from everything corral stores or prints: the
    values the names in its roles' ``run.secrets`` have in corral's environment, and the
    backup repository's passwords (deploy and prune) when they are set."""
    names = {name for role in spec.fleet.roles.values() for name in role.run.secrets}
    return Scrubber.from_environ(names).including(backup_passwords())


def backup_passwords() -> list[str]:
    """The backup passwords corral's environment holds (files read), for the scrubber."""
    found = []
    for files, value in ((PASSWORD_FILES, PASSWORD_VALUE), ((PRUNE_PASSWORD_FILE,), None)):
        with contextlib.suppress(CorralError):
            found.append(Password.from_environ(files=files, value=value, shared_ok=True).value)
    return [v for v in found if v]


def output_scrubber(path: Path) -> Scrubber:
    """:func:`scrubber` of the spec at ``path``; one that knows no values if the spec
    cannot be loaded (its problems are reported by the command itself)."""
    try:
        return scrubber(load_spec(path))
    except CorralError:
        return Scrubber()


@contextmanager
def open_state(spec: LoadedSpec, progress: Progress | None = None) -> Iterator[State]:
    """The fleet's state (see :mod:`corral.state.location`), open until the block ends.

    A ``.corral/state.db`` an earlier corral kept beside the spec is taken over first,
    once: the message goes to ``progress``, or to stderr for a command without one (it
    is the one thing corral says only once), and to the audit trail.

    Raises:
        StateError: the state cannot be opened, or two histories would have to merge.
    """
    location = spec.state_location
    moved = take_over_legacy(location)
    state = State.open(location.target, scrubber=scrubber(spec))
    try:
        if moved is not None:
            # The edge an earlier corral started keeps its sockets in a folder named after
            # that state's path: it becomes the fleet's folder, and the edge stays reachable.
            adopt_runtime_folder(
                Scope(spec.fleet.fleet).prefix, str(location.legacy), FLEET_EDGE_KEY
            )
            _tell(progress, moved)
            details = {"from": str(location.legacy), "to": location.display}
            state.record_audit(spec.fleet.fleet, "state-take-over", "state", "ok", details)
        yield state
    finally:
        state.close()


def _waiting(ctx: Context, wait: float) -> Callable[[str], None]:
    """What a command that waits for the deploy lock says, once: who holds it."""
    return lambda holder: ctx.progress.step("lock", f"waiting up to {wait:g}s: the {holder}")


def _tell(progress: Progress | None, message: str) -> None:
    if progress is None:
        print(f"corral: {message}", file=sys.stderr)
    else:
        progress.step("state", message)


def build(
    path: Path,
    roles: Sequence[str] = (),
    force: bool = False,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> list[BuildResult]:
    """Bake the images of ``roles`` (default: all) of the spec at ``path``."""
    spec = load_spec(path)
    engine = engine or get_engine()
    with open_state(spec, progress) as state, state.lock("build", wait=600, purpose="build"):
        return build_fleet(spec, engine, state, roles, progress, force)


def images(path: Path, role: str | None = None) -> list[ImageRecord]:
    """Every image built for the fleet (or one role), oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.images(spec.fleet.fleet, role)


def sbom(path: Path, role: str, version: str | None = None) -> Sbom:
    """The Debian packages (name, version) in a role's latest (or given) image.

    Raises:
        UsageError: the role has no image yet, or no image with that version.
    """
    records = images(path, role)
    if version is not None:
        records = [r for r in records if r.version == version]
    if not records:
        what = f"version {version} of role {role}" if version else f"role {role}"
        raise UsageError(f"no image of {what} has been built; run: corral build {role}")
    record = records[-1]
    listed = record.labels.get(LABEL + "packages", "")
    packages = tuple(tuple(p.split("=", 1)) for p in listed.split(",") if "=" in p)
    return Sbom(
        record.fleet,
        role,
        record.version,
        record.image_id,
        tuple((name, ver) for name, ver in packages),
    )


def images_report(
    path: Path, role: str | None = None, engine: Engine | None = None
) -> ImagesReport:
    """Every image of the fleet (or one role) with its base and revocation, and every
    running instance with its image's base: ``up to date`` or ``outdated`` against the
    newest base of its line, and how old it is. Changes nothing.

    Raises:
        UsageError: ``role`` is not in the spec.
    """
    spec = load_spec(path)
    _known_role(spec, role)
    with open_state(spec) as state:
        return ancestry.images_report(state, engine or get_engine(), spec.fleet.fleet, role)


def _known_role(spec: LoadedSpec, role: str | None) -> None:
    if role is not None and role not in spec.fleet.roles:
        raise UsageError(
            f"no role called {role} in the spec (roles: {', '.join(spec.fleet.roles)})"
        )


@dataclass(frozen=True)
class Revocation:
    """What ``corral revoke`` did: the record written (or the one that stood already),
    and the images it makes unfit."""

    kind: str  # image | base
    image_id: str
    name: str
    record: RevocationRecord
    changed: bool  # False: it was revoked (or not revoked, for an undo) already
    images: tuple[ImageRecord, ...]  # for a base: the images built on it
    releases: tuple[int, ...] = ()  # the releases that ran it (or an image built on it)

    def to_dict(self) -> dict[str, object]:
        """``corral revoke --json`` (docs/cli.md)."""
        return {
            "kind": self.kind,
            "id": self.image_id,
            "name": self.name,
            "changed": self.changed,
            "revocation": self.record.to_dict(),
            "images": [{"role": i.role, "version": i.version, "tag": i.tag} for i in self.images],
            "releases": list(self.releases),
        }


def revoke(path: Path, target: str, reason: str, undo: bool = False) -> Revocation:
    """Mark an image or a base unfit (``undo``: fit again), audited with who and why.

    Deploys and rollbacks refuse to start a revoked image, or one built on a revoked
    base, from then on; a deploy bakes a revoked image's role anew.

    Raises:
        UsageError: ``target`` names no image or base of the fleet, or more than one;
            an undo of something that is not revoked.
    """
    spec = load_spec(path)
    fleet = spec.fleet.fleet
    with open_state(spec) as state:
        found = lineage.find_revocable(state, fleet, target)
        standing = state.stores.revocations.standing(fleet)
        current = (standing.images if found.kind == "image" else standing.bases).get(found.image_id)
        if undo and current is None:
            raise UsageError(f"{found.kind} {found.name} is not revoked: nothing to undo")
        images = tuple(state.stores.ancestry.descendants(fleet, [found.image_id]))
        ran = {found.image_id, *(i.image_id for i in images)}
        releases = tuple(lineage.releases_running(state, fleet, ran))
        if not undo and current is not None:
            return Revocation(*found.key, current, False, images, releases)
        action = "undo" if undo else "revoke"
        record = state.stores.revocations.add(fleet, found.kind, found.image_id, action, reason)
        details = {"kind": found.kind, "id": found.image_id, "name": found.name, "reason": reason}
        state.record_audit(fleet, "revoke-undo" if undo else "revoke", found.name, "ok", details)
        return Revocation(*found.key, record, True, images, releases)


def sbom_package(path: Path, package: str, engine: Engine | None = None) -> PackageReport:
    """The images of the fleet that hold Debian package ``package`` (with its version in
    each) and the running instances of those images."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return ancestry.package_report(state, engine or get_engine(), spec.fleet.fleet, package)


def sbom_cyclonedx(path: Path, role: str | None = None, image: str | None = None) -> str:
    """A CycloneDX (JSON, 1.6) SBOM: of one image (``image``: its tag, version or id; or
    ``role``'s latest), or with neither, of every image the fleet's active release runs.

    Raises:
        UsageError: no such image or role, or nothing built or released yet.
    """
    spec = load_spec(path)
    fleet = spec.fleet.fleet
    _known_role(spec, role)
    from corral.build import sbom as boms  # CycloneDX: only this command loads it

    with open_state(spec) as state:
        if image is not None or role is not None:
            record = _one_image(state, fleet, role, image)
            return boms.image_bom(_contents(state, record))
        return boms.fleet_bom(fleet, [_contents(state, r) for r in _released(state, fleet)])


def _one_image(state: State, fleet: str, role: str | None, image: str | None) -> ImageRecord:
    records = state.images(fleet, role)
    if image is not None:
        found = lineage.find_revocable(state, fleet, image)
        records = [r for r in records if r.image_id == found.image_id]
    if not records:
        what = f"image {image}" if image else f"role {role}"
        raise UsageError(f"no {what} has been built in fleet {fleet}; run: corral build")
    return records[-1]


def _released(state: State, fleet: str) -> list[ImageRecord]:
    active = state.active_release(fleet)
    if active is None:
        raise UsageError(f"fleet {fleet} has no active release: name an image (--image) or a role")
    ids = {rr.image_id for rr in desired_from_record(active.roles).values()}
    return [r for r in state.images(fleet) if r.image_id in ids]


def _contents(state: State, record: ImageRecord) -> ImageContents:
    from corral.build.sbom import ImageContents

    base = state.stores.ancestry.base(record.fleet, record.base_id) if record.base_id else None
    packages = state.stores.ancestry.packages(record.fleet, record.role, record.number)
    if not packages:  # an image baked before corral kept package lists: its label has them
        packages = parse_packages(record.labels.get(LABEL + "packages", "").split(","))
    return ImageContents(record, base, packages)


def audit(path: Path, limit: int = 100) -> list[AuditEntry]:
    """The newest ``limit`` audit entries of the fleet, oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.audit_log(spec.fleet.fleet, limit=limit)


# -- deploy -------------------------------------------------------------------------------


@contextmanager
def _audited(ctx: Context, action: str, target: str = "fleet") -> Iterator[None]:
    """Audit ``action`` as refused or failed when it raises a CorralError; releases that
    failed are audited where they are recorded (``service``), not twice."""
    try:
        yield
    except ReleaseFailed:
        raise
    except CorralError as exc:
        refused = isinstance(exc, GateError | UsageError | LockedError)  # nothing changed
        outcome = "refused" if refused else "failed"
        details = {"error": exc.message, "error_kind": exc.kind}
        with suppress(StateError):  # a state that cannot be written: its error says so
            ctx.state.record_audit(ctx.scope.fleet, action, target, outcome, details)
        raise


@contextmanager
def _deploying(path: Path, progress: Progress | None, engine: Engine | None) -> Iterator[Context]:
    spec = load_spec(path)
    with open_state(spec, progress) as state:
        yield Context(spec, engine or get_engine(), state, progress or NullProgress())


def plan(path: Path, roles: Sequence[str] = (), engine: Engine | None = None) -> PlanResult:
    """What ``deploy`` would change; builds nothing and changes nothing.

    Raises:
        OwnershipError: the fleet belongs to another state (a deploy would be refused).
    """
    with _deploying(path, None, engine) as ctx:
        seen = look(ctx)  # one listing serves the ownership check and the plan
        ownership.check(ctx, live=seen.containers)
        return service.plan(ctx, roles, seen)


def _checks(
    ctx: Context, skip_tests: str | None, roles: Sequence[str] | None, smoke_test: bool = True
) -> orchestrate.Checks:
    """The test gate before a deploy and the smoke test after it.

    ``roles`` are the roles a deploy builds from the spec (empty: all of them); the others
    come from a release record (None: a rollback, where all do) and are gated as recorded.
    """
    smoke = smoke_test and not skip_tests

    def recorded(desired: Desired) -> set[str]:
        if roles is None:
            return set(desired)
        return set(desired) - set(roles) if roles else set()

    return orchestrate.Checks(
        before=lambda desired: suite.gate(ctx, desired, skip_tests, smoke, recorded(desired)),
        after=(lambda desired: suite.smoke(ctx, desired)) if smoke else orchestrate.no_check,
    )


def deploy(
    path: Path,
    roles: Sequence[str] = (),
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
    skip_tests: str | None = None,
    hooks: Sequence[Hook] = (),
    approve: Approve = refuse,
) -> DeployResult:
    """Build what changed, check the test gate, then replace instances until the fleet runs
    the spec, and smoke-test the live edge.

    Args:
        skip_tests: deploy untested images anyway; the reason goes to the audit log.
        hooks: called with the plan after the gate, before anything changes (see
            ``orchestrate.Planned``); one that raises refuses the deploy.
        approve: asked whether the plan's data concerns (a role with data shrunk to 0 or
            removed, a volume going to another role) may go ahead; refuses by default.

    Raises:
        LockedError: another deploy holds the lock (after ``wait`` seconds).
        GateError: an image has no passing test record; nothing was changed.
        DeployError: a role failed; the fleet was taken back to the previous release.
    """
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "deploy"),
        ctx.state.lock(
            "deploy",
            wait,
            purpose=f"deploy {' '.join(roles) or 'all'}",
            waiting=_waiting(ctx, wait),
        ),
    ):
        ownership.check(ctx, claim=True)
        suite.sweep_dead_tests(ctx)
        checks = _checks(ctx, skip_tests, roles)
        runner = backups.pre_deploy_runner(ctx)
        return orchestrate.deploy(
            ctx, roles, checks=checks, hooks=hooks, backup=runner, approve=approve
        )


def rollback(
    path: Path,
    to: int | None = None,
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
    skip_tests: str | None = None,
    hooks: Sequence[Hook] = (),
    approve: Approve = refuse,
) -> DeployResult:
    """Deploy an earlier release again (default: the one before the active one).

    The gate still applies (an earlier release's images passed their tests when they went
    live); the smoke test does not, since today's tests may test what came later.
    """
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "rollback"),
        ctx.state.lock(
            "deploy", wait, purpose=f"rollback to {to or 'previous'}", waiting=_waiting(ctx, wait)
        ),
    ):
        ownership.check(ctx, claim=True)
        checks = _checks(ctx, skip_tests, None, smoke_test=False)
        runner = backups.pre_deploy_runner(ctx)
        return orchestrate.rollback(
            ctx, to, checks=checks, hooks=hooks, backup=runner, approve=approve
        )


def patch(
    path: Path,
    roles: Sequence[str] = (),
    options: lane.Options | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
) -> lane.PatchReport:
    """The emergency lane: refresh the Debian bases, rebuild the roles on them, test them,
    deploy them through a watched canary, and report the time to fix (see ``corral.patch``).

    ``dry_run`` says what would be refreshed, rebuilt and replaced; it takes no lock and
    changes nothing.

    Raises:
        LockedError: another deploy holds the lock (after ``wait`` seconds).
        GateError: a rebuilt image failed its tests; nothing was deployed.
        ReleaseFailed: the canary (or the rollout) failed; the fleet is back on the old
            release and the message says why.
    """
    if dry_run:
        with _deploying(path, progress, engine) as ctx:
            return lane.dry_run(ctx, roles)
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "patch"),
        ctx.state.lock("deploy", wait=wait, purpose=f"patch {' '.join(roles) or 'all'}"),
    ):
        suite.sweep_dead_tests(ctx)
        report = lane.patch(ctx, roles, options or lane.Options())
        ctx.state.record_audit(ctx.scope.fleet, "patch", "fleet", "ok", report.to_dict())
        return report


def status(path: Path, engine: Engine | None = None, drift: bool = False) -> FleetStatus:
    """The fleet as it runs, and what killed deploys left; changes nothing (see ``gc``)."""
    with _deploying(path, None, engine) as ctx:
        return fleet_status.status(ctx, drift)


def gc(path: Path, wait: float = 0, engine: Engine | None = None) -> Collected:
    """Remove what killed deploys and test runs left, under the deploy lock: mark their
    releases aborted, remove their stopped instances, probe containers, orphan stored
    secrets and dead test environments. Never a volume, never a backup.

    Raises:
        LockedError: a deploy holds the lock (after ``wait`` seconds).
    """
    with (
        _deploying(path, None, engine) as ctx,
        _audited(ctx, "gc"),
        ctx.state.lock("deploy", wait=wait, purpose="gc"),
    ):
        ownership.check(ctx)
        tests = suite.sweep_dead_tests(ctx, orphans=True)
        return fleet_gc.collect(ctx, tests)


def run_tests(
    path: Path,
    roles: Sequence[str] = (),
    again: bool = False,
    progress: Progress | None = None,
    timeouts: suite.Timeouts | None = None,
) -> list[suite.RoleTestResult]:
    """Test the images that would be deployed, in a throwaway environment, and record it.

    Under the fleet's ``test`` lock: a second run of the same images (another clone, a
    second CI job) waits, then finds them passed and does not test them again.
    """
    what = ",".join(roles) or "all"
    with (
        _deploying(path, progress, None) as ctx,
        _audited(ctx, "test", what),
        ctx.state.lock("test", TEST_LOCK_WAIT_S, f"test {what}", _waiting(ctx, TEST_LOCK_WAIT_S)),
    ):
        return suite.run_tests(ctx, roles, again, timeouts or suite.Timeouts())


def coverage_report(path: Path, engine: Engine | None = None) -> list[suite.CoverageRow]:
    """Roles x checks: the last test result of each role's current image, and its age."""
    with _deploying(path, None, engine) as ctx:
        return suite.coverage(ctx)


def history(
    path: Path, limit: int = 50, release: int | None = None, engine: Engine | None = None
) -> list[HistoryEntry]:
    """The newest ``limit`` releases, oldest first, or only ``release`` with its reason;
    changes nothing.

    Raises:
        UsageError: there is no release ``release``.
    """
    with _deploying(path, None, engine) as ctx:
        return fleet_status.history(ctx, limit, release)


def destroy(
    path: Path, engine: Engine | None = None, deletion: Deletion | None = None
) -> list[str]:
    """Remove the fleet's instances, edge and network, and what dead test runs left;
    never a live volume, except those ``deletion`` names, confirms and has a recent
    verified backup of (see ``deploy/volumes.py``), deleted last.

    Raises:
        OwnershipError: the fleet's objects belong to another state; nothing was removed.
        DataGuardError: a volume named may not be deleted; nothing was removed.
    """
    with _deploying(path, None, engine) as ctx, _audited(ctx, "destroy"):
        ownership.check(ctx)
        if deletion and deletion.names:  # refuse before the sweep removes anything
            check_deletion(ctx, deletion)
        suite.sweep_dead_tests(ctx, orphans=True)
        return fleet_status.destroy(ctx, deletion)


def refuse_unknown_volumes(path: Path, deletion: Deletion, engine: Engine | None = None) -> None:
    """Refuse (audited) a deletion naming what is no volume of the fleet; changes nothing.

    Raises:
        DataGuardError: a name is not a volume of the fleet.
    """
    with _deploying(path, None, engine) as ctx:
        fleet_volumes.refuse_unknown(ctx, deletion)


def volumes(path: Path, engine: Engine | None = None) -> VolumeList:
    """The fleet's data volumes with size, users, last backup and verified restore, and
    what is wrong with them (``problems()``); changes nothing."""
    with _deploying(path, None, engine) as ctx:
        return fleet_volumes.list_volumes(ctx)


def replace_edge(
    path: Path, progress: Progress | None = None, wait: float = 0
) -> service.EdgeReplaced:
    with (
        _deploying(path, progress, None) as ctx,
        _audited(ctx, "edge-replace", "edge"),
        ctx.state.lock("deploy", wait, purpose="replace the edge", waiting=_waiting(ctx, wait)),
    ):
        ownership.check(ctx)
        return service.replace_edge(ctx)


def reconcile(
    path: Path, progress: Progress | None = None, engine: Engine | None = None
) -> Reconciled:
    """One pass of ``corral watch``: replace what died, drifted or was burned, remove
    orphans, towards the active release; skipped when a deploy holds the lock. Each
    current instance is inspected for drift from its release."""
    with _deploying(path, progress, engine) as ctx:
        ownership.check(ctx)
        return fleet_reconcile.reconcile(ctx, drift=True)


def watch(
    path: Path,
    interval: float = 2.0,
    passes: int | None = None,
    diff_interval: float = 30.0,
    progress: Progress | None = None,
    on_pass: Callable[[Reconciled], None] = lambda r: None,
    on_failure: Callable[[Exception, float], None] = lambda e, s: None,
    engine: Engine | None = None,
    metrics: tuple[str, int] | None = None,
    on_alert: Callable[[Alert], None] = lambda a: None,
    webhook: str | None = None,
) -> None:
    """Reconcile every ``interval`` seconds (``passes`` times; None: until interrupted),
    backing off exponentially while passes fail; a role whose replacements keep failing
    is held and degraded, told to ``on_alert`` and POSTed to ``webhook`` if given; with
    ``metrics`` (address, port), serve ``/metrics`` in Prometheus' text format meanwhile
    (see ``deploy.metrics``)."""
    with _deploying(path, progress, engine) as ctx, _metrics(ctx, metrics, engine) as seen:
        ownership.check(ctx)
        alerts = on_alert
        if webhook is not None:
            told = functools.partial(ctx.progress.step, "watch")
            post = supervise.webhook(webhook, scrubber(ctx.spec).text, told)

            def alerts(alert: Alert) -> None:
                on_alert(alert)
                post(alert)

        def passed(result: Reconciled) -> None:
            seen.passed(result)
            on_pass(result)

        def failed(error: Exception, delay: float) -> None:
            seen.failed(error, delay)
            on_failure(error, delay)

        watcher = fleet_reconcile.Watcher(
            ctx,
            interval,
            diff_interval=diff_interval,
            on_pass=passed,
            on_failure=failed,
            on_alert=alerts,
        )
        watcher.run(passes)


@contextmanager
def _metrics(
    ctx: Context, where: tuple[str, int] | None, engine: Engine | None
) -> Iterator[WatchMetrics]:
    """The watcher's metrics, served at ``where`` while the block runs (if given). A
    scrape lists the fleet through an engine of its own: it runs on the server's thread."""
    scraping = engine or (get_engine() if where is not None else ctx.engine)
    seen = WatchMetrics(lambda: list_scope(scraping, ctx.scope))
    if where is not None:
        seen.serve(*where)
    try:
        yield seen
    finally:
        seen.close()


def break_glass(
    path: Path,
    instance: str,
    reason: str,
    time_limit: float = 900.0,
    command: Sequence[str] = breakglass.SHELL,
    tty: bool = True,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> breakglass.BreakGlass:
    """Open an audited session in a live instance, then replace it (see
    ``deploy.breakglass``).

    Raises:
        UsageError: not a running live instance, or no reason.
        EngineError: the session could not be opened.
    """
    with _deploying(path, progress, engine) as ctx:
        return breakglass.break_glass(ctx, instance, reason, time_limit, command, tty)


def chaos(
    path: Path,
    roles: Sequence[str] = (),
    interval: float = 5.0,
    duration: float = 60.0,
    seed: int = 0,
    drain_first: bool = False,
    on_tick: Callable[[int, tuple[str, str] | None], None] = lambda t, k: None,
    engine: Engine | None = None,
) -> fleet_chaos.Chaos:
    """Kill random instances of ``roles`` every ``interval`` seconds for ``duration``
    seconds, never below ``replicas - max_unavailable`` healthy (see ``deploy.chaos``).

    Raises:
        UsageError: no release is active, or a role is not in it.
    """
    with _deploying(path, None, engine) as ctx:
        return fleet_chaos.run_chaos(
            ctx, roles, interval, duration, seed, drain_first=drain_first, on_tick=on_tick
        )


# -- the state itself: export, import, recover ------------------------------------------


def state_export(path: Path) -> dict[str, Any]:
    """The fleet's state as one versioned JSON document (see corral.state.transfer)."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.export()


@dataclass(frozen=True)
class Imported:
    state: str  # the target, as messages name it
    rows: dict[str, int]  # per table
    replaced: str | None  # where the target's earlier file went, with ``replace``


def state_import(path: Path, document: Any, source: str, replace: bool = False) -> Imported:
    """Load an export into the fleet's state, which must be empty; with ``replace``, a
    SQLite state that is not is moved aside first (a PostgreSQL one never is: its audit
    trail is append-only; import into a new database instead).

    Raises:
        StateError: the document is not an importable export, or the target holds rows.
        UsageError: ``replace`` with a PostgreSQL state.
    """
    spec = load_spec(path)
    location = spec.state_location
    replaced = None
    if replace:
        if location.is_url:
            raise UsageError(
                f"--replace moves a SQLite state aside; the state {location.display} is a "
                f"database server's: create a new database, point corral at it, import there"
            )
        if location.path.exists():
            replaced = str(transfer.replace_sqlite(location.path))
    with open_state(spec) as state:
        rows = state.load(document, source)
        details = {"from": source, "rows": rows, "replaced": replaced}
        state.record_audit(spec.fleet.fleet, "state-import", "state", "ok", details)
        return Imported(location.display, rows, replaced)


def state_recover(path: Path, engine: Engine | None = None) -> fleet_recover.Recovered:
    """Rebuild a lost state from the engine's labels (see corral.deploy.recover), under
    the deploy lock; audited ``state-recover``."""
    with (
        _deploying(path, None, engine) as ctx,
        _audited(ctx, "state-recover", "state"),
        ctx.state.lock("deploy", purpose="recover the state"),
    ):
        return fleet_recover.recover(ctx)


# -- backups ------------------------------------------------------------------------------


def backup(
    path: Path,
    names: Sequence[str] = (),
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
) -> list[backups.BackupRecord]:
    """A restic snapshot of each backed-up volume ``names`` say (default: all), through
    the append-only repository server, under the deploy lock (writers are paused).

    Raises:
        UsageError: a name is unknown, or the repository's password is not set.
        BackupError: a backup failed.
        LockedError: a deploy holds the lock (after ``wait`` seconds).
    """
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "backup", ",".join(names) or "all"),
        ctx.state.lock("deploy", wait=wait, purpose="backup"),
    ):
        return backups.backup(ctx, names)


def backup_verify(
    path: Path,
    names: Sequence[str] = (),
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
) -> list[backups.Verified]:
    """Restore drills: the newest backup of each volume restored into a scratch volume
    and proved; each result recorded on its backup and in the audit trail."""
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "backup-verify", ",".join(names) or "all"),
        ctx.state.lock("deploy", wait=wait, purpose="backup verify"),
    ):
        return backups.verify(ctx, names)


def backup_prune(path: Path, wait: float = 0) -> list[backups.Pruned]:
    """Each volume's retention applied, with the prune credential (never the deploy's)."""
    with (
        _deploying(path, None, None) as ctx,
        _audited(ctx, "backup-prune"),
        ctx.state.lock("deploy", wait=wait, purpose="backup prune"),
    ):
        return backups.prune(ctx)


def backups_of(path: Path) -> list[backups.BackupRecord]:
    """Every backup recorded of the fleet, oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.stores.backups.of_fleet(spec.fleet.fleet)


@dataclass(frozen=True)
class Restored:
    """A restore: the snapshot, the new volume the role now runs on, the one retained,
    and the deploy that switched it."""

    role: str
    volume: str
    snapshot: str
    new_volume: str
    retained_volume: str
    deploy: DeployResult


def restore(
    path: Path,
    name: str,
    snapshot: str | None = None,
    progress: Progress | None = None,
    wait: float = 0,
    engine: Engine | None = None,
    skip_tests: str | None = None,
) -> Restored:
    """Restore a snapshot into a NEW volume, then switch the role to it by a normal deploy
    (health, smoke test); the old volume stays, retained. A failed deploy goes back to the
    old volume; ``corral rollback`` afterwards does too.

    Raises:
        UsageError: the volume or snapshot is unknown.
        BackupError: the restore failed (nothing of the fleet changed).
        DeployError: the switch failed; the role is back on its old volume.
    """
    with (
        _deploying(path, progress, engine) as ctx,
        _audited(ctx, "restore", name),
        ctx.state.lock("deploy", wait=wait, purpose=f"restore {name}"),
    ):
        ready = backups.prepare_restore(ctx, name, snapshot)
        role = ready.target.role
        details = {"snapshot": ready.snapshot, "new": ready.volume, "retained": ready.retained}
        ctx.state.record_audit(ctx.scope.fleet, "restore", ready.target.label, "ok", details)
        checks = _checks(ctx, skip_tests, [role])
        runner = backups.pre_deploy_runner(ctx)
        result = orchestrate.deploy(
            ctx, [role], checks=checks, backup=runner, rebind=ready.rebind()
        )
        return Restored(
            role, ready.target.volume, ready.snapshot, ready.volume, ready.retained, result
        )
