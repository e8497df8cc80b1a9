"""Restores: a snapshot into a NEW volume, never over a live one.

``fill_volume`` puts a snapshot into an empty engine volume: a files snapshot is restored
into the volume's folder (owners, modes and times as they were); a dump is fed to the
role's ``restore`` command, run against a throwaway instance of the role (its image and
run configuration, no alias, not in the edge, invisible to plans) that mounts the new
volume, and the role's ``check`` command (if any) must then pass. ``corral restore``
switches the role to the filled volume by a normal deploy; ``corral backup verify``
fills a scratch volume and throws it away.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from secrets import token_hex

from corral.backup.restic import Restic, Snapshot
from corral.backup.run import dump_name, helper_spec, tree_digest
from corral.backup.targets import Target, volume_tags
from corral.deploy.context import Context
from corral.deploy.health import CommandProbe, Probe, wait_healthy
from corral.deploy.instances import container_spec, probe_spec, resolve_secrets
from corral.deploy.observe import KIND_PROBE
from corral.deploy.scope import LABEL
from corral.engines.base import ContainerInfo, Mount
from corral.errors import BackupError, UsageError
from corral.spec.model import CommandHealth

RESTORE_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class Filled:
    """A volume a snapshot was restored into."""

    snapshot: str
    engine_volume: str
    tree_sha256: str = ""  # files mode: the restored tree's checksum


def pick_snapshot(restic: Restic, target: Target, fleet: str, wanted: str | None) -> Snapshot:
    """The newest snapshot of ``target``'s volume, or the one whose id starts ``wanted``.

    Raises:
        UsageError: there is none (or no such one), or ``wanted`` is the start of several.
    """
    snapshots = restic.snapshots(volume_tags(target, fleet))
    if wanted:
        snapshots = [s for s in snapshots if s.id.startswith(wanted)]
        if len({s.id for s in snapshots}) > 1:
            ids = ", ".join(s.id[:12] for s in snapshots)
            raise UsageError(f"{wanted!r} starts {len(snapshots)} snapshots ({ids}): give more")
    if not snapshots:
        which = f"snapshot {wanted} of " if wanted else "snapshot of "
        raise UsageError(f"the repository has no {which}{target.label}")
    return snapshots[-1]


def new_volume(ctx: Context, target: Target, kind: str) -> tuple[str, str]:
    """A new, empty engine volume for ``target``: (its name in the role, engine name).

    ``kind`` is ``restored`` (a volume the role will run on: labelled as the fleet's) or
    ``verify`` (a scratch volume, labelled as such, removed after the drill)."""
    suffix = f"{target.volume}-{kind}-{token_hex(3)}"
    name = ctx.scope.volume_name(target.role, suffix)
    labels = ctx.scope.marks("volume" if kind == "restored" else "scratch-volume")
    ctx.engine.ensure_volume(name, {**labels, LABEL + "role": target.role})
    return suffix, name


def fill_volume(
    ctx: Context, restic: Restic, target: Target, snapshot: Snapshot, volume: str
) -> Filled:
    """Restore ``snapshot`` into the empty engine volume ``volume``.

    Raises:
        BackupError: restic, the restore command or the check failed, or the snapshot
            was made in another mode than the spec's.
    """
    made_as = snapshot.tag("mode")
    if made_as and made_as != target.how.mode:
        raise BackupError(
            f"snapshot {snapshot.id[:8]} is a {made_as} backup and the spec backs "
            f"{target.label} up as {target.how.mode}: restore a snapshot made since",
            volume=target.label,
            snapshot=snapshot.id,
        )
    if target.how.mode == "files":
        folder = ctx.engine.volume_path(volume)
        recorded = {p.rsplit("/", 1)[-1] for p in snapshot.paths}
        if recorded != {folder.name}:
            raise BackupError(
                f"snapshot {snapshot.id[:8]} holds {sorted(recorded)}, not one volume folder",
                volume=target.label,
            )
        restic.restore(snapshot.id, folder.parent)
        return Filled(snapshot.id, volume, tree_digest(folder))
    with throwaway_instance(ctx, target, volume) as address:
        _pipe_restore(ctx, restic, target, snapshot, address)
        if target.how.check:
            _check(ctx, target, address)
    return Filled(snapshot.id, volume)


@contextlib.contextmanager
def throwaway_instance(ctx: Context, target: Target, volume: str) -> Iterator[str]:
    """An instance of ``target``'s role on ``volume`` (alone), healthy, for the block;
    yields its address on the fleet's network. Removed whatever happens."""
    rr = target.rr
    values = resolve_secrets({rr.role: rr}, advice="export them: the restore needs them")
    spec = container_spec(ctx.scope, rr, 0, 0, values)
    path = rr.volumes[target.volume]
    spec = replace(
        spec,
        name=f"{ctx.scope.prefix}-{rr.role}-restore-{token_hex(4)}",
        network_aliases=(),
        labels={**ctx.scope.labels(KIND_PROBE), LABEL + "role": rr.role},
        mounts=(Mount(volume, path),),
    )
    ctx.engine.ensure_network(ctx.scope.network, ctx.scope.labels("network"))
    info = ctx.engine.start(spec)
    try:
        yield _healthy(ctx, target, info)
    finally:
        ctx.engine.remove(spec.name)


def _healthy(ctx: Context, target: Target, info: ContainerInfo) -> str:
    rr = target.rr
    address = ctx.engine.probe_address(info, ctx.scope.network)
    if not address:
        raise BackupError(f"the restore's instance {info.name} has no address")
    if rr.health is None or rr.run.port is None:
        return address
    probe: Probe | None = None
    if isinstance(rr.health, CommandHealth):
        probe = CommandProbe(ctx.engine, probe_spec(ctx.scope, rr, rr.health, address), 5.0)
    result = wait_healthy(address, rr.run.port, rr.health, probe=probe)
    if not result.healthy:
        raise BackupError(f"the restore's instance never became healthy: {result.detail}")
    return address


def _pipe_restore(
    ctx: Context, restic: Restic, target: Target, snapshot: Snapshot, address: str
) -> None:
    """``restic dump`` of the snapshot's one file, piped into the role's restore command."""
    spec = helper_spec(ctx, target, target.how.restore, address, "restore")
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as err:
        try:
            dump = subprocess.Popen(
                [restic.binary, "dump", snapshot.id, f"/{dump_name(target)}"],
                env=restic.environment(), stdin=subprocess.DEVNULL, stdout=write_end, stderr=err,
            )  # fmt: skip
        finally:
            os.close(write_end)
        try:
            result = ctx.engine.run_piped(spec, RESTORE_TIMEOUT, read_end, None)
        except BaseException:
            dump.kill()
            raise
        finally:
            os.close(read_end)  # a restic still writing to a restore that ended: EPIPE
            dump.wait()
        err.seek(0)
        if dump.returncode != 0:
            raise restic.failure("dump", err.read())
    if result.exit_code != 0:
        said = ctx.state.scrubber.text(result.output).strip().splitlines()
        raise BackupError(
            f"the restore command failed (exit {result.exit_code}): "
            f"{said[-1] if said else 'no message'}",
            volume=target.label,
            stderr="\n".join(said[-20:]),
        )


def _check(ctx: Context, target: Target, address: str) -> None:
    spec = helper_spec(ctx, target, target.how.check, address, "check")
    result = ctx.engine.run_piped(spec, 600.0, None, None)
    if result.exit_code != 0:
        said = ctx.state.scrubber.text(result.output).strip().splitlines()
        raise BackupError(
            f"the check of the restored copy failed: {said[-1] if said else 'no message'}",
            volume=target.label,
        )
