"""What a backup command is about: the fleet's backed-up volumes, and where they go.

A target is one volume of one role with a ``backup`` section in the spec, as the active
release runs it (its image runs the dump, its instances are the writers paused). The
repository is a folder on corral's host (served append-only by corral, see
``backup/server.py``) or a restic URL the operator serves append-only elsewhere.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.backup.restic import Password, Restic, require_tool
from corral.backup.server import append_only_server
from corral.deploy.context import Context
from corral.deploy.desired import RoleRelease, desired_from_record
from corral.errors import UsageError
from corral.spec.model import VolumeBackup

# A restic URL: a backend name and a colon (``rest:``, ``sftp:``, ``s3:``, ``b2:``...).
_URL = re.compile(r"^[a-z][a-z0-9]*:")


@dataclass(frozen=True)
class Target:
    """One backed-up volume of a role, as the fleet runs it now."""

    role: str
    volume: str
    how: VolumeBackup
    rr: RoleRelease
    engine_volume: str

    @property
    def label(self) -> str:
        return f"{self.role}/{self.volume}"


def select_targets(ctx: Context, names: Sequence[str] = ()) -> list[Target]:
    """The backed-up volumes ``names`` say (a role, ``role/volume``, or an engine
    volume's name); every one of the fleet when ``names`` is empty.

    Raises:
        UsageError: a name matches no backed-up volume, or its role is not deployed.
    """
    every = _all_targets(ctx)
    if not names:
        return every
    chosen: list[Target] = []
    for name in names:
        found = [t for t in every if name in (t.role, t.label, t.engine_volume)]
        if not found:
            raise UsageError(f"{name!r} is no backed-up volume of a deployed role: {_known(every)}")
        chosen += [t for t in found if t not in chosen]
    return chosen


def _known(targets: Sequence[Target]) -> str:
    labels = ", ".join(t.label for t in targets)
    return f"the fleet backs up {labels}" if labels else "no volume has a backup section"


def _all_targets(ctx: Context) -> list[Target]:
    active = ctx.state.active_release(ctx.scope.fleet)
    running = desired_from_record(active.roles) if active else {}
    targets = []
    for name, role in sorted(ctx.spec.fleet.roles.items()):
        rr = running.get(name)
        for volume, how in sorted(role.backups.items()):
            if rr is None or volume not in rr.volumes:
                continue  # not deployed (yet): nothing holds data to back up
            targets.append(Target(name, volume, how, rr, rr.engine_volume(ctx.scope, volume)))
    return targets


def repository_folder(ctx: Context) -> Path | None:
    """The repository's folder on corral's host, or None when the spec names a URL."""
    named = ctx.spec.fleet.backup.repository
    if named is None:
        return ctx.spec.state_location.files / "backups"
    if _URL.match(named) and not named.startswith("local:"):
        return None
    path = Path(named.removeprefix("local:")).expanduser()
    return path if path.is_absolute() else ctx.spec.root / path


@contextlib.contextmanager
def open_repository(ctx: Context, password: Password | None = None) -> Iterator[Restic]:
    """The fleet's repository, reached the deploy path's way: through corral's own
    append-only server for a folder (created on first use), or the spec's URL.

    Raises:
        UsageError: the password is not set.
        MissingToolError: restic or rclone is missing.
        BackupError: the server did not start, or restic cannot reach the repository.
    """
    password = password or Password.from_environ()
    binary = require_tool("restic")
    scrubber = ctx.state.scrubber.including([password.value])
    folder = repository_folder(ctx)
    if folder is None:
        url = str(ctx.spec.fleet.backup.repository)
        yield Restic(url, password, scrubber, binary)
        return
    with append_only_server(folder) as url:
        yield Restic(url, password, scrubber, binary)


def snapshot_tags(target: Target, fleet: str, release: int | None) -> list[str]:
    """The tags of a snapshot of ``target``: what it is, and what wrote it."""
    return [
        "corral",
        f"fleet={fleet}",
        f"role={target.role}",
        f"volume={target.volume}",
        f"release={release or 0}",
        f"image={target.rr.image_version}",
        f"mode={target.how.mode}",
    ]


def volume_tags(target: Target, fleet: str) -> list[str]:
    """The tags every snapshot of ``target``'s volume carries: how to find them."""
    return [f"fleet={fleet}", f"role={target.role}", f"volume={target.volume}"]
