"""Throwaway test environments: the images that would be deployed, brought up through the
same planner and executor as a live deploy (same lockdown, same health gating), on their own
internal network, with their own fresh volumes and their own edge, then torn down.

Every object carries the labels of a test scope (``io.corral.env=test-<hex>``). An owner
file names the process that made it; whatever belongs to a dead owner is swept by the next
corral run, so even kill -9 leaves nothing behind for long.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from corral.deploy.apply import Executor, ScratchJournal
from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.observe import observe
from corral.deploy.plan import EdgePlan, Observed, plan_deploy
from corral.deploy.scope import LABEL, LIVE, Scope
from corral.edge.container import Edge
from corral.engines.base import Engine, Mount
from corral.engines.capabilities import Capability, supports
from corral.errors import CorralError, Diagnostic, SpecError, StateError
from corral.hostfiles import private_dir, read_private, write_private
from corral.progress import NullProgress, Progress
from corral.state.records import current_host

TEST_PREFIX = "test-"
REMOVERS = 4  # containers a teardown removes at once
FIXTURE_MOUNT = "/fixture"  # where a fixture is seen while it is copied


@dataclass
class TestEnvironment:
    """One throwaway environment of a fleet. Use ``up`` then ``down`` (always)."""

    __test__ = False  # not a pytest test class, whatever its name

    engine: Engine
    fleet: str
    owners: Path  # folder of owner files, beside the state database
    root: Path  # the spec's folder: fixtures are relative to it
    progress: Progress = field(default_factory=NullProgress)
    scope: Scope = field(init=False)
    edge: Edge = field(init=False)

    def __post_init__(self) -> None:
        self.scope = Scope(self.fleet, TEST_PREFIX + uuid.uuid4().hex[:8])
        self.edge = Edge(self.engine, self.scope, str(self.owners), publish=False)

    @property
    def owner_file(self) -> Path:
        return self.owners / f"{self.scope.env}.json"

    def up(self, desired: Desired, secrets: dict[str, str], edge_image: str | None) -> None:
        """Bring ``desired`` up; raise DeployError naming the roles that did not get healthy.

        ``secrets`` are this run's test values (see ``secrets_for_test_run``): live values
        only for the secrets the spec lists in ``live_secrets_in_tests``.
        """
        write_owner_file(self.owners, self.owner_file)
        self.engine.ensure_network(self.scope.network, self.scope.labels("network"), internal=True)
        for rr in desired.values():
            self._seed_volumes(rr)
        observed = Observed(
            instances=(),
            volumes=set(self.engine.list_volumes(self.scope.labels("volume"))),
            good_releases=(),
            standby=(),
            now=datetime.now(UTC),
            edge=EdgePlan("create", "test environment", edge_image or ""),
        )
        plan = plan_deploy(self.scope, desired, observed, release=1)
        executor = Executor(
            self.engine,
            self.scope,
            ScratchJournal(),
            self.progress,
            self.edge if edge_image else None,
            secrets,
        )
        executor.apply(plan)

    def _seed_volumes(self, rr: RoleRelease) -> None:
        fixtures = rr.fixtures
        for volume, path in sorted(rr.volumes.items()):
            name = rr.engine_volume(self.scope, volume)
            self.engine.ensure_volume(
                name, {**self.scope.labels("volume"), LABEL + "role": rr.role}
            )
            if volume in fixtures:
                where = FixtureSource(self.root, self.owners.parent, rr.role, volume)
                source = where.resolve(fixtures[volume])
                self.progress.step(rr.role, f"seeding volume {volume} from {fixtures[volume]}")
                # The fixture is mounted read-only; each step is an argv (no shell), and
                # neither step follows a link found in the fixture (see seed_commands).
                mounts = (Mount(str(source), FIXTURE_MOUNT, read_only=True), Mount(name, path))
                for command in seed_commands(path, rr.run.user):
                    self.engine.run_once(rr.image_id, command, mounts=mounts)

    def describe(self, rr: RoleRelease, mode: str = "full") -> dict[str, Any]:
        """The environment as the role's tests see it (see corral.testing.plugin)."""
        instances = [i for i in observe(self.engine, self.scope) if i.role == rr.role and i.running]
        port = rr.run.port
        return {
            "fleet": self.fleet,
            "role": rr.role,
            "mode": mode,
            "engine": self.engine.name,
            "edge_url": self.edge.url(rr.public) if rr.public is not None else None,
            "instances": [
                {
                    "name": i.name,
                    "address": i.address,
                    "port": port,
                    "url": f"http://{i.address}:{port}/" if port else None,
                    "backend": self._test_backend(i.name),
                }
                for i in instances
            ],
        }

    def _test_backend(self, name: str) -> str | None:
        """The testinfra backend URL of instance ``name``; None: the engine cannot run
        commands in a container (the ``host`` fixtures then fail, saying so)."""
        if not supports(self.engine, Capability.EXEC):
            return None
        return self.engine.test_backend(name)

    def down(self) -> None:
        """Remove every container, the network and the volumes of this environment."""
        self.edge.remove(forget=True)  # first: its pod is on the network teardown removes
        teardown(self.engine, self.scope)
        self.owner_file.unlink(missing_ok=True)


def seed_commands(path: str, user: str) -> list[list[str]]:
    """The steps that copy a fixture into the volume at ``path`` and give it to ``user``.

    They run as root in a throwaway container of the role's image, without a network,
    with the fixture at ``FIXTURE_MOUNT`` read-only. ``cp -a`` copies links as links and
    ``chown --no-dereference`` changes a link itself, so a link in the fixture that points out of it
    (``/etc/shadow``, ``../..``) is copied as it is and never followed as root; and a link
    could only reach the throwaway container's own files anyway, never the host's.
    """
    return [
        ["cp", "-a", "--no-target-directory", "--", FIXTURE_MOUNT, path],
        ["chown", "-R", "--no-dereference", "--", f"{user}:", path],
    ]


@dataclass(frozen=True)
class FixtureSource:
    """Where the fixtures of one role's volume may come from: the spec's folder only."""

    root: Path  # the spec's folder
    state: Path  # the state database's folder, which never goes into a container
    role: str
    volume: str

    def resolve(self, folder: str) -> Path:
        """The host folder of fixture ``folder``, links resolved and confined.

        Checked here, where the folder is mounted into a root container, whatever the
        spec's loader let through, and in case the tree changed since it loaded (a link).

        Raises:
            SpecError: the folder resolves outside the spec's folder, to the spec's folder
                itself or to one holding corral's state, is not a folder, or has a ``:`` or
                ``,`` in its path (Podman's ``--volume`` would read those as separators).
        """
        base = self.root.resolve()
        source = (base / folder).resolve()
        state = self.state.resolve()
        if base not in source.parents:
            self._refuse(f"{folder!r} is {source}: a fixture is a folder inside the spec's folder")
        if source == state or source in state.parents or state in source.parents:
            self._refuse(f"{folder!r} is {source}, which holds corral's state")
        if not source.is_dir():
            self._refuse(f"{folder!r} is not a folder")
        if any(char in str(source) for char in ":,") or not str(source).isprintable():
            self._refuse(f"the path {source} has a ':', a ',' or a control character")
        return source

    def _refuse(self, message: str) -> NoReturn:
        field = f"roles.{self.role}.fixtures.{self.volume}"
        raise SpecError([Diagnostic(str(self.root), 0, 0, field, message)])


def teardown(engine: Engine, scope: Scope) -> None:
    """Remove every object of a test scope, found by its labels. Never a live object."""
    if scope.env == LIVE:
        raise CorralError("refusing to tear down the live environment")
    labels = {LABEL + "fleet": scope.fleet, LABEL + "env": scope.env}
    # Side by side: each removal mostly waits on the engine (a stop, an unmount).
    with ThreadPoolExecutor(max_workers=REMOVERS) as pool:
        list(pool.map(engine.remove, [c.name for c in engine.list_containers(labels)]))
    for network in engine.list_networks(labels):
        engine.remove_network(network)
    for volume in engine.list_volumes(labels):
        # Scratch volumes of a test scope only: a live volume's name never has its prefix.
        if volume.startswith(scope.prefix + "-"):
            engine.remove_volume(volume)


def sweep(engine: Engine, fleet: str, owners: Path, orphans: bool = False) -> list[str]:
    """Tear down test environments whose owner process is gone; return their ids.

    An environment's owner file is written before any of its objects exists and removed
    after the last is gone, so the owner files alone say what may need sweeping: the
    common case costs no engine call. With ``orphans`` (``corral destroy``), objects of
    test environments whose owner file has vanished altogether are found by label too.
    """
    envs = {path.stem for path in owners.glob(TEST_PREFIX + "*.json")} if owners.exists() else set()
    if orphans:
        found = engine.list_containers({LABEL + "fleet": fleet})
        envs |= {c.labels.get(LABEL + "env", "") for c in found}
    swept = []
    for env in sorted(e for e in envs if e.startswith(TEST_PREFIX)):
        if _owner_alive(owners / f"{env}.json"):
            continue
        Edge(engine, Scope(fleet, env), str(owners), publish=False).remove(forget=True)
        teardown(engine, Scope(fleet, env))
        (owners / f"{env}.json").unlink(missing_ok=True)
        swept.append(env)
    return swept


def write_owner_file(owners: Path, path: Path) -> None:
    """Say which process owns a test environment: 0600 in a 0700 folder, never a link.

    Raises:
        StateError: the folder or the file cannot be written, or ``path`` is a link.
    """
    owner = {"pid": os.getpid(), "host": current_host(), "started": datetime.now(UTC).isoformat()}
    try:
        private_dir(owners)
        write_private(path, json.dumps(owner).encode())
    except OSError as exc:
        raise StateError(f"cannot write the owner file {path}: {exc}", path=str(path)) from exc


def _owner_alive(path: Path) -> bool:
    """Whether the process named in the owner file ``path`` may still be running.

    Raises:
        StateError: ``path`` is a symbolic link (refused, never followed).
    """
    try:
        owner = json.loads(read_private(path))
    except (OSError, ValueError):
        return False  # no owner file: nobody is looking after it
    if not isinstance(owner, dict):
        return False
    if owner.get("host") != current_host():
        return True  # another machine's: its pid means nothing here
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


@contextlib.contextmanager
def environment(
    engine: Engine, fleet: str, owners: Path, root: Path, progress: Progress
) -> Iterator[TestEnvironment]:
    """A test environment that is torn down however the block ends (Ctrl-C included)."""
    env = TestEnvironment(engine, fleet, owners, root, progress)
    try:
        yield env
    finally:
        progress.step("test", f"tearing down {env.scope.env}")
        env.down()
