"""Whether a release really runs: every role at its replicas, for a settling time.

A deploy checks each new instance once, when it starts; an instance can die a moment
later (killed, out of memory, its database gone). Before a release counts as live, every
role must have ``replicas`` instances of the release's image and configuration running,
and a public role's must be up in the edge, for the longest ``deploy.settle`` of the roles
that changed. Each look is one engine listing of the fleet plus one edge read per public
role, whatever the fleet's size: no instance is polled on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.observe import KIND_INSTANCE, LABEL, pick
from corral.engines.base import ContainerInfo
from corral.errors import CorralError, DeployError

TICK = 0.5  # seconds between two looks while settling
LOG_LINES = 20  # of each instance that died, kept with the failure


@dataclass(frozen=True)
class Shortfall:
    """A role with fewer serving instances than its replicas, and the ones that dropped out."""

    role: str
    serving: int
    replicas: int
    down: tuple[str, ...]  # "web-r2-1 exited with code 137", "web-r2-2 is down in the edge"
    names: tuple[str, ...]  # the instances behind ``down``, for their logs


def shortfalls(
    desired: Desired,
    listing: Iterable[ContainerInfo],
    edge_up: Mapping[str, set[str]],
) -> list[Shortfall]:
    """The roles of ``desired`` that do not have their replicas serving now.

    An instance serves when it runs the release's image and configuration, is running,
    and, for a role in ``edge_up`` (public roles), is among the servers the edge has up.
    """
    instances = pick(listing, {LABEL + "kind": KIND_INSTANCE})
    found = []
    for name, rr in sorted(desired.items()):
        mine = [c for c in instances if c.labels.get(LABEL + "role") == name and _matches(c, rr)]
        up = edge_up.get(name)
        serving = [c for c in mine if c.state == "running" and (up is None or c.name in up)]
        if len(serving) >= rr.replicas:
            continue
        dropped = [c for c in mine if c not in serving]
        found.append(
            Shortfall(
                name,
                len(serving),
                rr.replicas,
                tuple(_why(c, up) for c in dropped),
                tuple(c.name for c in dropped),
            )
        )
    return found


def _matches(info: ContainerInfo, rr: RoleRelease) -> bool:
    return info.image_id == rr.image_id and info.labels.get(LABEL + "config-hash") == (
        rr.config_hash
    )


def _why(info: ContainerInfo, up: set[str] | None) -> str:
    if info.state != "running":
        code = "" if info.exit_code is None else f" with code {info.exit_code}"
        return f"{info.name} {'exited' if info.state == 'exited' else info.state}{code}"
    assert up is not None and info.name not in up
    return f"{info.name} is down in the edge (its health check fails)"


def settle_time(desired: Desired, changed: Iterable[str]) -> float:
    """The longest ``deploy.settle`` of the roles that changed (0 when none did)."""
    return max((desired[name].deploy.settle for name in changed if name in desired), default=0.0)


@dataclass(frozen=True)
class Watch:
    """What settling needs from the engine and the edge: one cheap read each."""

    listing: Callable[[], list[ContainerInfo]]
    edge_up: Callable[[], dict[str, set[str]]]
    logs: Callable[[str], str]


def settle(desired: Desired, seconds: float, watch: Watch) -> None:
    """Look at the fleet until ``seconds`` passed (at least once); DeployError on a shortfall.

    Raises:
        DeployError: a role had fewer serving instances than its replicas; its details
            name each role, the instances that dropped out and their last log lines.
    """
    deadline = time.monotonic() + seconds
    while True:
        short = shortfalls(desired, watch.listing(), watch.edge_up())
        if short:
            raise shortfall_error(short, watch.logs)
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(TICK, left))


def shortfall_error(short: Iterable[Shortfall], logs: Callable[[str], str]) -> DeployError:
    """One DeployError for every role below its replicas, with the dropped instances' logs."""
    failures = [
        DeployError(
            f"role {s.role}: only {s.serving} of {s.replicas} instances serve"
            + (f" ({'; '.join(s.down)})" if s.down else ""),
            role=s.role,
            log=[f"{name}: {line}" for name in s.names for line in _tail(logs, name)],
        )
        for s in short
    ]
    return DeployError.of_roles(failures)


def _tail(logs: Callable[[str], str], name: str) -> list[str]:
    try:
        return logs(name).splitlines()[-LOG_LINES:]
    except CorralError:  # gone already: the reason above still stands
        return []
