"""The fleet's data volumes as objects: ``corral volumes`` and the deletion guard.

A volume outlives instances, releases, rollbacks and the spec: the state records it
(``volumes`` table) when a deploy creates it. Nothing deletes one but
``corral destroy --delete-data NAME``, and only when the operator named it twice (the
argument and a typed confirmation, or ``--confirm NAME``) and it has a recent verified
backup (``--no-backup-check`` with a reason skips that check, audited). Every attempt,
allowed or refused, is audited.

Backups are not recorded here: a volume's last backup and last verified restore are the
backups store's rows for its engine name (``corral backup`` writes them, ``corral backup
verify`` proves them), read through :func:`volume_backups`. "Recent" is
:meth:`BackupRecord.recent`, the rule the pre-deploy backup uses too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from corral.deploy.context import Context
from corral.deploy.observe import list_scope
from corral.errors import DataGuardError, EngineError
from corral.state import VolumeRecord
from corral.state.backups import BackupRecord

MISSING = "missing"  # recorded, but the engine has no such volume: deleted behind corral
UNRECORDED = "unrecorded"  # in the engine, not yet in the state (an older corral made it)
RETAINED = "retained"
IN_USE = "in use"
UNUSED = "unused"


@dataclass(frozen=True)
class VolumeBackups:
    """One engine volume's backups as the backups store has them."""

    last: BackupRecord | None = None  # its newest snapshot
    verified: BackupRecord | None = None  # its newest snapshot whose restore drill passed


def volume_backups(records: Iterable[BackupRecord]) -> dict[str, VolumeBackups]:
    """Per engine volume, its newest backup and newest verified one whose snapshots were
    not pruned (``records`` oldest first, as :meth:`BackupStore.of_fleet` gives them)."""
    found: dict[str, VolumeBackups] = {}
    for r in records:
        if r.pruned_at is not None:
            continue
        seen = found.get(r.engine_volume, VolumeBackups())
        found[r.engine_volume] = VolumeBackups(r, r if r.proven else seen.verified)
    return found


@dataclass(frozen=True)
class VolumeRow:
    """One volume as ``corral volumes`` shows it."""

    name: str  # the engine's name
    role: str
    volume: str
    path: str
    status: str  # in use | unused | retained | missing | unrecorded
    size_bytes: int | None
    used_by: tuple[str, ...]  # containers mounting it ("name (state)" when not running)
    created_at: str | None
    retained_reason: str | None
    last_backup_at: str | None  # when its newest snapshot was taken
    last_backup_snapshot: str | None
    backup_age_s: int | None
    verified_backup_at: str | None  # when its newest verified snapshot was taken
    last_verified_snapshot: str | None
    last_verified_at: str | None  # when that snapshot's restore drill passed
    verified_age_s: int | None  # that snapshot's age: what backup.max_age is compared with
    problems: tuple[str, ...]


@dataclass(frozen=True)
class VolumeList:
    fleet: str
    max_age_s: float
    volumes: tuple[VolumeRow, ...]

    def problems(self) -> tuple[str, ...]:
        """What ``corral volumes`` warns about (and exits 1 for): a volume without a
        recent verified backup (``backup.max_age``), or recorded but missing."""
        return tuple(p for row in self.volumes for p in row.problems)


def list_volumes(ctx: Context) -> VolumeList:
    """The fleet's live volumes: the state's records and the engine's volumes, with their
    size, users and backups; changes nothing."""
    fleet, max_age = ctx.scope.fleet, ctx.spec.fleet.backup.max_age
    records = {r.name: r for r in ctx.state.volumes(fleet)}
    backups = volume_backups(ctx.state.stores.backups.of_fleet(fleet))
    sizes = ctx.engine.volume_sizes(ctx.scope.labels("volume"))
    users: dict[str, list[str]] = {}
    for c in list_scope(ctx.engine, ctx.scope):
        for name in c.volumes:
            users.setdefault(name, []).append(
                c.name if c.state == "running" else f"{c.name} ({c.state})"
            )
    now = datetime.now(UTC)
    rows = []
    for name in sorted(set(records) | set(sizes)):
        used = tuple(sorted(users.get(name, ())))
        seen = _Seen(records.get(name), backups.get(name, VolumeBackups()), name in sizes)
        rows.append(_row(name, seen, sizes.get(name), used, now, max_age))
    return VolumeList(fleet, max_age, tuple(rows))


@dataclass(frozen=True)
class _Seen:
    record: VolumeRecord | None
    backups: VolumeBackups
    present: bool

    @property
    def status(self) -> str:
        if self.record is None:
            return UNRECORDED
        if not self.present:
            return MISSING
        return RETAINED if self.record.retained else ""


def _row(
    name: str,
    seen: _Seen,
    size: int | None,
    used: tuple[str, ...],
    now: datetime,
    max_age: float,
) -> VolumeRow:
    record, last, verified = seen.record, seen.backups.last, seen.backups.verified
    status = seen.status or (IN_USE if any("(" not in u for u in used) else UNUSED)
    problems = []
    if status == MISSING:
        problems.append(f"volume {name} is recorded but the engine has no such volume")
    why = backup_problem(verified, now, max_age)
    if why is not None:
        problems.append(f"volume {name}: {why}")
    return VolumeRow(
        name=name,
        role=record.role if record else "",
        volume=record.volume if record else "",
        path=record.path if record else "",
        status=status,
        size_bytes=size,
        used_by=used,
        created_at=record.created_at if record else None,
        retained_reason=record.retained_reason if record else None,
        last_backup_at=last.finished if last else None,
        last_backup_snapshot=last.snapshot_id if last else None,
        backup_age_s=_seconds(last, now),
        verified_backup_at=verified.finished if verified else None,
        last_verified_snapshot=verified.snapshot_id if verified else None,
        last_verified_at=verified.verified_at if verified else None,
        verified_age_s=_seconds(verified, now),
        problems=tuple(problems),
    )


def _seconds(record: BackupRecord | None, now: datetime) -> int | None:
    age = record.age_s(now) if record is not None else None
    return None if age is None else int(age)


def backup_problem(verified: BackupRecord | None, now: datetime, max_age: float) -> str | None:
    """Why a volume whose newest verified backup is ``verified`` has no recent verified
    backup, in words; None when it has one."""
    limit = _words(max_age)
    if verified is None:
        return f"no verified backup (backup.max_age is {limit})"
    if not verified.recent(now, max_age):
        age = verified.age_s(now)
        shown = "unknown" if age is None else _words(age)
        return f"its last verified backup is {shown} old, older than backup.max_age {limit}"
    return None


def _words(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"


# -- deleting data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    """What ``corral destroy --delete-data`` was asked: each volume named, each name
    confirmed, and the backup check (skipped only with a reason, which is audited)."""

    names: tuple[str, ...]
    confirmed: frozenset[str]
    skip_backup_check: str | None = None  # the reason given with --no-backup-check


def _unknown(ctx: Context, deletion: Deletion) -> list[str]:
    """The names of ``deletion`` that are no volume of the fleet (state or engine)."""
    known = {r.name for r in ctx.state.volumes(ctx.scope.fleet)}
    known |= set(ctx.engine.list_volumes(ctx.scope.labels("volume")))
    return [name for name in deletion.names if name not in known]


def refuse_unknown(ctx: Context, deletion: Deletion) -> None:
    """Refuse, audited, a deletion that names what is no volume of the fleet (before any
    question is asked: no answer would make it one); changes nothing.

    Raises:
        DataGuardError: a name is not a volume of the fleet.
    """
    fleet = ctx.scope.fleet
    failures = tuple(f"{name} is not a volume of fleet {fleet}" for name in _unknown(ctx, deletion))
    if failures:
        message = "refusing to delete data: " + "; ".join(failures) + "; nothing was removed"
        _audit(ctx, deletion, deletion.names, "refused", {"error": message})
        raise DataGuardError(message, failures=failures, volumes=deletion.names)


def check_deletion(ctx: Context, deletion: Deletion) -> tuple[str, ...]:
    """Refuse a deletion the guard does not allow, auditing the refusal; the volumes to
    delete when it is allowed. Nothing is changed either way.

    Raises:
        DataGuardError: a name is not a volume of the fleet, was not confirmed, or has no
            recent verified backup (``backup.max_age``; unless skipped); or the
            same volume is named twice.
    """
    fleet = ctx.scope.fleet
    backups = volume_backups(ctx.state.stores.backups.of_fleet(fleet))
    unknown = _unknown(ctx, deletion)
    now, max_age = datetime.now(UTC), ctx.spec.fleet.backup.max_age
    failures = []
    if len(set(deletion.names)) != len(deletion.names):
        failures.append("a volume is named twice")
    for name in deletion.names:
        if name in unknown:
            failures.append(f"{name} is not a volume of fleet {fleet}")
            continue
        if name not in deletion.confirmed:
            failures.append(f"{name} was not confirmed (type its name, or --confirm {name})")
        why = backup_problem(backups.get(name, VolumeBackups()).verified, now, max_age)
        if why is not None and deletion.skip_backup_check is None:
            failures.append(f"{name}: {why}; `corral backup verify` records one")
    if failures:
        message = "refusing to delete data: " + "; ".join(failures) + "; nothing was removed"
        _audit(ctx, deletion, deletion.names, "refused", {"error": message})
        raise DataGuardError(message, failures=tuple(failures), volumes=deletion.names)
    return deletion.names


def delete_volumes(ctx: Context, deletion: Deletion, names: Sequence[str]) -> list[str]:
    """Delete the volumes ``check_deletion`` allowed (their instances are gone), each
    audited; one the engine refuses is audited as failed and raised after the others.

    Raises:
        EngineError: the engine refused to delete one (in use by another container...).
    """
    fleet = ctx.scope.fleet
    recorded = {r.name for r in ctx.state.volumes(fleet)}
    present = set(ctx.engine.list_volumes(ctx.scope.labels("volume")))
    deleted, errors = [], []
    for name in names:
        try:
            if name in present:
                ctx.engine.remove_volume(name)
        except EngineError as exc:
            _audit(ctx, deletion, (name,), "failed", {"error": exc.message})
            errors.append(exc)
            continue
        if name in recorded:
            ctx.state.volume_deleted(fleet, name)
        _audit(ctx, deletion, (name,), "ok", {})
        deleted.append(name)
    if errors:
        raise errors[0]
    return deleted


def _audit(
    ctx: Context,
    deletion: Deletion,
    names: Collection[str],
    outcome: str,
    details: dict[str, object],
) -> None:
    skipped = deletion.skip_backup_check
    extra: dict[str, object] = {"backup_check": "skipped" if skipped is not None else "required"}
    if skipped is not None:
        extra["reason"] = skipped
    for name in names:
        ctx.state.record_audit(ctx.scope.fleet, "delete-data", name, outcome, {**extra, **details})
