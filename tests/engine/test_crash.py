"""kill -9 at many points of a deploy: the fleet keeps serving and the next deploy converges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx

from tests.engine.helpers import CORRAL, Fleet, Load, containers

# Seconds after `corral deploy` starts: spread over planning, starting, health checks,
# joining the edge, draining and removing (a 3-replica deploy here takes about 3-5 s).
KILL_POINTS = (0.4, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 3.6, 4.4)


def deploy_and_kill(fleet: Fleet, after: float) -> None:
    proc = subprocess.Popen(
        [*CORRAL, "-f", str(fleet.spec), "deploy", "--skip-tests", "--reason", "kill test"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_anywhere_then_deploy_converges(fleet: Fleet, shared_base: str) -> None:
    fleet.write(replicas=3, start_delay=0.3)
    fleet.deploy()
    with Load(fleet.url, clients=3) as load:
        for n, after in enumerate(KILL_POINTS, start=2):
            fleet.write(version=f"v{n}", replicas=3, start_delay=0.3)
            fleet.corral("build")  # the kill is aimed at the deploy, not at podman build
            deploy_and_kill(fleet, after)
            status = fleet.status()  # finds and cleans up what the killed deploy left
            assert status["edge"] == "running"
        final = f"v{len(KILL_POINTS) + 2}"
        fleet.write(version=final, replicas=3, start_delay=0.3)
        fleet.deploy()
    assert load.failures == 0, load.outcomes
    assert load.total > 100
    status = fleet.status()
    [web] = status["roles"]
    assert len(web["instances"]) == 3
    assert {i["release"] for i in web["instances"]} == {status["release"]}
    assert {i["health"] for i in web["instances"]} == {"up"}
    assert status["unfinished"] == []
    instances = [c for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "instance"]
    assert len(instances) == 3  # no leftovers of the killed deploys
    assert httpx.get(fleet.url).json()["version"] == final
    history = json.loads(fleet.corral("history", "--json").stdout)["releases"]
    assert {r["status"] for r in history[1:-1]} <= {"aborted", "superseded"}
    assert history[-1]["status"] == "active"
    assert fleet.corral("plan", check=False).returncode == 0
