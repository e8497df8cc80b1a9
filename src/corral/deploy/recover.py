"""``corral state recover``: a minimal state rebuilt from the engine's labels.

When a fleet's state database is lost, what runs still says what it is: every instance
carries the fleet's id, its release number, its image and its role as the release runs
it (:data:`corral.deploy.desired.ROLE_LABEL`), and every final image its build number and
content hash. From those, into a state that holds no history of the fleet, this writes
the fleet's id, the active release (the highest release an instance carries, with each
role's newest instance's settings), the live instances, and the images with their
builds, so build and release numbers continue and the next deploy rolls the fleet as
usual. Older releases an instance still belongs to are recorded ``aborted`` with only
their number (nothing else of them is known, so none is a rollback target). Test records
and the old audit trail are lost: the next deploy tests again. The audit trail gets one
``state-recover`` entry saying what was rebuilt, volumes included (they are never
touched).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from corral.deploy.context import Context
from corral.deploy.desired import ROLE_LABEL, RoleRelease
from corral.deploy.observe import KIND_INSTANCE
from corral.deploy.ownership import live_containers, new_fleet_id
from corral.deploy.scope import FLEET_ID, LABEL, Scope
from corral.engines.base import ContainerInfo, ImageInfo
from corral.errors import StateError, UsageError
from corral.state import transfer
from corral.state.records import current_host, current_user, utc_now
from corral.state.releases import roles_json

RECOVERED = "recovered by corral state recover from the engine's labels"


@dataclass(frozen=True)
class Recovered:
    """What ``corral state recover`` wrote."""

    fleet: str
    fleet_id: str
    release: int
    roles: tuple[str, ...]
    instances: tuple[str, ...]
    images: int
    volumes: tuple[str, ...]


def recover(ctx: Context) -> Recovered:
    """Rebuild the fleet's minimal state from the engine's labels (see the module).

    Raises:
        UsageError: the state holds the fleet already, or the fleet runs no instance.
        StateError: an instance lacks the labels recovery needs (an earlier corral
            started it), or the instances carry several fleet ids.
    """
    fleet = ctx.scope.fleet
    if ctx.state.fleet_id(fleet) is not None or ctx.state.releases(fleet, limit=1):
        raise UsageError(
            f"the state {ctx.scope.state} holds fleet {fleet} already: recover rebuilds a "
            f"lost state only, into an empty one"
        )
    instances = [c for c in live_containers(ctx) if c.labels.get(LABEL + "kind") == KIND_INSTANCE]
    if not instances:
        raise UsageError(f"fleet {fleet} runs no instance: there is nothing to recover")
    fleet_id = _fleet_id(fleet, instances)
    roles = _roles(instances)
    numbers = sorted({_release(c) for c in instances})
    images = [i for i in ctx.engine.list_images({LABEL + "fleet": fleet}) if _final(i)]
    volumes = tuple(sorted(ctx.engine.list_volumes(Scope(fleet).labels("volume"))))
    document = _document(ctx, fleet, fleet_id, roles, numbers, instances, images)
    ctx.state.load(document, "the engine's labels", partial=True)
    result = Recovered(
        fleet,
        fleet_id,
        numbers[-1],
        tuple(sorted(roles)),
        tuple(sorted(c.name for c in instances)),
        len(images),
        volumes,
    )
    details = {
        "fleet_id": fleet_id,
        "release": result.release,
        "roles": list(result.roles),
        "instances": list(result.instances),
        "images": result.images,
        "volumes": list(volumes),
    }
    ctx.state.record_audit(fleet, "state-recover", "state", "ok", details)
    ctx.own(fleet_id)
    return result


def _fleet_id(fleet: str, instances: Sequence[ContainerInfo]) -> str:
    ids = sorted({c.labels.get(FLEET_ID) or "" for c in instances} - {""})
    if len(ids) > 1:
        raise StateError(
            f"the instances of fleet {fleet} carry {len(ids)} fleet ids ({', '.join(ids)}): "
            f"more than one state deployed it; recover cannot tell which release is live"
        )
    return ids[0] if ids else new_fleet_id()


def _release(info: ContainerInfo) -> int:
    try:
        return int(info.labels.get(LABEL + "release", ""))
    except ValueError as exc:
        raise StateError(f"instance {info.name} has no release number label") from exc


def _roles(instances: Sequence[ContainerInfo]) -> dict[str, dict[str, Any]]:
    """Per role, the settings of its newest instance (running ones first)."""
    newest = sorted(instances, key=lambda c: (c.state == "running", _release(c)))
    roles: dict[str, dict[str, Any]] = {}
    for info in newest:  # later ones win
        text = info.labels.get(ROLE_LABEL)
        if not text:
            raise StateError(
                f"instance {info.name} carries no {ROLE_LABEL} label (an earlier corral "
                f"started it): recover cannot rebuild its release; deploy from the spec "
                f"with a state that knows the fleet"
            )
        try:
            rr = RoleRelease.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise StateError(f"instance {info.name}: its {ROLE_LABEL} label is unreadable") from exc
        roles[rr.role] = rr.to_record()
    return roles


def _final(image: ImageInfo) -> bool:
    """A role's image as a build recorded it (not a build stage, not a base)."""
    labels = image.labels
    return bool(labels.get(LABEL + "role") and labels.get(LABEL + "version")) and not labels.get(
        LABEL + "stage"
    )


def _document(
    ctx: Context,
    fleet: str,
    fleet_id: str,
    roles: dict[str, dict[str, Any]],
    numbers: Sequence[int],
    instances: Sequence[ContainerInfo],
    images: Sequence[ImageInfo],
) -> dict[str, Any]:
    now, who, host = utc_now(), current_user(), current_host()
    active = numbers[-1]
    releases = [
        {
            "id": i + 1,
            "fleet": fleet,
            "number": n,
            "kind": "deploy",
            "status": "active" if n == active else "aborted",
            "roles": roles_json(roles if n == active else {}),
            "message": RECOVERED if n == active else f"{RECOVERED}: only its number is known",
            "started_at": now,
            "finished_at": now,
            "user": who,
            "pid": 0,
            "host": host,
        }
        for i, n in enumerate(numbers)
    ]
    rows = [
        {
            "fleet": fleet,
            "name": c.name,
            "role": c.labels.get(LABEL + "role", ""),
            "release": _release(c),
            "image_id": c.labels.get(LABEL + "image-id") or c.image_id,
            "started_at": c.created or now,
        }
        for c in sorted(instances, key=lambda c: c.name)
    ]
    builds, image_rows = _images(fleet, images, who, host)
    return {
        "format": transfer.FORMAT,
        "version": transfer.VERSION,
        "schema_version": ctx.state.schema_version,
        "tables": {
            "fleets": [
                {"fleet": fleet, "fleet_id": fleet_id, "origin": "recover", "created_at": now}
            ],
            "builds": builds,
            "images": image_rows,
            "releases": releases,
            "instances": rows,
        },
    }


def _images(
    fleet: str, images: Sequence[ImageInfo], who: str, host: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    builds: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for image in sorted(images, key=lambda i: i.labels.get(LABEL + "built-at", "")):
        labels = image.labels
        role, version = labels[LABEL + "role"], labels[LABEL + "version"]
        try:
            number = int(version.split("-", 1)[0])
        except ValueError:
            continue
        if (role, number) in seen:
            continue  # the same build tagged twice
        seen.add((role, number))
        built = labels.get(LABEL + "built-at", "") or utc_now()
        tag = image.tags[0] if image.tags else image.id
        content_hash = labels.get(LABEL + "content-hash", "")
        build_id = len(builds) + 1
        builds.append(
            {
                "id": build_id,
                "fleet": fleet,
                "role": role,
                "number": number,
                "content_hash": content_hash,
                "status": "ok",
                "started_at": built,
                "finished_at": built,
                "image_id": image.id,
                "tag": tag,
                "pid": 0,
                "user": who,
                "host": host,
            }
        )
        rows.append(
            {
                "id": build_id,
                "build_id": build_id,
                "fleet": fleet,
                "role": role,
                "number": number,
                "content_hash": content_hash,
                "version": version,
                "tag": tag,
                "image_id": image.id,
                "digest": image.digest,
                "built_at": built,
                "git_commit": labels.get(LABEL + "git-commit") or None,
                "git_dirty": 1 if labels.get(LABEL + "git-dirty") == "true" else 0,
                "labels": json.dumps(dict(labels), sort_keys=True),
            }
        )
    return builds, rows
