"""Values for unit tests, with sensible defaults."""

from __future__ import annotations

from typing import Any

from corral.deploy.desired import RoleRelease
from corral.state import State, utc_now
from corral.state.backups import BackupRecord


def role_release(name: str, image: str = "img-a", **fields: Any) -> RoleRelease:
    """A RoleRelease of fleet ``shop``; ``run`` is merged into the default run."""
    run = {"command": ["app"], "user": "app", "port": None, **fields.pop("run", {})}
    data: dict[str, Any] = {
        "role": name,
        "image_id": image,
        "image_tag": f"corral/shop-{name}:{image}",
        "image_version": f"v-{image}",
        "image_digest": f"sha256:{image}",
        "run": run,
        "health": None,
        "replicas": 1,
        "volumes": {},
        "deploy": {},
        "after": [],
        "public": None,
        "lockdown": {},
        "resources": {},
        **fields,
    }
    return RoleRelease.model_validate(data)


def backed_up(
    state: State,
    fleet: str,
    engine_volume: str,
    at: str | None = None,
    verify: str | None = "ok",
    snapshot: str = "snap1",
) -> BackupRecord:
    """Record in the backups store a snapshot of ``engine_volume`` taken ``at`` (default
    now), as ``corral backup`` does, then its restore drill's ``verify`` result (None: no
    drill), as ``corral backup verify`` does. Role and volume come from the engine name
    ``<fleet>-<role>-<volume>``."""
    role, _, volume = engine_volume.removeprefix(f"{fleet}-").partition("-")
    when = at or utc_now()
    made = BackupRecord(
        0, fleet, role, volume, engine_volume, snapshot, "files", None, "", when, when, 0,
        "", "test", None, None, "",
    )  # fmt: skip
    stored = state.stores.backups.record(made)
    if verify is not None:
        state.stores.backups.verified(stored.id, verify, "test drill")
    return next(r for r in state.stores.backups.of_fleet(fleet) if r.id == stored.id)
