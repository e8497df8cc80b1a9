"""How one instance of a role is started: locked down by default, data on named volumes."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from secrets import token_hex

from corral.deploy.desired import ROLE_LABEL, Desired, RoleRelease
from corral.deploy.health import probe_command
from corral.deploy.observe import KIND_PROBE, instance_labels
from corral.deploy.scope import Scope
from corral.deploy.secrets import Hasher, secret_names
from corral.deploy.secrets import live_values as live_values  # re-exported: it lived here
from corral.engines.base import ContainerSpec, Engine, Mount
from corral.formats import LABEL_PREFIX
from corral.spec.model import CommandHealth

LABEL = LABEL_PREFIX  # corral.formats has the one prefix; modules import LABEL here


def resolve_secrets(
    desired: Desired,
    roles: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    advice: str = "export them before deploying",
) -> dict[str, str]:
    """The values of the secrets ``roles`` of ``desired`` use (default: every role), from
    corral's environment; other roles' secrets are not needed and not read.

    Raises:
        GateError: a secret is not set; nothing has been started yet.
    """
    return live_values(secret_names(desired, desired if roles is None else roles), advice, environ)


def secrets_for_test_run(
    desired: Desired,
    also: Iterable[str] = (),
    live: Collection[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """One test run's value of every secret ``desired`` names, and of ``also``.

    Each is a fresh random value, made for this run and the same for every role in it (so
    a database and its app agree), never the live one: a test environment runs code that
    is not live yet, and tests print what they like. Names in ``live`` (the spec's
    ``live_secrets_in_tests``) take their live value from corral's environment on purpose.

    Raises:
        GateError: a secret asked for live is not set.
    """
    names = {name for rr in desired.values() for name in rr.run.secrets} | set(also)
    values = {name: token_hex(16) for name in sorted(names) if name not in live}
    advice = "export them before testing: live_secrets_in_tests asks for their live values"
    values.update(live_values((n for n in names if n in live), advice, environ))
    return values


def container_spec(
    scope: Scope,
    rr: RoleRelease,
    release: int,
    index: int,
    secrets: Mapping[str, str],
    key: Hasher | None = None,
) -> ContainerSpec:
    """The engine-neutral description of instance ``index`` of ``rr`` in ``release``.

    With ``key``, the configuration label of a role whose release tracks its secrets'
    hashes says which values this instance really gets (an undo starts instances of the
    previous release with today's values): the next plan then compares the truth.
    """
    if key is not None and rr.secret_hashes:
        rr = rr.with_secret_hashes(key.hashes(rr.run.secrets, secrets))
    labels = instance_labels(scope, rr.role, release, index, rr.config_hash)
    labels[LABEL + "image-version"] = rr.image_version
    # The image as corral built it: an engine that distributes it may run it by another
    # reference (a registry's) and report that one.
    labels[LABEL + "image-id"] = rr.image_id
    labels[ROLE_LABEL] = rr.label_text()  # what `corral state recover` rebuilds from
    mounts = tuple(
        Mount(rr.engine_volume(scope, vol), path) for vol, path in sorted(rr.volumes.items())
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
        owned_tmpfs=("/run", *rr.run.tmpfs),
        read_only=rr.lockdown.read_only_root,
        cap_add=rr.lockdown.capabilities,
        memory=rr.resources.memory,
        cpus=rr.resources.cpus,
        pids_limit=rr.resources.pids,
        secrets={k: secrets[k] for k in rr.run.secrets},
    )


def probe_spec(scope: Scope, rr: RoleRelease, health: CommandHealth, address: str) -> ContainerSpec:
    """The throwaway container that runs ``rr``'s health command against ``address``.

    The role's image and user, on the fleet's network, locked down as an instance is
    (read-only root, no capability, not even the role's own, no new privileges, its
    resource limits), but with no volume, secret, environment or network alias: it
    sees the instance only as a neighbour does. Its name is a stem the probe completes
    per run (see ``CommandProbe``); its labels let sweeps find what a killed run left.
    """
    assert rr.run.port is not None  # a health check needs run.port (the spec says so)
    return ContainerSpec(
        name=f"{scope.prefix}-{rr.role}-probe",
        image=rr.image_id,
        command=probe_command(health.command, address, rr.run.port),
        user=rr.run.user,
        labels={**scope.marks(KIND_PROBE), LABEL + "role": rr.role},
        network=scope.network,
        workdir=rr.run.workdir,
        memory=rr.resources.memory,
        cpus=rr.resources.cpus,
        pids_limit=rr.resources.pids,
        stop_timeout=0,  # a probe that hangs is killed, not asked to stop
        init=False,  # the command exits by itself, or is killed
    )


def remove_probes(engine: Engine, scope: Scope) -> list[str]:
    """Remove the probe containers of ``scope`` a killed or hung check left; their names.

    Only the holder of the scope's deploy lock (or its test environment) runs probes,
    so every probe container found while holding it is a leftover.
    """
    found = engine.list_containers(scope.labels(KIND_PROBE))
    for container in found:
        engine.remove(container.name)
    return [container.name for container in found]
