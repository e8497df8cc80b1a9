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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.deploy.apply import Executor, ScratchJournal
from corral.deploy.desired import Desired, RoleRelease
from corral.deploy.edge import Edge
from corral.deploy.observe import observe
from corral.deploy.plan import EdgePlan, Observed, plan_deploy
from corral.deploy.scope import LABEL, LIVE, Scope
from corral.engines.base import Engine, Mount
from corral.errors import CorralError
from corral.progress import NullProgress, Progress
from corral.state.records import current_host

TEST_PREFIX = "test-"


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
        self.owners.mkdir(parents=True, exist_ok=True)
        self.owner_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": current_host(),
                    "started": datetime.now(UTC).isoformat(),
                }
            )
        )
        self.engine.ensure_network(self.scope.network, self.scope.labels("network"), internal=True)
        for rr in desired.values():
            self._seed_volumes(rr)
        observed = Observed(
            instances=(),
            volumes=set(self.engine.list_volumes(self.scope.labels("volume"))),
            good_releases=(),
            standby=(),
            now=datetime.now(UTC),
            edge=EdgePlan("create", "test environment"),
        )
        plan = plan_deploy(self.scope, desired, observed)
        executor = Executor(
            self.engine,
            self.scope,
            1,
            ScratchJournal(),
            self.progress,
            self.edge if edge_image else None,
            secrets,
        )
        executor.apply(plan, desired, edge_image)

    def _seed_volumes(self, rr: RoleRelease) -> None:
        fixtures = rr.fixtures
        for volume, path in sorted(rr.volumes.items()):
            name = self.scope.volume_name(rr.role, volume)
            self.engine.ensure_volume(
                name, {**self.scope.labels("volume"), LABEL + "role": rr.role}
            )
            if volume in fixtures:
                source = (self.root / fixtures[volume]).resolve()
                self.progress.step(rr.role, f"seeding volume {volume} from {fixtures[volume]}")
                self.engine.run_once(
                    rr.image_id,
                    ["sh", "-c", f"cp -a /fixture/. '{path}/' && chown -R {rr.run.user}: '{path}'"],
                    mounts=(Mount(str(source), "/fixture", read_only=True), Mount(name, path)),
                )

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
                }
                for i in instances
            ],
        }

    def down(self) -> None:
        """Remove every container, the network and the volumes of this environment."""
        teardown(self.engine, self.scope)
        self.edge.remove(forget=True)
        self.owner_file.unlink(missing_ok=True)


def teardown(engine: Engine, scope: Scope) -> None:
    """Remove every object of a test scope, found by its labels. Never a live object."""
    if scope.env == LIVE:
        raise CorralError("refusing to tear down the live environment")
    labels = {LABEL + "fleet": scope.fleet, LABEL + "env": scope.env}
    for container in engine.list_containers(labels):
        engine.remove(container.name)
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
        teardown(engine, Scope(fleet, env))
        Edge(engine, Scope(fleet, env), str(owners), publish=False).remove(forget=True)
        (owners / f"{env}.json").unlink(missing_ok=True)
        swept.append(env)
    return swept


def _owner_alive(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return False  # no owner file: nobody is looking after it
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
