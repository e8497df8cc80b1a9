"""How one instance of a role is started: locked down by default, data on named volumes."""

from __future__ import annotations

import os
from collections.abc import Mapping

from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.observe import instance_labels
from corral.deploy.scope import Scope
from corral.engines.base import ContainerSpec, Mount
from corral.errors import GateError

LABEL = "io.corral."


def resolve_secrets(desired: Desired, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of every secret the desired roles name, from corral's environment.

    Raises:
        GateError: a secret is not set; nothing has been started yet.
    """
    env = os.environ if environ is None else environ
    names = sorted({name for rr in desired.values() for name in rr.run.secrets})
    missing = [name for name in names if name not in env]
    if missing:
        raise GateError(
            f"secret(s) not set in corral's environment: {', '.join(missing)}; "
            "export them before deploying (their values are never stored)",
            missing=missing,
        )
    return {name: env[name] for name in names}


def container_spec(
    scope: Scope, rr: RoleRelease, release: int, index: int, secrets: Mapping[str, str]
) -> ContainerSpec:
    """The engine-neutral description of instance ``index`` of ``rr`` in ``release``."""
    labels = instance_labels(scope, rr.role, release, index, rr.config_hash)
    labels[LABEL + "image-version"] = rr.image_version
    mounts = tuple(
        Mount(scope.volume_name(rr.role, vol), path) for vol, path in sorted(rr.volumes.items())
    )
    return ContainerSpec(
        name=scope.instance_name(rr.role, release, index),
        image=rr.image_id,
        command=rr.run.command,
        user=rr.run.user,
        env=dict(rr.run.env),
        labels=labels,
        network=scope.network,
        network_aliases=(rr.role,),
        mounts=mounts,
        workdir=rr.run.workdir,
        cap_add=rr.lockdown.capabilities,
        memory=rr.resources.memory,
        cpus=rr.resources.cpus,
        pids_limit=rr.resources.pids,
        secrets={k: secrets[k] for k in rr.run.secrets},
    )
