"""The actual state of a fleet, read from the engine by labels, as plain values.

Instances are recognised by their labels (``io.corral.fleet``, ``io.corral.role``,
``io.corral.release``...), never by their names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from corral.deploy.scope import Scope
from corral.engines.base import ContainerInfo, Engine
from corral.formats import LABEL_PREFIX, labels_match

LABEL = LABEL_PREFIX  # corral.formats has the one prefix; modules import LABEL here
KIND_INSTANCE = "instance"
KIND_EDGE = "edge"
KIND_PROBE = "probe"  # a throwaway container that runs a role's health command


@dataclass(frozen=True)
class Instance:
    name: str
    role: str
    release: int
    index: int
    image_id: str
    config_hash: str
    state: str  # running | exited | created | ...
    address: str | None
    finished: str = ""
    created: str = ""
    version: str = ""  # the image version it was started from

    @property
    def running(self) -> bool:
        return self.state == "running"


def instance_labels(
    scope: Scope, role: str, release: int, index: int, config_hash: str
) -> dict[str, str]:
    """The labels every instance is created with."""
    return {
        **scope.marks(KIND_INSTANCE),
        LABEL + "role": role,
        LABEL + "release": str(release),
        LABEL + "index": str(index),
        LABEL + "config-hash": config_hash,
    }


def observe(
    engine: Engine, scope: Scope, listing: Iterable[ContainerInfo] | None = None
) -> list[Instance]:
    """Every instance of the scope, whatever its state, in a stable order.

    ``listing``: the scope's containers listed already (``list_scope``), to pick from.
    """
    labels = scope.labels(KIND_INSTANCE)
    found = engine.list_containers(labels) if listing is None else pick(listing, labels)
    instances = (_instance(c, engine.probe_address(c, scope.network)) for c in found)
    return sorted(instances, key=lambda i: (i.role, i.release, i.index))


def list_scope(engine: Engine, scope: Scope) -> list[ContainerInfo]:
    """Every container of the scope (instances and edge) in one engine listing."""
    return engine.list_containers(scope.selector())


def pick(listing: Iterable[ContainerInfo], labels: Mapping[str, str]) -> list[ContainerInfo]:
    """The containers of ``listing`` that carry every one of ``labels``."""
    return [c for c in listing if labels_match(c.labels, labels)]


def _instance(info: ContainerInfo, address: str | None) -> Instance:
    labels: Mapping[str, str] = info.labels
    return Instance(
        name=info.name,
        role=labels.get(LABEL + "role", ""),
        release=_int(labels.get(LABEL + "release")),
        index=_int(labels.get(LABEL + "index")),
        image_id=labels.get(LABEL + "image-id") or info.image_id,
        config_hash=labels.get(LABEL + "config-hash", ""),
        state=info.state,
        address=address,
        finished=info.finished,
        created=info.created,
        version=labels.get(LABEL + "image-version", ""),
    )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
