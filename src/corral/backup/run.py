"""``corral backup``: a restic snapshot of each backed-up volume, consistent by design.

Two modes (the volume's ``backup.mode``):

- ``files``: the volume's folder on the host, read while every running instance that
  mounts it is paused (``podman pause``: its processes frozen, nothing half-written
  moves). The snapshot is what the volume held at one instant, as after a power cut: a
  program that survives a crash (PostgreSQL replays its WAL) starts from it; one that
  does not should use ``dump``. The tree's checksum is taken in the same pause, for the
  restore drills to compare.
- ``dump``: the role's own command (``pg_dump``) in a throwaway, locked-down container
  of the role's image on the fleet's network, its standard output streamed into
  ``restic backup --stdin``. A dump that fails leaves no snapshot: restic is killed
  before it sees the end of its input.

Every snapshot goes through the append-only server (``backup/server.py``) and is
recorded in the state (``backups`` table) once it exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from secrets import token_hex

from corral.backup.restic import Restic, summary_of
from corral.backup.targets import Target, snapshot_tags
from corral.deploy.context import Context
from corral.deploy.health import probe_command
from corral.deploy.instances import resolve_secrets
from corral.deploy.observe import KIND_PROBE, list_scope
from corral.deploy.scope import LABEL
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.capabilities import Capability, require
from corral.errors import BackupError, CorralError
from corral.formats import utc_now
from corral.state.backups import BackupRecord

DUMP_TIMEOUT = 6 * 3600.0


def back_up(ctx: Context, restic: Restic, target: Target, reason: str) -> BackupRecord:
    """One snapshot of ``target``, recorded in the state.

    Raises:
        BackupError: the snapshot could not be made (nothing is recorded).
        NotSupportedError: the engine cannot pause, pipe or show a volume's folder.
    """
    active = ctx.state.active_release(ctx.scope.fleet)
    release = active.number if active else None
    tags = snapshot_tags(target, ctx.scope.fleet, release)
    started = utc_now()
    ctx.progress.step(target.role, f"backing up {target.label} ({target.how.mode})")
    try:
        if target.how.mode == "files":
            snapshot, added, digest = _files(ctx, restic, target, tags)
        else:
            snapshot, added, digest = (*_dump(ctx, restic, target, tags), "")
    except CorralError as exc:
        exc.message = f"backup of {target.label} failed: {exc.message}"
        raise
    made = BackupRecord(
        0, ctx.scope.fleet, target.role, target.volume, target.engine_volume, snapshot,
        target.how.mode, release, target.rr.image_version, started, utc_now(), added,
        digest, reason, None, None, "",
    )  # fmt: skip
    record = ctx.state.stores.backups.record(made)
    details = {"volume": target.label, "snapshot": snapshot, "bytes_added": added}
    ctx.state.record_audit(ctx.scope.fleet, "backup", target.label, "ok", details)
    return record


# -- files ------------------------------------------------------------------------------


def _files(
    ctx: Context, restic: Restic, target: Target, tags: Sequence[str]
) -> tuple[str, int, str]:
    require(ctx.engine, Capability.PAUSE, "a files backup")
    require(ctx.engine, Capability.HOST_VOLUMES, "a files backup")
    folder = ctx.engine.volume_path(target.engine_volume)
    with paused(ctx, writers(ctx, target)):
        digest = tree_digest(folder)
        snapshot, added = restic.backup_folder(folder, tags, ctx.scope.fleet)
    return snapshot, added, digest


def writers(ctx: Context, target: Target) -> list[ContainerInfo]:
    """The fleet's running containers that mount ``target``'s volume."""
    return [
        c
        for c in list_scope(ctx.engine, ctx.scope)
        if c.state == "running" and target.engine_volume in c.volumes
    ]


@contextlib.contextmanager
def paused(ctx: Context, containers: Sequence[ContainerInfo]) -> Iterator[None]:
    """Every one of ``containers`` paused while the block runs, let go whatever happens."""
    frozen: list[str] = []
    try:
        for container in containers:
            ctx.engine.pause(container.name)
            frozen.append(container.name)
        yield
    finally:
        for name in frozen:
            ctx.engine.unpause(name)


def tree_digest(folder: Path) -> str:
    """A SHA-256 of a folder's tree: every entry's relative path, type, mode, owner and
    group, a file's bytes and a link's target (not times: restic restores those, but
    a checksum of them would tell nothing of the data). Never follows a link."""
    digest = hashlib.sha256()
    for path in sorted(_entries(folder)):
        info = os.lstat(path)
        rel = os.path.relpath(path, folder)
        digest.update(f"{rel}\0{info.st_mode:o}\0{info.st_uid}\0{info.st_gid}\0".encode())
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.fsencode(os.readlink(path)))
        elif stat.S_ISREG(info.st_mode):
            digest.update(f"{info.st_size}\0".encode())
            _file_bytes(path, digest)
        digest.update(b"\n")
    return digest.hexdigest()


def _entries(folder: Path) -> Iterator[str]:
    yield str(folder)
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            yield os.path.join(root, name)


def _file_bytes(path: str, digest: hashlib._Hash) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


# -- dump -------------------------------------------------------------------------------


def _dump(ctx: Context, restic: Restic, target: Target, tags: Sequence[str]) -> tuple[str, int]:
    require(ctx.engine, Capability.PIPES, "a dump backup")
    source = _serving(ctx, target)
    host = ctx.engine.probe_address(source, ctx.scope.network) or source.name
    # The dump logs in with the values the instance it reads was started with, not
    # today's: during a rotation the server still holds the old password.
    spec = helper_spec(ctx, target, target.how.dump, host, "dump", secrets_of=source.name)
    args = ["backup", "--json", "--host", ctx.scope.fleet, "--stdin"]
    args += ["--stdin-filename", dump_name(target)]
    args += [arg for tag in tags for arg in ("--tag", tag)]
    return stream_into_restic(ctx, restic, spec, args)


def dump_name(target: Target) -> str:
    """The one file a dump snapshot holds."""
    return f"{target.role}-{target.volume}.dump"


def _serving(ctx: Context, target: Target) -> ContainerInfo:
    running = writers(ctx, target)
    if not running:
        raise BackupError(
            f"no running instance of {target.role} mounts {target.engine_volume}: a dump "
            "needs one to read from",
            volume=target.label,
        )
    return running[0]


def helper_spec(
    ctx: Context,
    target: Target,
    command: Sequence[str],
    host: str,
    what: str,
    secrets_of: str | None = None,
) -> ContainerSpec:
    """The throwaway container that runs a dump, restore or check command against
    ``host``: the role's image, user, secrets and limits, locked down as an instance is
    (read-only root, no capability, no new privileges), on the fleet's network with no
    alias and no volume. It is never told where the repository is, nor its password.
    ``secrets_of``: the running instance whose secret values it gets (else today's)."""
    rr = target.rr
    values = (
        dict.fromkeys(rr.run.secrets, "")
        if secrets_of
        else resolve_secrets({rr.role: rr}, advice="export them: the dump command needs them")
    )
    return ContainerSpec(
        name=f"{ctx.scope.prefix}-{rr.role}-{what}-{token_hex(4)}",
        image=rr.image_id,
        command=probe_command(command, host, rr.run.port or 0),
        user=rr.run.user,
        env=dict(rr.run.env),
        labels={**ctx.scope.labels(KIND_PROBE), LABEL + "role": rr.role},
        network=ctx.scope.network,
        workdir=rr.run.workdir,
        memory=rr.resources.memory,
        cpus=rr.resources.cpus,
        pids_limit=rr.resources.pids,
        secrets={k: values[k] for k in rr.run.secrets},
        secrets_of=secrets_of,
        init=False,
    )


def stream_into_restic(
    ctx: Context, restic: Restic, spec: ContainerSpec, args: Sequence[str]
) -> tuple[str, int]:
    """Run ``spec`` with its standard output piped into ``restic ARGS``; (snapshot, bytes
    added). restic is killed before it sees the end of a dump that failed, so a partial
    dump never becomes a snapshot."""
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [restic.binary, *args], env=restic.environment(), stdin=read_end,
                stdout=out, stderr=err,
            )  # fmt: skip
        except OSError as exc:
            os.close(write_end)
            raise BackupError(f"cannot run restic: {exc}") from exc
        finally:
            os.close(read_end)
        try:
            result = ctx.engine.run_piped(spec, DUMP_TIMEOUT, None, write_end)
        except BaseException:
            _kill(proc, write_end)
            raise
        if result.exit_code != 0:
            _kill(proc, write_end)
            said = ctx.state.scrubber.text(result.output).strip().splitlines()
            why = "ran out of time" if result.exit_code is None else f"exit {result.exit_code}"
            raise BackupError(
                f"{spec.command[0]} {why}: {said[-1] if said else 'no message'}",
                stderr="\n".join(said[-20:]),
            )
        os.close(write_end)
        proc.wait()
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise restic.failure(args[0], err.read())
        return summary_of(out.read())


def _kill(proc: subprocess.Popen[bytes], write_end: int) -> None:
    proc.kill()
    proc.wait()
    os.close(write_end)


def fresh_name(spec: ContainerSpec) -> ContainerSpec:
    """``spec`` under a name no earlier run used."""
    return replace(spec, name=f"{spec.name.rsplit('-', 1)[0]}-{token_hex(4)}")
