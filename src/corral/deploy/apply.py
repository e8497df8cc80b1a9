"""The executor: the only code that changes a running fleet, and only by following a plan.

Its inputs are a plan (``plan_deploy``, ``plan_edge_replace``) and the engine (with the edge,
the journal and the secrets' values). It carries out each role's batches of named steps in
order and decides nothing of its own: which instances start, under which names, in which
batches, and which old ones go first are the plan's (see ``deploy/steps.py``).

Instances are never changed in place. New ones start, pass their health check from outside,
join the edge; only then are old ones drained (no new requests, in-flight ones finish) and
removed. Roles deploy wave by wave (``after``), roles of one wave in parallel.

A role with a single-writer volume is the exception (the plan says ``stop-first``): its
old instance is drained, stopped and seen gone before a new one starts. Whatever the plan
says, no instance starts while another running container of the fleet mounts one of its
single-writer volumes: the executor asks the engine first, and refuses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from corral.deploy.desired import RoleRelease
from corral.deploy.health import CommandProbe, Probe, wait_healthy
from corral.deploy.instances import container_spec, probe_spec, remove_probes
from corral.deploy.plan import Plan, RolePlan, edge_timeout
from corral.deploy.scope import LABEL, Scope
from corral.deploy.secrets import Hasher
from corral.deploy.steps import Action, Step
from corral.edge.container import Edge, check_from_outside
from corral.engines.base import ContainerInfo, Engine
from corral.errors import CorralError, DeployError, EngineError, LockedError, UsageError
from corral.progress import Progress
from corral.spec.model import CommandHealth
from corral.state import State


class Journal:
    """Serialises the executor's threads' writes to the state database."""

    def __init__(self, state: State, fleet: str) -> None:
        self.state = state
        self.fleet = fleet
        self._lock = threading.Lock()

    def check(self) -> None:
        """Before each step: raise LockedError if this process lost the deploy lock (it
        stalled past its lease and another took it): it must never act without it."""
        self.state.check_held("deploy")

    def started(self, name: str, role: str, release: int, image_id: str) -> None:
        with self._lock:
            self.state.record_instance(self.fleet, name, role, release, image_id)

    def retired(self, name: str, outcome: str) -> None:
        with self._lock:
            self.state.retire_instance(self.fleet, name, outcome)

    def audit(self, action: str, target: str, outcome: str, details: Mapping[str, Any]) -> None:
        with self._lock:
            self.state.record_audit(self.fleet, action, target, outcome, details)

    def replaced(self, role: str, release: int, unavailable_s: float) -> None:
        """A stop-first replacement left ``role`` unavailable for ``unavailable_s``."""
        with self._lock:
            self.state.record_replacement(self.fleet, role, release, unavailable_s)

    def volume_created(self, name: str, role: str, volume: str, path: str, release: int) -> None:
        """``role``'s volume ``volume`` exists as engine volume ``name``: recorded, so the
        state (not the spec) knows it holds data from now on."""
        with self._lock:
            self.state.record_volume(self.fleet, name, role, volume, path, release)


class ScratchJournal(Journal):
    """For throwaway test environments: nothing they do belongs in the fleet's records."""

    def __init__(self) -> None:
        pass

    def check(self) -> None:
        pass  # a test environment is its own run's alone: no lock guards it

    def started(self, name: str, role: str, release: int, image_id: str) -> None:
        pass

    def retired(self, name: str, outcome: str) -> None:
        pass

    def audit(self, action: str, target: str, outcome: str, details: Mapping[str, Any]) -> None:
        pass

    def replaced(self, role: str, release: int, unavailable_s: float) -> None:
        pass

    def volume_created(self, name: str, role: str, volume: str, path: str, release: int) -> None:
        pass  # a test environment's volumes are thrown away with it


# Carries out one pre-deploy backup step (``Action.BACKUP``): corral.backup provides it.
BackupRunner = Callable[[Step], None]


def run_backups(plan: Plan, backup: BackupRunner | None, progress: Progress) -> None:
    """The plan's pre-deploy backups, in order, before anything of the fleet changes; the
    first that fails raises (a BackupError) and stops the deploy.

    Raises:
        UsageError: the plan backs up a volume and no ``backup`` was given.
    """
    if plan.backup_steps and backup is None:
        raise UsageError(f"the plan backs up {', '.join(plan.backs_up)} and no backup was set up")
    for step in plan.backup_steps:
        assert backup is not None
        progress.step(step.role, f"backing up volume {step.instance} ({step.reason})")
        backup(step)


LAUNCHES = (Action.START, Action.RESTART)
RETIRING = {Action.DRAIN, Action.STOP, Action.REMOVE}


@dataclass
class Executor:
    """Carries a plan's steps out on an engine (and its edge), journalling each.

    Its only inputs are the plan and what acts: the engine, the edge, the journal, and
    the secrets' values (never part of a plan). It decides nothing the plan does not say:
    which instances start, in which batches, what goes first all come from the plan.
    """

    engine: Engine
    scope: Scope
    journal: Journal
    progress: Progress
    edge: Edge | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    key: Hasher | None = None  # labels say which secret values an instance got
    gone_timeout: float = 60.0  # how long a stopped instance may take to let go of its volumes
    _count_lock: threading.Lock = field(default_factory=threading.Lock)
    _claim_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _distributed: dict[str, str] = field(default_factory=dict)  # image id -> what to start
    _distribute_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the whole plan -----------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Carry out ``plan``; raise DeployError naming every role that failed.

        Roles that failed are left half-way (old and new instances serving side by side);
        the caller decides to roll them back.
        """
        if plan.ensure_network:
            self.engine.ensure_network(self.scope.network, self.scope.marks("network"))
        for name in remove_probes(self.engine, self.scope):
            self.progress.step("fleet", f"removed {name}, a health probe a killed deploy left")
        self._apply_edge(plan)
        for step in plan.orphan_steps:
            self._do(None, plan.release, step, None)
        for wave in plan.waves:
            self._apply_wave([plan.role(name) for name in wave], plan.release)

    def _apply_edge(self, plan: Plan) -> None:
        edge, image = self.edge, plan.edge.image
        if edge is None or not image:
            return
        if plan.edge.action == "resume":
            self.progress.step("edge", f"starting the edge's container again ({plan.edge.reason})")
            try:
                edge.resume(plan.desired, image)
                return
            except EngineError as exc:  # then a new pod, as for an edge that is gone
                self.progress.step("edge", f"it did not come back ({exc.message}): a new pod")
        if plan.edge.action in ("create", "start", "resume"):
            self.progress.step("edge", f"starting the edge ({plan.edge.reason})")
            edge.start(plan.desired, image)
        elif plan.edge.action == "replace":  # a new public role: a new pod, first
            self.replace_edge(plan)
            details = {"image": image, "how": "replace", "release": plan.release, "first": True}
            self.journal.audit("edge-replace", "edge", "ok", details)
        elif plan.edge.action == "reload":
            # Before the roles: new instances are added to backends checked as they will be
            # checked; the old ones keep their own paths (or, checked another way, no check).
            self.progress.step("edge", f"reloading the edge's configuration ({plan.edge.reason})")
            try:
                edge.reload(plan.desired, image)
            except CorralError as exc:  # a failed deploy, to be undone like a role's failure
                raise DeployError(f"the edge: {exc.message}", reason=exc.message) from exc

    def replace_edge(self, plan: Plan) -> None:
        """Carry out ``corral edge replace``'s plan (``plan_edge_replace``).

        Raises:
            GateError: an instance fails the new edge's check; nothing was changed.
            EngineError: the edge refused (a failed reload leaves the old configuration),
                or the new edge does not see every instance healthy.
        """
        edge, desired, image = self.edge, plan.desired, plan.edge.image
        assert edge is not None and image, "an edge replacement needs the edge and its image"
        if plan.edge.action == "reload":
            self.progress.step("edge", "reloading the edge's configuration in place")
            edge.reload(desired, image)
            return
        targets = [
            (desired[s.role], s.instance, self._address(self._inspect(s.instance)))
            for s in plan.edge.checks
        ]
        check_from_outside(targets)
        if plan.edge.action == "hand-over":
            self.progress.step("edge", "a new edge container takes over the open ports")
            edge.hand_over(desired, image)
            return
        self.progress.step("edge", "replacing the edge's pod (its ports refuse connections ~1 s)")
        self.engine.ensure_network(self.scope.network, self.scope.marks("network"))
        edge.start(desired, image)
        failed: list[str] = []
        for step in plan.edge.servers:
            try:
                self._do(desired[step.role], plan.release, step, None)
            except CorralError as exc:
                failed.append(f"{step.instance}: {exc.message}")
        if failed:
            raise EngineError(
                "the new edge does not see every instance healthy: " + "; ".join(failed)
            )

    def _apply_wave(self, role_plans: Sequence[RolePlan], release: int) -> None:
        errors: list[DeployError] = []
        with ThreadPoolExecutor(max_workers=max(1, len(role_plans))) as pool:
            futures = [pool.submit(self.apply_role, rp, release) for rp in role_plans]
            for rp, future in zip(role_plans, futures, strict=True):
                exc = future.exception()
                if isinstance(exc, LockedError):  # not a role's failure: nothing may be undone
                    raise exc
                if isinstance(exc, DeployError):
                    errors.append(exc.for_role(rp.role))
                elif isinstance(exc, CorralError):
                    errors.append(
                        DeployError(
                            f"role {rp.role}: {exc.message}",
                            role=rp.role,
                            reason=exc.message,
                            cause=exc.kind,  # a state that cannot record a step is not a role's
                        )
                    )
                elif exc is not None:
                    raise exc
        if errors:
            raise DeployError.of_roles(errors)

    # -- one role -----------------------------------------------------------------------
    def apply_role(self, rp: RolePlan, release: int) -> None:
        """Carry out one role's batches in order; see ``_run_batch`` for one batch.

        A failed step fails the role: later batches are not run, except steps marked
        ``always`` (a stop-first role's old instances are removed whatever happened).
        Removals left running in the background are awaited before the role ends.
        """
        rr = rp.release
        assert rr is not None, "a role plan from plan_deploy says what its instances run"
        run = _RoleRun(rp, rr, release)
        with ThreadPoolExecutor(max_workers=4) as background:
            try:
                for batch in rp.batches:
                    run.pending += self._run_batch(run, batch, background)
            except BaseException:
                self._finish_always(run)
                raise
        for future in run.pending:
            future.result()  # a removal that failed fails the role
        if rp.interrupts and run.began is not None and run.served is not None:
            seconds = run.served - run.began
            self.journal.replaced(rr.role, release, seconds)
            self.progress.step(rr.role, f"was unavailable for {seconds:.2f} s (stop-first)")

    def _finish_always(self, run: _RoleRun) -> None:
        for step in run.plan.steps:
            if step.always and step not in run.done:
                self._do(run.release_spec, run.release, step, None)

    def _run_batch(
        self, run: _RoleRun, batch: Sequence[Step], background: ThreadPoolExecutor
    ) -> list[Future[None]]:
        """Starts of a batch run side by side; any other steps in order. A batch with
        both ``admit`` and ``drain`` steps is a switch: the edge gets them in one round trip
        (the new set takes requests as the old one stops taking them), then each drain
        waits for its in-flight requests."""
        if batch and all(s.action in LAUNCHES for s in batch):
            self._launch_many(run, batch)
            run.done.update(batch)
            run.served = time.monotonic()
            return []
        run.switched = self._is_switch(run, batch)
        if run.switched:
            self._switch(run, batch)
        if run.began is None and any(s.action == Action.STOP for s in batch):
            run.began = time.monotonic()  # a stop-first role's outage begins with its drains
        pending: list[Future[None]] = []
        for step in batch:
            if step.action == Action.ADMIT and run.switched:
                pass  # the switch admitted it
            elif step.action in LAUNCHES:
                self._launch_many(run, [step])
                run.served = time.monotonic()
            else:
                future = self._do(run.release_spec, run.release, step, background)
                pending += [future] if future is not None else []
            run.done.add(step)
        return pending

    def _is_switch(self, run: _RoleRun, batch: Sequence[Step]) -> bool:
        actions = {s.action for s in batch}
        return (
            self.edge is not None
            and run.release_spec.public is not None
            and {Action.ADMIT, Action.DRAIN} <= actions
        )

    def _create_volume(self, rr: RoleRelease | None, release: int, step: Step) -> None:
        """Create the role's volume (an existing one keeps its data) and record it."""
        role, name = step.role, step.instance
        declared = (
            {rr.engine_volume(self.scope, v): (v, p) for v, p in rr.volumes.items()} if rr else {}
        )
        volume, path = declared.get(name, ("", ""))
        self.progress.step(role, f"creating volume {name}")
        labels = {**self.scope.marks("volume"), LABEL + "role": role}  # fleet id and state
        self.engine.ensure_volume(name, {**labels, LABEL + "volume": volume} if volume else labels)
        if volume:
            self.journal.volume_created(name, role, volume, path, release)

    def _switch(self, run: _RoleRun, batch: Sequence[Step]) -> None:
        assert self.edge is not None
        ready = [s.instance for s in batch if s.action == Action.ADMIT]
        drain = [s.instance for s in batch if s.action == Action.DRAIN]
        self.edge.switch(run.plan.role, ready=ready, drain=drain)
        self.progress.step(run.plan.role, f"traffic switched to {len(ready)} new instance(s)")

    # -- one step -----------------------------------------------------------------------
    def _do(
        self,
        rr: RoleRelease | None,
        release: int,
        step: Step,
        background: ThreadPoolExecutor | None,
    ) -> Future[None] | None:
        """Carry out one step that is not a start; a removal may go to ``background``."""
        self.journal.check()
        role = step.role
        match step.action:
            case Action.KEEP:
                pass
            case Action.CREATE_VOLUME:
                self._create_volume(rr, release, step)
            case Action.ADD:
                info = self.engine.inspect(step.instance)
                if self.edge is not None and rr is not None and info is not None:
                    self.edge.add(rr, step.instance, self._address(info), step.timeout)
            case Action.CHECK:
                raise AssertionError("checks are made by replace_edge, all before the edge")
            case Action.ADMIT:
                if self.edge is not None:
                    self.edge.readmit(role, step.instance)
            case Action.DRAIN:
                self._say_retiring(step)
                if self.edge is not None and not self.edge.drain(
                    role, step.instance, timeout=step.timeout
                ):
                    self.progress.step(
                        role,
                        f"cut the requests {step.instance} was still answering after its "
                        f"drain of {step.timeout:g}s (deploy.drain is shorter than the "
                        "role's slowest requests)",
                    )
            case Action.STOP:
                self._say_retiring(step)
                self.engine.stop(step.instance, timeout=10)
                if step.record:
                    self.journal.retired(step.instance, step.record)
            case Action.WAIT_GONE:
                self._await_gone(role, step.instance)
            case Action.REMOVE:
                self._say_retiring(step)
                if step.background and self.edge is not None and background is not None:
                    return background.submit(self._remove, step.instance, step.record)
                self._remove(step.instance, step.record)
            case Action.START | Action.RESTART:
                raise AssertionError("starts are carried out by _launch_many")
        return None

    def _say_retiring(self, step: Step) -> None:
        if step.reason:
            verb = "removing" if step.record == "cleaned-up" else "retiring"
            self.progress.step(step.role, f"{verb} {step.instance} ({step.reason})")

    def _await_gone(self, role: str, name: str) -> None:
        """Wait until no process of ``name`` runs any more (its volumes are released)."""
        deadline = time.monotonic() + self.gone_timeout
        while (info := self.engine.inspect(name)) is not None and info.holds_mounts:
            if time.monotonic() > deadline:
                raise DeployError(
                    f"role {role}: {name} is still {info.state} after "
                    f"{self.gone_timeout:.0f} s; its replacement was not started",
                    role=role,
                )
            time.sleep(0.05)

    @contextlib.contextmanager
    def _claiming(self, rr: RoleRelease, starting: str) -> Iterator[None]:
        """Hold the role's single-writer volumes for ``starting`` while it starts.

        The engine is asked, not the plan: if another running container of the fleet
        mounts one of them (whatever left it there), ``starting`` is refused. Starts of
        one role are serialised so that two of them cannot both see the volume free.

        Raises:
            DeployError: a single-writer volume is in use; nothing was started.
        """
        wanted = {rr.engine_volume(self.scope, v) for v in rr.single_writer}
        if not wanted:
            yield
            return
        with self._count_lock:
            lock = self._claim_locks.setdefault(rr.role, threading.Lock())
        with lock:
            for other in self.engine.list_containers({LABEL + "fleet": self.scope.fleet}):
                shared = sorted(wanted & set(other.volumes))
                if shared and other.name != starting and other.holds_mounts:
                    raise DeployError(
                        f"role {rr.role}: {starting} was not started: {other.name} "
                        f"({other.state}) mounts single-writer volume {shared[0]}",
                        role=rr.role,
                        reason=f"single-writer volume {shared[0]} is in use by {other.name}",
                        volume=shared[0],
                        holder=other.name,
                    )
            yield

    # -- instances ----------------------------------------------------------------------
    def _launch_many(self, run: _RoleRun, steps: Sequence[Step]) -> list[str]:
        """Start the instances ``steps`` name, side by side; a held one waits in the edge
        (checked, no requests) for an ``admit``, any other takes requests once healthy."""
        jobs: list[Callable[[], str]] = [
            functools.partial(
                self.launch if s.action == Action.START else self.relaunch,
                run.release_spec,
                s.instance,
                run.release,
                not s.hold,
            )
            for s in steps
        ]
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [pool.submit(job) for job in jobs]
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def launch(self, rr: RoleRelease, name: str, release: int, traffic: bool) -> str:
        """Start new instance ``name``; return it once it is healthy (and in the edge)."""
        self.journal.check()
        index = _index(name)
        spec = container_spec(self.scope, rr, release, index, self.secrets, self.key)
        if spec.name != name:
            raise DeployError(f"role {rr.role}: the plan names {name}, not {spec.name}")
        spec = dataclasses.replace(spec, image=self._startable(rr.image_id))
        self.progress.step(rr.role, f"starting {spec.name} ({rr.image_version})")
        with self._claiming(rr, spec.name):
            info = self.engine.start(spec)
        self.journal.started(spec.name, rr.role, release, rr.image_id)
        self._become_healthy(rr, info, traffic)
        return spec.name

    def _startable(self, image_id: str) -> str:
        """What the engine starts for ``image_id``: distributed once per image and run
        (an engine with local images starts the id itself)."""
        with self._distribute_lock:
            if image_id not in self._distributed:
                self._distributed[image_id] = self.engine.distribute(image_id)
            return self._distributed[image_id]

    def relaunch(self, rr: RoleRelease, name: str, release: int, traffic: bool) -> str:
        """Start a stand-by instance again (a blue-green switch back)."""
        self.journal.check()
        self.progress.step(rr.role, f"restarting stand-by {name}")
        with self._claiming(rr, name):
            info = self.engine.resume(name)
        release = int(info.labels.get(LABEL + "release", release))  # as it was labelled
        self.journal.started(name, rr.role, release, rr.image_id)
        self._become_healthy(rr, info, traffic)
        return name

    def _become_healthy(self, rr: RoleRelease, info: ContainerInfo, traffic: bool) -> None:
        public = self.edge is not None and rr.public is not None
        try:
            if public:
                assert self.edge is not None
                self.edge.prepare(rr, info.name, self._address(info))
            self._check_health(rr, info)
            if public:
                assert self.edge is not None
                self.edge.confirm(rr, info.name, edge_timeout(rr), ready=traffic)
        except CorralError as exc:
            logs = self.engine.logs(info.name)
            self._discard(rr, [info.name], "failed-health")
            raise DeployError(
                f"role {rr.role}: new instance {info.name} did not become healthy: {exc.message}",
                role=rr.role,
                reason=exc.message,
                log=logs.splitlines()[-20:],
            ) from exc
        self.progress.step(rr.role, f"{info.name} is healthy")

    def _check_health(self, rr: RoleRelease, info: ContainerInfo) -> None:
        if rr.health is None or rr.run.port is None:
            current = self._inspect(info.name)
            if current.state != "running":
                raise DeployError(f"it exited (code {current.exit_code})", role=rr.role)
            return
        address = self._address(info)
        result = wait_healthy(
            address,
            rr.run.port,
            rr.health,
            still_running=lambda: self._running(info.name),
            probe=self._probe(rr, address),
        )
        if not result.healthy:
            raise DeployError(result.detail, role=rr.role)

    def _probe(self, rr: RoleRelease, address: str) -> Probe | None:
        """A command check's probe (a container per run); None: corral checks itself."""
        if not isinstance(rr.health, CommandHealth):
            return None
        spec = probe_spec(self.scope, rr, rr.health, address)
        return CommandProbe(self.engine, spec, rr.health.timeout)

    def _running(self, name: str) -> bool:
        info = self.engine.inspect(name)
        return info is not None and info.state == "running"

    def _inspect(self, name: str) -> ContainerInfo:
        info = self.engine.inspect(name)
        if info is None:
            raise DeployError(f"instance {name} vanished")
        return info

    def _address(self, info: ContainerInfo) -> str:
        address = self.engine.probe_address(info, self.scope.network)
        if not address:
            raise DeployError(f"instance {info.name} has no address on {self.scope.network}")
        return address

    def _remove(self, name: str, outcome: str) -> None:
        self.engine.remove(name)  # stops it gracefully first
        if outcome:
            self.journal.retired(name, outcome)

    def _discard(self, rr: RoleRelease, names: Iterable[str], outcome: str) -> None:
        for name in names:
            if self.edge is not None and rr.public is not None:
                with contextlib.suppress(CorralError):
                    self.edge.drain(rr.role, name, timeout=1.0)
            self.engine.remove(name)
            self.journal.retired(name, outcome)


@dataclass
class _RoleRun:
    """One role's progress through its batches: what ran, what still finishes, timings."""

    plan: RolePlan
    release_spec: RoleRelease
    release: int
    done: set[Step] = field(default_factory=set)
    pending: list[Future[None]] = field(default_factory=list)
    began: float | None = None  # the first batch that stops an instance began
    served: float | None = None  # the last start that became healthy
    switched: bool = False


def _index(name: str) -> int:
    """The ``<n>`` of a cattle name ``<fleet>-<role>-r<release>-<n>``."""
    return int(name.rsplit("-", 1)[1])
