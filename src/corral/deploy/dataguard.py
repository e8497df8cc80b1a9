"""The data guard's part of a plan: pure, like the planner that calls it.

Nothing in a plan deletes a volume. What the guard adds to a plan is what the operator
must know or approve about data:

- *retained* volumes: recorded (or present in the engine) but mounted by no role the plan
  deploys; a removed volume, a renamed or deleted role leave them, with their data.
- *concerns*: changes that keep the data but may cut it off from its role, which a deploy
  makes only once the operator approved them (``--yes``, or yes on a terminal): a role's
  volume mounted into another role, a role with data shrunk to 0 replicas or removed.
- *notes*: what changes but needs no approval (a volume mounted at a new path).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.deploy.desired import Desired
from corral.deploy.scope import Scope


@dataclass(frozen=True)
class KnownVolume:
    """A volume as the state records it: the role and spec name that own it, its path."""

    role: str
    volume: str
    path: str


@dataclass(frozen=True)
class RetainedVolume:
    """A volume no deployed role mounts: kept, with its data, and why no role does."""

    name: str
    role: str  # its owner ("" when the state has no record of it)
    volume: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"volume": self.name, "role": self.role, "name": self.volume, "reason": self.reason}


@dataclass(frozen=True)
class DataGuard:
    """What a plan says about data (see the module docstring)."""

    retained: tuple[RetainedVolume, ...] = ()
    concerns: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def guard(
    scope: Scope,
    desired: Desired,
    known: Mapping[str, KnownVolume],
    present: Collection[str],
    running: Mapping[str, int],
    untouched: Collection[str] = (),
) -> DataGuard:
    """The data guard's findings for a plan that deploys ``desired``.

    Args:
        known: the fleet's recorded (not deleted) volumes, by engine name.
        present: the engine's volumes of the scope, by name.
        running: per role, how many of its instances run now (removed roles included).
        untouched: roles a partial deploy leaves alone: their volumes are theirs still.
    """
    mounted = {  # a restored copy is mounted under its own engine name (volume_names)
        rr.engine_volume(scope, v): (role, v) for role, rr in desired.items() for v in rr.volumes
    }
    retained = _retained(scope, desired, known, present, mounted, untouched)
    concerns = _foreign_mounts(known, mounted) + _cut_off(scope, desired, known, running, untouched)
    notes = [
        f"volume {name} of role {role} moves from {known[name].path} to {path}; its data stays"
        for role, rr in sorted(desired.items())
        for v, path in sorted(rr.volumes.items())
        if (name := rr.engine_volume(scope, v)) in known
        and known[name].role == role
        and known[name].path != path
    ]
    return DataGuard(tuple(retained), tuple(concerns), tuple(notes))


def _retained(
    scope: Scope,
    desired: Desired,
    known: Mapping[str, KnownVolume],
    present: Collection[str],
    mounted: Mapping[str, tuple[str, str]],
    untouched: Collection[str],
) -> list[RetainedVolume]:
    found = []
    for name in sorted(set(known) | set(present)):
        if name in mounted:
            continue
        owner = known.get(name)
        if owner is None:
            if untouched:  # it may be an untouched role's: the state cannot say
                continue
            found.append(RetainedVolume(name, "", "", "not recorded, and no role mounts it"))
            continue
        if owner.role in untouched:
            continue
        if owner.role not in desired:
            why = f"role {owner.role} is no longer deployed"
        elif owner.volume in desired[owner.role].volumes:
            now_on = desired[owner.role].engine_volume(scope, owner.volume)
            why = f"role {owner.role} now mounts {now_on} as its volume {owner.volume}"
        else:
            why = f"role {owner.role} no longer declares volume {owner.volume}"
        found.append(RetainedVolume(name, owner.role, owner.volume, why))
    return found


def _foreign_mounts(
    known: Mapping[str, KnownVolume], mounted: Mapping[str, tuple[str, str]]
) -> list[str]:
    """A role about to mount a volume the state records as another role's (or another of
    its volumes): engine names are ``<fleet>-<role>-<volume>``, so a new role ``a-b``
    with volume ``c`` would get the data of role ``a``'s volume ``b-c``."""
    return [
        f"role {role} would mount volume {name} as its {volume!r}, but it holds the data of "
        f"role {owner.role}'s volume {owner.volume!r}"
        for name, (role, volume) in sorted(mounted.items())
        if (owner := known.get(name)) is not None and (owner.role, owner.volume) != (role, volume)
    ]


def _cut_off(
    scope: Scope,
    desired: Desired,
    known: Mapping[str, KnownVolume],
    running: Mapping[str, int],
    untouched: Collection[str],
) -> list[str]:
    """Roles with data whose running instances the plan takes to none."""
    concerns = []
    for role, count in sorted(running.items()):
        if count == 0 or role in untouched:
            continue
        rr = desired.get(role)
        if rr is not None and rr.replicas > 0:
            continue
        data = _data_of(scope, role, known, desired)
        if not data:
            continue
        listed = ", ".join(data)
        if rr is None:
            concerns.append(
                f"role {role} is no longer deployed: its {count} instance(s) stop and its "
                f"data on {listed} is retained, served by nothing"
            )
        else:
            concerns.append(
                f"role {role} would run 0 replicas: its {count} instance(s) stop and its "
                f"data on {listed} is served by nothing"
            )
    return concerns


def _data_of(
    scope: Scope, role: str, known: Mapping[str, KnownVolume], desired: Desired
) -> Sequence[str]:
    """The volumes holding ``role``'s data: recorded as its, or declared by it."""
    names = {name for name, k in known.items() if k.role == role}
    rr = desired.get(role)
    if rr is not None:
        names |= {rr.engine_volume(scope, v) for v in rr.volumes}
    return sorted(names)
