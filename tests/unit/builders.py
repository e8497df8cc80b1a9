"""Values for unit tests, with sensible defaults."""

from __future__ import annotations

from typing import Any

from corral.deploy.desired import RoleRelease


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
