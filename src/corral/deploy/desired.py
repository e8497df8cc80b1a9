"""What a release asks for: per role, one image and the configuration to run it with.

A ``RoleRelease`` is stored (as JSON) in every release record, so a rollback can start an
earlier release's instances exactly as they were, whatever the spec says today. Secret
*values* are never part of it: only the names, resolved from corral's environment when
instances start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from corral.build.hashing import hash_json
from corral.spec.model import (
    DeployPolicy,
    Health,
    Lockdown,
    Resources,
    Role,
    RunConfig,
)
from corral.state import ImageRecord

LABEL = "io.corral."


class RoleRelease(BaseModel):
    """One role as a release runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    image_id: str
    image_tag: str
    image_version: str
    image_digest: str
    run: RunConfig
    health: Health | None
    replicas: int
    volumes: dict[str, str]
    deploy: DeployPolicy
    after: tuple[str, ...]
    public: int | None
    lockdown: Lockdown
    resources: Resources
    tests: tuple[str, ...] = ()  # the role's test files, relative to the spec
    fixtures: dict[str, str] = {}

    @classmethod
    def from_role(cls, name: str, role: Role, image: ImageRecord) -> RoleRelease:
        return cls(
            role=name,
            image_id=image.image_id,
            image_tag=image.tag,
            image_version=image.version,
            image_digest=image.digest,
            run=role.run,
            health=role.health,
            replicas=role.replicas,
            volumes=dict(role.volumes),
            deploy=role.deploy,
            after=role.after,
            public=role.public,
            lockdown=role.lockdown,
            resources=role.resources,
            tests=role.tests,
            fixtures=dict(role.fixtures),
        )

    @property
    def config_hash(self) -> str:
        """Hash of the settings baked into a running container, other than its image.

        Replica count, deploy policy and ordering are not in it: changing them does not
        require replacing instances. Health settings are: a new check is only trusted once
        it passed on instances started for it, so changing it rolls the role (new instances
        checked with it before they take traffic, the old ones serving on the old check),
        and a rollback brings the old check back the same way.
        """
        keys = {"run", "volumes", "lockdown", "resources", "health"}
        data = self.model_dump(mode="json", include=keys)
        return hash_json(data)[:16]

    def to_record(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


Desired = Mapping[str, RoleRelease]


def desired_from_record(roles: Mapping[str, Any]) -> dict[str, RoleRelease]:
    """The desired state stored in a release record."""
    return {name: RoleRelease.model_validate(data) for name, data in roles.items()}


def deploy_order(desired: Desired) -> list[list[str]]:
    """Roles in waves: every role comes after the roles it names in ``after``.

    Roles in one wave do not depend on each other and may deploy in parallel.
    """
    remaining = {name: {d for d in rr.after if d in desired} for name, rr in desired.items()}
    waves: list[list[str]] = []
    while remaining:
        ready = sorted(name for name, deps in remaining.items() if not deps)
        if not ready:  # the spec forbids cycles; a stored release could still hold one
            ready = sorted(remaining)
        waves.append(ready)
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return waves
