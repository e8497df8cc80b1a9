"""Which state owns a fleet: the one that holds the id its engine objects carry.

A fleet's first deploy gives it an id (:meth:`corral.state.State.claim_fleet`), and every
engine object corral creates for it is labelled with that id and the state that made it
(:meth:`corral.deploy.scope.Scope.marks`). Before changing the fleet, :func:`check`
compares the live objects with the state in hand and refuses, naming the owner, when:

- an object carries another id (or the state holds none): another state deployed the
  fleet, and this one knows nothing of its releases;
- an instance carries no id and the state has no record of it: an earlier corral made
  it from a state this one is not; removing it as "not in the spec" would be a guess.

Objects an earlier corral made without an id are accepted when the state has them on
record, and the state then adopts the fleet (it gets an id, new objects carry it). The
check reads one engine listing and two rows; it never changes the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from corral.deploy.context import Context
from corral.deploy.observe import KIND_INSTANCE, list_scope
from corral.deploy.scope import FLEET_ID, LABEL, STATE, Scope
from corral.engines.base import ContainerInfo
from corral.errors import OwnershipError
from corral.state.location import ENV_STATE

SHOWN = 4  # instance names an error lists


def new_fleet_id() -> str:
    """A fresh fleet id: random, so two hosts never make the same one."""
    return uuid.uuid4().hex


def live_containers(ctx: Context) -> list[ContainerInfo]:
    """Every live container of the fleet (instances, edge, probes), whoever made it."""
    return list_scope(ctx.engine, Scope(ctx.scope.fleet))


def check(
    ctx: Context, claim: bool = False, live: Sequence[ContainerInfo] | None = None
) -> str | None:
    """Refuse unless the state in ``ctx`` owns the fleet; the fleet's id afterwards.

    Args:
        claim: give the fleet an id if the state holds none yet (a deploy: the first
            one, or the first since corral kept ids); from then on ``ctx`` creates
            objects marked with it.
        live: the fleet's live containers, from a listing the caller made anyway (a
            plan's); None: list them now.

    Raises:
        OwnershipError: the fleet's objects belong to another state (exit code 5).
    """
    fleet = ctx.scope.fleet
    stored = ctx.state.fleet_id(fleet)
    live = live_containers(ctx) if live is None else live
    foreign = [c for c in live if c.labels.get(FLEET_ID) not in (None, "", stored)]
    if foreign:
        raise _foreign(ctx, stored, foreign)
    unknown = _unaccounted(ctx, live)
    if unknown:
        raise _unknown(ctx, unknown)
    if stored is None and claim:
        origin = "adopt" if live else "deploy"
        stored = ctx.state.claim_fleet(fleet, new_fleet_id(), origin)
        details = {"fleet_id": stored, "origin": origin, "state": ctx.scope.state}
        ctx.state.record_audit(fleet, "fleet-id", "fleet", "ok", details)
    ctx.own(stored)
    return stored


def _unaccounted(ctx: Context, live: Sequence[ContainerInfo]) -> list[str]:
    """Instances with no fleet id that the state has no record of."""
    bare = [
        c.name
        for c in live
        if not c.labels.get(FLEET_ID) and c.labels.get(LABEL + "kind") == KIND_INSTANCE
    ]
    if not bare:
        return []
    known = {i.name for i in ctx.state.instances(ctx.scope.fleet)}
    return [name for name in bare if name not in known]


def how_to_point(owner: str | None) -> str:
    """How to point corral at the state ``owner`` (as its labels name it), in words."""
    recover = (
        "if that state is lost, `corral state recover` (with an empty state) rebuilds one "
        "from the fleet's labels"
    )
    if owner:
        return (
            f"point corral at it with {ENV_STATE}={owner} (or 'state: {owner}' in the "
            f"spec); {recover}"
        )
    return (
        f"find the state that deployed it (the one whose `corral history` shows these "
        f"instances) and point corral at it with {ENV_STATE}=... (or 'state:' in the spec); "
        f"{recover}"
    )


def _names(containers: Sequence[str]) -> str:
    more = len(containers) - SHOWN
    return ", ".join(containers[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def _foreign(ctx: Context, stored: str | None, foreign: Sequence[ContainerInfo]) -> OwnershipError:
    fleet_id = foreign[0].labels[FLEET_ID]
    owners = sorted({c.labels.get(STATE) or "" for c in foreign} - {""})
    owner = owners[0] if owners else None
    names = [c.name for c in foreign]
    mine = f"fleet id {stored}" if stored else "no fleet id"
    made_by = f"made by the state {owner}" if owner else "made by a state they do not name"
    return OwnershipError(
        f"fleet {ctx.scope.fleet} belongs to another state: its containers "
        f"({_names(names)}) carry fleet id {fleet_id}, {made_by}; this corral's state "
        f"{ctx.scope.state} holds {mine}. Nothing was changed. To change this fleet, "
        f"{how_to_point(owner)}",
        fleet_id=fleet_id,
        owner=owner,
        state=ctx.scope.state,
        instances=names,
    )


def _unknown(ctx: Context, names: Sequence[str]) -> OwnershipError:
    return OwnershipError(
        f"fleet {ctx.scope.fleet} runs instances this corral's state {ctx.scope.state} has "
        f"no record of ({_names(names)}): an earlier corral made them from another state. "
        f"Nothing was changed, and corral never removes an instance it cannot account "
        f"for. To change this fleet, {how_to_point(None)}",
        state=ctx.scope.state,
        instances=list(names),
    )
