"""Named steps and the pure generators that order them into batches, per strategy.

A plan's role is carried out as a sequence of *batches*; a batch is a tuple of ``Step``
values. The executor runs batches in order and the steps of a batch as it says in
``deploy/apply.py`` (starts side by side, anything else in order). Everything that decides
*what* happens and *when* (how many instances start at once, which old ones go first,
what waits for what) is decided here, from plain values: these functions never see an
engine, an edge or the state, so they are tested by comparing lists.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DRAIN_ANYWHERE = 5.0  # an instance of a role not behind the edge: drained in case it still is
# A dead or stopped instance, or a server no running instance answers for. Its requests
# are connections still waiting on a vanished address: the drain outlasts the edge's
# connect timeout (2 s), so HAProxy retries them on another server instead of the drain
# cutting them (a killed instance cost hundreds of failed requests under chaos that way).
DRAIN_LEFTOVER = 2.5


class Action(StrEnum):
    """Everything the executor does to a role, and nothing else."""

    KEEP = "keep"  # a current instance stays as it is (nothing to do)
    CREATE_VOLUME = "create-volume"  # ``instance`` names the volume
    START = "start"  # a new instance, named by the plan
    RESTART = "restart"  # a stand-by instance corral stopped on purpose starts again
    CHECK = "check"  # the instance passes, from outside, the check a new edge will make
    ADD = "add"  # a running instance the edge lacks joins it (requests once its check passes)
    ADMIT = "admit"  # a server the edge holds (drained, or started held) takes requests
    DRAIN = "drain"  # the edge stops sending it requests, in-flight ones finish, it leaves
    STOP = "stop"  # the instance stops; its container stays (stand-by, or removed later)
    WAIT_GONE = "wait-gone"  # until the stopped instance holds no mount (single-writer volumes)
    REMOVE = "remove"  # the container goes (stopped gracefully first)
    BACKUP = "backup"  # before anything changes: a snapshot of ``instance``, a volume's name


@dataclass(frozen=True)
class Change:
    """An instance and why it goes."""

    instance: str
    reason: str


@dataclass(frozen=True)
class Step:
    """One thing the executor does to one instance (or volume) of one role.

    ``record`` is the outcome the journal records when the step retires the instance
    ("" records nothing: its retirement was recorded by an earlier step). ``hold``: a start
    whose instance is checked by the edge but takes no request until an ``admit``.
    ``timeout``: how long a drain waits for in-flight requests, or an ``add`` for the edge's
    check. ``background``: a removal of a drained instance that may finish while later
    batches run (the role waits for it before it ends). ``always``: runs even when an
    earlier step of the role failed.
    """

    action: Action
    role: str
    instance: str
    version: str = ""
    reason: str = ""
    record: str = ""
    hold: bool = False
    timeout: float = 0.0
    background: bool = False
    always: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON: ``action``, ``role``, ``instance`` always, the rest when set."""
        data: dict[str, Any] = {
            "action": self.action.value,
            "role": self.role,
            "instance": self.instance,
        }
        optional = {
            "version": self.version,
            "reason": self.reason,
            "record": self.record,
            "hold": self.hold,
            "timeout": self.timeout,
            "background": self.background,
            "always": self.always,
        }
        data.update({k: v for k, v in optional.items() if v})
        return data


Batch = tuple[Step, ...]


@dataclass(frozen=True)
class Replacement:
    """What a role's strategy orders: the instances that stay, start, restart and go.

    ``idle``: old instances the edge sends no requests to now (a killed deploy drained
    them or never admitted them); they cost no capacity, so they go first.
    """

    role: str
    version: str
    public: bool
    replicas: int
    surge: int
    unavailable: int
    drain: float
    keep: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    stop: tuple[Change, ...] = ()
    idle: frozenset[str] = frozenset()


# -- pieces ---------------------------------------------------------------------------------


def _launch(r: Replacement, news: Sequence[str], restarts: Sequence[str], hold: bool) -> Batch:
    """Start ``news`` and restart ``restarts`` side by side (new ones first, as listed)."""
    starts = [Step(Action.START, r.role, n, r.version, "new instance", hold=hold) for n in news]
    starts += [
        Step(Action.RESTART, r.role, n, r.version, "stand-by instance", hold=hold) for n in restarts
    ]
    return tuple(starts)


def _drain(r: Replacement, change: Change) -> Step:
    """Drain before stopping: a public role's own drain time, any other role in case."""
    timeout = r.drain if r.public else DRAIN_ANYWHERE
    return Step(Action.DRAIN, r.role, change.instance, reason=change.reason, timeout=timeout)


def retire_steps(r: Replacement, change: Change, record: str, background: bool) -> Batch:
    """Drain an instance, then remove it (in the background, once drained, if allowed)."""
    remove = Step(
        Action.REMOVE, r.role, change.instance, record=record, background=background and r.public
    )
    return (_drain(r, change), remove)


def backup_steps(due: Mapping[str, Sequence[str]], replaced: Collection[str]) -> Batch:
    """The pre-deploy backups: each due volume of a role whose running instances go.

    ``due`` maps a role to its volumes with no verified snapshot young enough; a role
    whose instances all stay (or that starts its first ones) loses nothing to back up.
    """
    return tuple(
        Step(Action.BACKUP, role, volume, reason="before its instances are replaced")
        for role in sorted(replaced)
        for volume in due.get(role, ())
    )


def keep_steps(role: str, version: str, names: Sequence[str]) -> Batch:
    """The no-op steps that say which current instances stay."""
    return tuple(Step(Action.KEEP, role, n, version, "current") for n in names)


def cleanup_steps(role: str, public: bool, changes: Sequence[Change]) -> Batch:
    """Remove instances that are not running and no longer wanted (out of the edge first)."""
    steps: list[Step] = []
    for change in changes:
        if public:
            steps.append(Step(Action.DRAIN, role, change.instance, timeout=DRAIN_LEFTOVER))
        steps.append(
            Step(Action.REMOVE, role, change.instance, reason=change.reason, record="cleaned-up")
        )
    return tuple(steps)


@dataclass(frozen=True)
class EdgeServer:
    """One server of a role's backend as the edge shows it."""

    name: str
    admin: str  # ready | drain | maint
    healthy: bool


def edge_sync(
    role: str,
    keep: Sequence[str],
    known: Collection[str],
    present: Sequence[EdgeServer],
    add_timeout: float,
) -> list[Batch]:
    """Make the edge agree with the plan before anything changes.

    Kept instances must take traffic: after an edge restart they are absent, after a
    killed deploy one may be left drained. A server no planned instance answers for (its
    container gone with a killed deploy) goes: its address may be given to another one.
    """
    servers = {s.name: s for s in present}
    strays = tuple(
        Step(Action.DRAIN, role, name, reason="no instance answers for it", timeout=DRAIN_LEFTOVER)
        for name in sorted(set(servers) - set(known))
    )
    admits: list[Step] = []
    for name in keep:
        server = servers.get(name)
        if server is None:
            admits.append(
                Step(Action.ADD, role, name, reason="not in the edge", timeout=add_timeout)
            )
        elif server.admin != "ready":
            admits.append(Step(Action.ADMIT, role, name, reason=f"left {server.admin} in the edge"))
    return [b for b in (strays, tuple(admits)) if b]


# -- strategies -----------------------------------------------------------------------------


def rolling(r: Replacement) -> list[Batch]:
    """Start new before stopping old, within ``surge`` and ``unavailable``.

    Idle old instances go first (they cost no capacity; counting them as serving could
    retire the last instance that really serves). Then, while there is room to surge, a
    batch starts; after it, as many old ones go as keep ``replicas - unavailable`` serving
    (at most the batch plus ``unavailable`` while starts remain). With no room to surge,
    ``unavailable`` old ones (at least one) go first.
    """
    idle = [c for c in r.stop if c.instance in r.idle]
    olds = [c for c in r.stop if c.instance not in r.idle]
    batches = [_retire_batch(r, idle)] if idle else []
    news, restarts = list(r.new), list(r.restart)
    to_start = len(news) + len(restarts)
    serving = len(r.keep) + len(olds)
    while to_start or olds:
        room = r.replicas + r.surge - serving
        size = min(to_start, max(room, 0))
        if size == 0 and to_start and olds:  # no room to surge: free some first
            step = max(1, r.unavailable)
            freed, olds = olds[:step], olds[step:]
            batches.append(_retire_batch(r, freed))
            serving -= len(freed)
            continue
        size = size or to_start  # nothing left to free: start the rest
        taken, restarts = restarts[:size], restarts[size:]
        fresh, news = news[: size - len(taken)], news[size - len(taken) :]
        if size:
            batches.append(_launch(r, fresh, taken, hold=False))
        serving += size
        to_start -= size
        excess = min(len(olds), max(0, serving - (r.replicas - r.unavailable)))
        if to_start and excess > size + r.unavailable:
            excess = size + r.unavailable
        retiring, olds = olds[:excess], olds[excess:]
        if retiring:
            batches.append(_retire_batch(r, retiring))
        serving -= len(retiring)
    return batches


def _retire_batch(r: Replacement, changes: Sequence[Change]) -> Batch:
    return tuple(s for c in changes for s in retire_steps(r, c, "replaced", background=True))


def blue_green(r: Replacement) -> list[Batch]:
    """Bring the whole new set up beside the old one (held), then switch traffic at once;
    the old set stops and stays as stand-bys for an instant switch back.

    The switch batch holds the new set's ``admit`` and the old set's ``drain`` steps: the
    executor sends them to the edge in one round trip.
    """
    if not (r.new or r.restart):
        return rolling(r)  # nothing to switch to: fewer replicas, or only leftovers to go
    launch = _launch(r, r.new, r.restart, hold=r.public)
    batches = [launch]
    drains = tuple(_drain(r, c) for c in r.stop)
    if r.public:
        admits = tuple(Step(Action.ADMIT, r.role, s.instance, r.version, "switch") for s in launch)
        batches.append(admits + drains)
    elif drains:
        batches.append(drains)
    stops = tuple(Step(Action.STOP, r.role, c.instance, record="standby") for c in r.stop)
    return [b for b in (*batches, stops) if b]


def stop_first(r: Replacement, standby: bool) -> list[Batch]:
    """Old instances stop, and are seen stopped, before new ones start one at a time: two
    instances never mount the role's single-writer volumes at once.

    With ``standby`` (a blue-green role) the old instances stay stopped as stand-bys;
    otherwise they are removed at the end, whether the new ones came up or not (only
    stopped first: removing a container would lengthen the outage).
    """
    record = "standby" if standby else "replaced"
    stops: list[Step] = []
    for change in r.stop:
        stops += [_drain(r, change), Step(Action.STOP, r.role, change.instance, record=record)]
    batches: list[Batch] = [tuple(stops)] if stops else []
    gone = tuple(Step(Action.WAIT_GONE, r.role, c.instance) for c in r.stop)
    batches += [gone] if gone else []
    batches += [_launch(r, (), (name,), hold=False) for name in r.restart]
    batches += [_launch(r, (name,), (), hold=False) for name in r.new]
    if not standby and r.stop:
        batches.append(tuple(Step(Action.REMOVE, r.role, c.instance, always=True) for c in r.stop))
    return batches


def canary(r: Replacement) -> list[Batch]:
    """Start a canary's new instances beside the old ones, which all keep serving; a
    public role's are held (checked by the edge, no request) until the canary watch lets
    its bounded share of requests in. Nothing stops: that is the rest of the release's."""
    return [_launch(r, r.new, (), hold=r.public)] if r.new else []
