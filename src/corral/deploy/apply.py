"""The executor: the only code that changes a running fleet, and only by following a plan.

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
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.edge import Edge
from corral.deploy.health import CommandProbe, Probe, wait_healthy
from corral.deploy.instances import container_spec, probe_spec, remove_probes
from corral.deploy.observe import KIND_INSTANCE
from corral.deploy.plan import STOP_FIRST, Change, Plan, RolePlan
from corral.deploy.scope import LABEL, Scope
from corral.deploy.secrets import Hasher
from corral.engines.base import ContainerInfo, Engine
from corral.errors import CorralError, DeployError
from corral.progress import Progress
from corral.spec.model import CommandHealth
from corral.state import State


class Journal:
    """Serialises the executor's threads' writes to the state database."""

    def __init__(self, state: State, fleet: str) -> None:
        self.state = state
        self.fleet = fleet
        self._lock = threading.Lock()

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


class ScratchJournal(Journal):
    """For throwaway test environments: nothing they do belongs in the fleet's records."""

    def __init__(self) -> None:
        pass

    def started(self, name: str, role: str, release: int, image_id: str) -> None:
        pass

    def retired(self, name: str, outcome: str) -> None:
        pass

    def audit(self, action: str, target: str, outcome: str, details: Mapping[str, Any]) -> None:
        pass

    def replaced(self, role: str, release: int, unavailable_s: float) -> None:
        pass


@dataclass
class Executor:
    engine: Engine
    scope: Scope
    release: int
    journal: Journal
    progress: Progress
    edge: Edge | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    key: Hasher | None = None  # labels say which secret values an instance got
    first_index: Mapping[str, int] = field(default_factory=dict)  # per role, when reusing
    gone_timeout: float = 60.0  # how long a stopped instance may take to let go of its volumes
    _counters: dict[str, itertools.count[int]] = field(default_factory=dict)
    _count_lock: threading.Lock = field(default_factory=threading.Lock)
    _claim_locks: dict[str, threading.Lock] = field(default_factory=dict)

    # -- the whole plan -----------------------------------------------------------------
    def apply(self, plan: Plan, desired: Desired, edge_image: str | None = None) -> None:
        """Carry out ``plan``; raise DeployError naming every role that failed.

        Roles that failed are left half-way (old and new instances serving side by side);
        the caller decides to roll them back.
        """
        if plan.ensure_network:
            self.engine.ensure_network(self.scope.network, self.scope.labels("network"))
        for name in remove_probes(self.engine, self.scope):
            self.progress.step("fleet", f"removed {name}, a health probe a killed deploy left")
        if self.edge is not None and edge_image and plan.edge.action in ("create", "start"):
            self.progress.step("edge", f"starting the edge ({plan.edge.reason})")
            self.edge.start(desired, edge_image)
        elif self.edge is not None and edge_image and plan.edge.action == "reload":
            # Before the roles: new instances are added to backends checked as they will be
            # checked; the old ones keep their own paths (or, checked another way, no check).
            self.progress.step("edge", f"reloading the edge's configuration ({plan.edge.reason})")
            try:
                self.edge.reload(desired, edge_image)
            except CorralError as exc:  # a failed deploy, to be undone like a role's failure
                raise DeployError(f"the edge: {exc.message}", reason=exc.message) from exc
        for change in plan.orphans:
            self.retire(None, change, "orphan")
        for wave in plan.waves:
            self._apply_wave([plan.role(name) for name in wave], desired)

    def _apply_wave(self, role_plans: Sequence[RolePlan], desired: Desired) -> None:
        errors: list[DeployError] = []
        with ThreadPoolExecutor(max_workers=max(1, len(role_plans))) as pool:
            futures = [pool.submit(self.apply_role, rp, desired[rp.role]) for rp in role_plans]
            for rp, future in zip(role_plans, futures, strict=True):
                exc = future.exception()
                if isinstance(exc, DeployError):
                    errors.append(exc)
                elif isinstance(exc, CorralError):
                    errors.append(
                        DeployError(
                            f"role {rp.role}: {exc.message}", role=rp.role, reason=exc.message
                        )
                    )
                elif exc is not None:
                    raise exc
        if errors:
            failed = [str(e.details.get("role", "?")) for e in errors]
            raise DeployError(
                "; ".join(e.message for e in errors),
                roles=failed,
                failures=[e.to_dict() for e in errors],
            )

    # -- one role -----------------------------------------------------------------------
    def apply_role(self, rp: RolePlan, rr: RoleRelease) -> None:
        for volume in rp.new_volumes:
            self.progress.step(rr.role, f"creating volume {volume}")
            self.engine.ensure_volume(
                volume, {**self.scope.labels("volume"), LABEL + "role": rr.role}
            )
        for change in rp.cleanup:
            self.remove_stopped(rr, change)
        serving = self._sync_edge(rp, rr)
        if rp.strategy == STOP_FIRST:
            self._stop_first(rp, rr)
        elif rp.strategy == "blue-green" and (rp.start or rp.restart):
            self._blue_green(rp, rr)
        else:
            self._rolling(rp, rr, serving)

    def _sync_edge(self, rp: RolePlan, rr: RoleRelease) -> set[str] | None:
        """Make the edge agree with the plan before anything changes.

        Kept instances must take traffic: after an edge restart they are absent, after a
        killed deploy one may be left drained. A server no running instance answers for
        (its container gone with a killed deploy) goes: its address may be given to
        another container.

        Returns the instances that take requests from the edge now (None: the role is not
        behind the edge, every running instance serves).
        """
        if self.edge is None or rr.public is None:
            return None
        present = {s.name: s for s in self.edge.servers(rr.role)}
        serving = {s.name for s in present.values() if s.admin == "ready" and s.healthy}
        known = {*rp.keep, *(c.instance for c in rp.stop), *(c.instance for c in rp.cleanup)}
        for name in sorted(set(present) - known):
            self.edge.drain(rr.role, name, timeout=1.0)
        for name in rp.keep:
            server = present.get(name)
            if server is not None:
                if server.admin != "ready":
                    self.edge.readmit(rr.role, name)
                continue
            info = self.engine.inspect(name)
            if info is not None:
                self.edge.add(rr, name, self._address(info), self._edge_timeout(rr))
        return serving

    def _rolling(self, rp: RolePlan, rr: RoleRelease, serving: set[str] | None = None) -> None:
        """Start new before stopping old, within max_surge and max_unavailable.

        Old instances that take no requests (``serving`` says which do: a killed deploy
        may leave some drained or never admitted) go first: that costs no capacity, and
        counting them as serving could retire the last instance that really serves.
        """
        idle = [c for c in rp.stop if serving is not None and c.instance not in serving]
        with ThreadPoolExecutor(max_workers=4) as removals:
            pending = self._retire_all(rr, idle, removals)
            pending += self._rolling_steps(rp, rr, removals, [c for c in rp.stop if c not in idle])
        for future in pending:
            future.result()  # a removal that failed fails the role

    def _rolling_steps(
        self, rp: RolePlan, rr: RoleRelease, removals: ThreadPoolExecutor, olds: list[Change]
    ) -> list[Future[None]]:
        restarts = list(rp.restart)
        to_start = rp.start + len(restarts)
        # Percentages resolve against the replicas as Kubernetes does: surge up, unavailable down.
        surge, unavailable = rr.deploy.surge(rr.replicas), rr.deploy.unavailable(rr.replicas)
        serving = len(rp.keep) + len(olds)
        pending: list[Future[None]] = []
        while to_start or olds:
            room = rr.replicas + surge - serving
            batch = min(to_start, max(room, 0))
            if batch == 0 and to_start and olds:  # no room to surge: free some first
                freed, olds = olds[: max(1, unavailable)], olds[max(1, unavailable) :]
                pending += self._retire_all(rr, freed, removals)
                serving -= len(freed)
                continue
            batch = batch or to_start  # nothing left to free: start the rest
            taken, restarts = restarts[:batch], restarts[batch:]
            self._launch_many(rr, batch - len(taken), taken, traffic=True)
            serving += batch
            to_start -= batch
            excess = min(len(olds), max(0, serving - (rr.replicas - unavailable)))
            if to_start and excess > batch + unavailable:
                excess = batch + unavailable
            retiring, olds = olds[:excess], olds[excess:]
            pending += self._retire_all(rr, retiring, removals)
            serving -= len(retiring)
        return pending

    def _blue_green(self, rp: RolePlan, rr: RoleRelease) -> None:
        """Bring the whole new set up beside the old one, then switch traffic at once."""
        names = self._launch_many(rr, rp.start, list(rp.restart), traffic=False)
        if self.edge is not None and rr.public is not None:
            self.edge.switch(rr.role, ready=names, drain=[c.instance for c in rp.stop])
            self.progress.step(rr.role, f"traffic switched to {len(names)} new instance(s)")
        for change in rp.stop:
            self.retire(rr, change, "standby", keep=True)

    def _stop_first(self, rp: RolePlan, rr: RoleRelease) -> None:
        """Old instances stop, and are seen stopped, before new ones start one at a time:
        two instances never mount the role's single-writer volumes at once.

        A blue-green role keeps its old instances stopped as stand-bys (a switch back
        restarts them); any other role removes them once the new ones serve (or failed).
        How long the role had no instance serving is recorded: ``plan`` shows it as the
        next replacement's estimate.
        """
        standby = rr.deploy.strategy == "blue-green"
        began = time.monotonic()
        # Only stopped here: a stopped container holds no volume, and removing it (its
        # storage, its stored secrets) would lengthen the outage; it goes afterwards.
        for change in rp.stop:
            self.retire(rr, change, "standby" if standby else "replaced", keep=True)
        try:
            self._await_gone(rr, [c.instance for c in rp.stop])
            for name in rp.restart:
                self.relaunch(rr, name, traffic=True)
            for _ in range(rp.start):
                self.launch(rr, traffic=True)
            served = time.monotonic()
        finally:
            for change in [] if standby else rp.stop:
                self.engine.remove(change.instance)
        if rp.interrupts:
            seconds = served - began
            self.journal.replaced(rr.role, self.release, seconds)
            self.progress.step(rr.role, f"was unavailable for {seconds:.2f} s (stop-first)")

    def _await_gone(self, rr: RoleRelease, names: Sequence[str]) -> None:
        """Wait until no process of ``names`` runs any more (their volumes are released)."""
        deadline = time.monotonic() + self.gone_timeout
        for name in names:
            while (info := self.engine.inspect(name)) is not None and info.holds_mounts:
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"role {rr.role}: {name} is still {info.state} after "
                        f"{self.gone_timeout:.0f} s; its replacement was not started",
                        role=rr.role,
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
        wanted = {self.scope.volume_name(rr.role, v) for v in rr.single_writer}
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
    def _launch_many(
        self, rr: RoleRelease, count: int, restarts: Sequence[str], traffic: bool
    ) -> list[str]:
        """Start instances in parallel; with ``traffic`` they take requests once healthy,
        without it they wait in the edge (checked, no requests) for a switch."""
        jobs: list[Callable[[], str]] = [functools.partial(self.launch, rr, traffic)] * count
        jobs += [functools.partial(self.relaunch, rr, name, traffic) for name in restarts]
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [pool.submit(job) for job in jobs]
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def _next_index(self, role: str) -> int:
        with self._count_lock:
            start = self.first_index.get(role, 1)
            counter = self._counters.setdefault(role, itertools.count(start))
            return next(counter)

    def launch(self, rr: RoleRelease, traffic: bool) -> str:
        """Start one new instance; return its name once it is healthy (and in the edge)."""
        index = self._next_index(rr.role)
        spec = container_spec(self.scope, rr, self.release, index, self.secrets, self.key)
        self.progress.step(rr.role, f"starting {spec.name} ({rr.image_version})")
        with self._claiming(rr, spec.name):
            info = self.engine.start(spec)
        self.journal.started(spec.name, rr.role, self.release, rr.image_id)
        self._become_healthy(rr, info, traffic)
        return spec.name

    def relaunch(self, rr: RoleRelease, name: str, traffic: bool) -> str:
        """Start a stand-by instance again (a blue-green switch back)."""
        self.progress.step(rr.role, f"restarting stand-by {name}")
        with self._claiming(rr, name):
            info = self.engine.resume(name)
        release = int(info.labels.get(LABEL + "release", self.release))  # as it was labelled
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
                self.edge.confirm(rr, info.name, self._edge_timeout(rr), ready=traffic)
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

    def _edge_timeout(self, rr: RoleRelease) -> float:
        if rr.health is None:
            return 10.0
        return max(5.0, rr.health.retries * rr.health.interval)

    def _retire_all(
        self, rr: RoleRelease, changes: Iterable[Change], later: ThreadPoolExecutor | None = None
    ) -> list[Future[None]]:
        pending = [self.retire(rr, change, "replaced", later=later) for change in changes]
        return [p for p in pending if p is not None]

    def retire(
        self,
        rr: RoleRelease | None,
        change: Change,
        outcome: str,
        keep: bool = False,
        later: ThreadPoolExecutor | None = None,
    ) -> Future[None] | None:
        """Drain an instance from the edge, then stop it (and remove it unless ``keep``).

        With ``later``, an instance that was drained from the edge is removed in the
        background: it takes no request any more, so the next replacement may start while
        its container goes away (as Kubernetes does not count terminating pods in a surge).
        """
        self.progress.step(
            rr.role if rr else "fleet", f"retiring {change.instance} ({change.reason})"
        )
        drained = self.edge is not None and rr is not None and rr.public is not None
        if drained:
            assert self.edge is not None and rr is not None
            self.edge.drain(rr.role, change.instance, timeout=rr.deploy.drain)
        elif self.edge is not None:
            self._drain_anywhere(change.instance)
        if keep:
            self.engine.stop(change.instance, timeout=10)
            self.journal.retired(change.instance, outcome)
            return None
        if drained and later is not None:
            return later.submit(self._remove, change.instance, outcome)
        self._remove(change.instance, outcome)
        return None

    def _remove(self, name: str, outcome: str) -> None:
        self.engine.remove(name)  # stops it gracefully first
        self.journal.retired(name, outcome)

    def _drain_anywhere(self, name: str) -> None:
        info = self.engine.inspect(name)
        role = info.labels.get(LABEL + "role") if info else None
        if (
            self.edge is not None
            and role
            and info
            and info.labels.get(LABEL + "kind") == KIND_INSTANCE
        ):
            self.edge.drain(role, name, timeout=5.0)

    def remove_stopped(self, rr: RoleRelease, change: Change) -> None:
        self.progress.step(rr.role, f"removing {change.instance} ({change.reason})")
        if self.edge is not None and rr.public is not None:
            self.edge.drain(rr.role, change.instance, timeout=1.0)
        self.engine.remove(change.instance)
        self.journal.retired(change.instance, "cleaned-up")

    def _discard(self, rr: RoleRelease, names: Iterable[str], outcome: str) -> None:
        for name in names:
            if self.edge is not None and rr.public is not None:
                with contextlib.suppress(CorralError):
                    self.edge.drain(rr.role, name, timeout=1.0)
            self.engine.remove(name)
            self.journal.retired(name, outcome)
