"""The backup commands, over a deploy's :class:`Context`: backup, the pre-deploy backup
step, restore into a new volume, restore drills (verify) and pruning.

The caller holds the deploy lock: a backup pauses instances and a restore or a drill
starts throwaway ones, which a deploy running meanwhile would take for leftovers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from corral.backup.restic import PRUNE_PASSWORD_FILE, PRUNE_REPOSITORY, Password, Restic
from corral.backup.restore import Filled, fill_volume, new_volume, pick_snapshot
from corral.backup.run import back_up
from corral.backup.targets import Target, open_repository, select_targets, volume_tags
from corral.deploy.apply import BackupRunner
from corral.deploy.context import Context
from corral.deploy.steps import Step
from corral.errors import BackupError, CorralError, UsageError
from corral.state import State
from corral.state.backups import BackupRecord as BackupRecord


def backup(ctx: Context, names: Sequence[str] = (), reason: str = "manual") -> list[BackupRecord]:
    """A snapshot of each backed-up volume ``names`` say (default: all), recorded.

    Raises:
        UsageError: a name is unknown, or the password is not set.
        BackupError: a backup failed (the ones before it are kept and recorded).
    """
    targets = select_targets(ctx, names)
    if not targets:
        raise UsageError("no volume of a deployed role has a backup section: nothing to back up")
    with open_repository(ctx) as restic:
        restic.ensure_initialised()
        return [back_up(ctx, restic, t, reason) for t in targets]


def pre_deploy_runner(ctx: Context) -> BackupRunner:
    """What carries out a plan's ``backup`` steps: one snapshot per step, before any
    change; its failure (a BackupError) stops the deploy."""

    def run(step: Step) -> None:
        targets = select_targets(ctx, [f"{step.role}/{step.instance}"])
        with open_repository(ctx) as restic:
            restic.ensure_initialised()
            back_up(ctx, restic, targets[0], "before deploy")

    return run


@dataclass(frozen=True)
class Prepared:
    """A restore made ready: the snapshot is in a new volume the role is not using yet."""

    target: Target
    snapshot: str
    volume: str  # the new engine volume
    suffix: str  # its name in the role (``RoleRelease.volume_names``)
    retained: str  # the engine volume the role used until now: kept, never removed

    def rebind(self) -> dict[str, dict[str, str]]:
        """The deploy's switch of the role's volume to the new one."""
        return {self.target.role: {self.target.volume: self.suffix}}


def prepare_restore(ctx: Context, name: str, snapshot: str | None) -> Prepared:
    """Restore ``snapshot`` (default: the newest) of volume ``name`` into a new volume.

    Raises:
        UsageError: ``name`` is not one backed-up volume, or there is no such snapshot.
        BackupError: the restore failed; the new volume is left, unused, to look at.
    """
    targets = select_targets(ctx, [name])
    if len(targets) != 1:
        labels = ", ".join(t.label for t in targets)
        raise UsageError(
            f"{name!r} names {len(targets)} volumes ({labels}): name one as role/volume"
        )
    target = targets[0]
    with open_repository(ctx) as restic:
        chosen = pick_snapshot(restic, target, ctx.scope.fleet, snapshot)
        suffix, volume = new_volume(ctx, target, "restored")
        ctx.progress.step(target.role, f"restoring snapshot {chosen.id[:8]} into {volume}")
        fill_volume(ctx, restic, target, chosen, volume)
    return Prepared(target, chosen.id, volume, suffix, target.engine_volume)


@dataclass(frozen=True)
class Verified:
    """One restore drill: which backup, and whether its restore proved good."""

    role: str
    volume: str
    snapshot: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "volume": self.volume,
            "snapshot": self.snapshot,
            "result": "ok" if self.ok else "failed",
            "detail": self.detail,
        }


def verify(ctx: Context, names: Sequence[str] = ()) -> list[Verified]:
    """Restore the newest recorded backup of each volume (of the engine volume its role
    mounts now: after a restore, the restored copy) into a scratch volume and prove
    it (files: the restored tree's checksum is the one taken at backup time; dumps: the
    restore command and the role's check pass on a throwaway instance); ``restic check``
    first. Each result is recorded on its backup.

    Raises:
        UsageError: a name is unknown, or a volume has no backup recorded.
    """
    targets = select_targets(ctx, names)
    latest = ctx.state.stores.backups.latest(ctx.scope.fleet)
    missing = [f"{t.label} ({t.engine_volume})" for t in targets if t.engine_volume not in latest]
    if missing:
        raise UsageError(f"no backup is recorded of {', '.join(missing)}: run corral backup")
    with open_repository(ctx) as restic:
        problem = restic.check()
        results = [_drill(ctx, restic, t, latest[t.engine_volume], problem) for t in targets]
    return results


def _drill(
    ctx: Context, restic: Restic, target: Target, record: BackupRecord, problem: str | None
) -> Verified:
    ok, detail = problem is None, problem or ""
    if ok:
        ok, detail = _restore_drill(ctx, restic, target, record)
    result = "ok" if ok else "failed"
    ctx.state.stores.backups.verified(record.id, result, detail)
    details = {"volume": target.label, "snapshot": record.snapshot_id, "detail": detail}
    ctx.state.record_audit(ctx.scope.fleet, "backup-verify", target.label, result, details)
    return Verified(target.role, target.volume, record.snapshot_id, ok, detail)


def _restore_drill(
    ctx: Context, restic: Restic, target: Target, record: BackupRecord
) -> tuple[bool, str]:
    snapshots = {s.id: s for s in restic.snapshots(volume_tags(target, ctx.scope.fleet))}
    snapshot = snapshots.get(record.snapshot_id) or next(
        (s for i, s in snapshots.items() if i.startswith(record.snapshot_id)), None
    )
    if snapshot is None:
        return False, f"snapshot {record.snapshot_id} is not in the repository"
    ctx.progress.step(target.role, f"restore drill of {target.label} ({snapshot.id[:8]})")
    _, scratch = new_volume(ctx, target, "verify")
    try:
        filled: Filled = fill_volume(ctx, restic, target, snapshot, scratch)
    except CorralError as exc:
        return False, exc.message
    finally:
        ctx.engine.remove_volume(scratch)  # corral's own scratch volume, never a fleet's
    if target.how.mode == "files" and filled.tree_sha256 != record.tree_sha256:
        return False, "the restored tree differs from the one backed up (checksums differ)"
    what = "tree identical" if target.how.mode == "files" else "dump restored and checked"
    return True, f"restic check passed; {what}"


@dataclass(frozen=True)
class Pruned:
    volume: str
    kept: int
    removed: int


def prune(ctx: Context, environ: Mapping[str, str] | None = None) -> list[Pruned]:
    """Apply each volume's retention (``backup.keep``) with ``restic forget --prune``,
    directly on the repository named by the prune credential, never through the
    append-only server (which refuses deletions).

    Raises:
        UsageError: the prune credential (CORRAL_BACKUP_PRUNE_REPOSITORY and a password)
            is not in corral's environment.
        BackupError: restic failed.
    """
    env = os.environ if environ is None else environ
    where = env.get(PRUNE_REPOSITORY)
    if not where:
        raise UsageError(
            f"pruning needs the prune credential: set {PRUNE_REPOSITORY} to the repository's "
            f"writable location and {PRUNE_PASSWORD_FILE} (the deploy path never holds them)"
        )
    password = Password.from_environ(env, files=(PRUNE_PASSWORD_FILE,), value=None)
    scrubber = ctx.state.scrubber.including([password.value])
    restic = Restic(where, password, scrubber)
    done = []
    for target in select_targets(ctx):
        done.append(_forget(restic, target, ctx.scope.fleet, ctx.state))
        details = {"volume": target.label, "removed": done[-1].removed}
        ctx.state.record_audit(ctx.scope.fleet, "backup-prune", target.label, "ok", details)
    restic.run("prune")
    return done


def _forget(restic: Restic, target: Target, fleet: str, state: State) -> Pruned:
    """``restic forget`` by the volume's policy; the state's rows of the snapshots it
    removed are marked pruned."""
    keep = target.how.keep
    policy = [
        f"--keep-{name}={count}"
        for name, count in (
            ("last", keep.last),
            ("daily", keep.daily),
            ("weekly", keep.weekly),
            ("monthly", keep.monthly),
        )
        if count
    ]
    if not policy:
        raise BackupError(f"{target.label} keeps nothing: refusing to forget every snapshot")
    before = {s.id for s in restic.snapshots(volume_tags(target, fleet))}
    tags = ",".join(volume_tags(target, fleet))
    restic.run("forget", "--tag", tags, "--group-by", "", *policy)
    kept = {s.id for s in restic.snapshots(volume_tags(target, fleet))}
    # Only what this forget removed: a row of another repository's snapshot, or of one
    # taken meanwhile, is not this prune's to mark.
    state.stores.backups.pruned(fleet, target.role, target.volume, before - kept)
    return Pruned(target.label, len(kept), len(before - kept))
