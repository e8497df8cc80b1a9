"""What a release asks for: per role, one image and the configuration to run it with.

A ``RoleRelease`` is stored (as JSON) in every release record, so a rollback can start an
earlier release's instances exactly as they were, whatever the spec says today. Secret
*values* are never part of it: only the names, resolved from corral's environment when
instances start, and a keyed hash of each value (see ``corral.deploy.secrets``), so a
new value is seen as a change of the role's configuration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from corral.build.hashing import hash_json
from corral.deploy.scope import Scope
from corral.formats import LABEL_PREFIX
from corral.spec.model import (
    DeployPolicy,
    Health,
    Lockdown,
    Resources,
    Role,
    RunConfig,
)
from corral.state import ImageRecord

LABEL = LABEL_PREFIX  # corral.formats has the one prefix; modules import LABEL here
ROLE_LABEL = LABEL + "role-release"  # an instance's role as its release runs it


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
    # Per secret name, the keyed hash (HMAC) of the value the instances get; empty in
    # test environments and in releases recorded before corral kept them.
    secret_hashes: dict[str, str] = {}
    # Volumes declared shareable. A release recorded before corral knew of them has none:
    # every volume is single-writer, the safe reading.
    shareable: tuple[str, ...] = ()
    # Per volume switched to a restored copy (``corral restore``), the name its engine
    # volume has in place of the volume's own: ``data`` -> ``data-restored-r7`` is the
    # engine volume ``<prefix>-<role>-data-restored-r7``. Carried from release to release;
    # a rollback past the restore goes back to the volume the earlier release used.
    volume_names: dict[str, str] = {}

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
            volumes=role.mounts,
            deploy=role.deploy,
            after=role.after,
            public=role.public,
            lockdown=role.lockdown,
            resources=role.resources,
            tests=role.tests,
            fixtures=dict(role.fixtures),
            shareable=tuple(sorted(set(role.volumes) - set(role.single_writer))),
        )

    @property
    def single_writer(self) -> tuple[str, ...]:
        """The volumes only one running instance may mount at a time, sorted."""
        return tuple(sorted(set(self.volumes) - set(self.shareable)))

    def engine_volume(self, scope: Scope, volume: str) -> str:
        """The engine volume that holds ``volume`` in ``scope`` (a restored copy, if the
        role was switched to one)."""
        return scope.volume_name(self.role, self.volume_names.get(volume, volume))

    def with_volume_names(self, names: Mapping[str, str]) -> RoleRelease:
        """This role with ``names`` as its volumes' engine names (see ``volume_names``)."""
        kept = {k: v for k, v in names.items() if k in self.volumes and k != v}
        return self.model_copy(update={"volume_names": kept})

    @property
    def config_hash(self) -> str:
        """Hash of the settings baked into a running container, other than its image.

        Replica count, deploy policy and ordering are not in it: changing them does not
        require replacing instances. Health settings are: a new check is only trusted once
        it passed on instances started for it, so changing it rolls the role (new instances
        checked with it before they take traffic, the old ones serving on the old check),
        and a rollback brings the old check back the same way. The keyed hashes of the
        secret values are (a new value replaces the instances); they are mixed into this
        one hash, so the label that carries it cannot be used to test a guessed value.
        """
        data = self._instance_settings()
        if self.secret_hashes:  # absent when empty: older instances' hashes stay valid
            data["secret_hashes"] = self.secret_hashes
        return hash_json(data)[:16]

    def _instance_settings(self) -> dict[str, Any]:
        keys = {"run", "volumes", "lockdown", "resources", "health"}
        data = self.model_dump(mode="json", include=keys)
        if self.volume_names:  # absent when empty: instances from before stay current
            data["volume_names"] = self.volume_names
        if not data["run"]["tmpfs"]:
            # Hashed as before run.tmpfs existed: instances started by an older corral
            # stay current instead of all being replaced by the first deploy after it.
            del data["run"]["tmpfs"]
        if data["lockdown"].get("read_only_root") is True:
            del data["lockdown"]["read_only_root"]  # the same: hashed as before it existed
        return data

    def with_secret_hashes(self, hashes: Mapping[str, str]) -> RoleRelease:
        """This role with ``hashes`` as the keyed hashes of its secrets' values."""
        return self.model_copy(update={"secret_hashes": dict(hashes)})

    def changes_to(self, other: RoleRelease) -> list[str]:
        """What differs in ``other``'s instance configuration, in words; secrets by name,
        never by value or hash."""
        changes = []
        if self._instance_settings() != other._instance_settings():
            changes.append("run configuration changed")
        for name in sorted(other.secret_hashes):
            was = self.secret_hashes.get(name)
            if name not in self.run.secrets or was == other.secret_hashes[name]:
                continue  # a secret the role did not use is part of "run configuration"
            changes.append(f"secret {name} changed" if was else f"secret {name} is now tracked")
        return changes

    def to_record(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def label_text(self) -> str:
        """This role as the label its instances carry (:data:`ROLE_LABEL`), what
        ``corral state recover`` rebuilds a lost release from. Without the secrets' keyed
        hashes: whoever can inspect a container can read its labels."""
        data = self.to_record()
        data.pop("secret_hashes", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


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
