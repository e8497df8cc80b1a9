"""kill -9 at many points of a deploy: the fleet keeps serving, `status` only reports what
was left, and `corral gc` or the next deploy cleans it up and converges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx

from tests.engine.helpers import CORRAL, Fleet, containers, fleet_secrets

# Seconds after `corral deploy` starts: spread over planning, storing secrets, starting,
# health checks, joining the edge, draining and removing (this 3-replica deploy, with its
# 0.3 s start delay per instance, takes about 2-3 s here under the test's load).
KILL_POINTS = (0.6, 0.9, 1.1, 1.3, 1.5, 1.8, 2.1, 2.5, 3.0)
SECRET = {"APP_TOKEN": "kill-test-token"}


def deploy_and_kill(fleet: Fleet, after: float) -> None:
    proc = subprocess.Popen(
        [*CORRAL, "-f", str(fleet.spec), "deploy", "--skip-tests", "--reason", "kill test"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **SECRET},
    )
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_anywhere_then_deploy_converges(fleet: Fleet, shared_base: str) -> None:
    def write(version: str) -> None:
        fleet.write(version, replicas=3, start_delay=0.3, secrets=tuple(SECRET))

    write("v1")
    fleet.deploy(env=SECRET)
    with fleet.load(clients=3) as load:
        for n, after in enumerate(KILL_POINTS, start=2):
            write(f"v{n}")
            fleet.corral("build")  # the kill is aimed at the deploy, not at podman build
            deploy_and_kill(fleet, after)
            status = fleet.status()  # reports what the killed deploy left; changes nothing
            assert status["edge"] == "running"
            if n % 2:  # every other time `corral gc` cleans up; else the next deploy does
                gc = json.loads(fleet.corral("gc", "--json").stdout)
                assert gc["failed"] == []
                assert gc["releases"] == status["unfinished_releases"]  # all killed ones
                assert sorted(gc["instances"]) == sorted(status["leftovers"])
                after_gc = fleet.status()
                assert after_gc["unfinished_releases"] == [] and after_gc["leftovers"] == []
        final = f"v{len(KILL_POINTS) + 2}"
        write(final)
        fleet.deploy(env=SECRET)
    load.assert_no_failures()
    assert load.total > 100
    status = fleet.status()
    [web] = status["roles"]
    assert len(web["instances"]) == 3
    assert {i["release"] for i in web["instances"]} == {status["release"]}
    assert {i["health"] for i in web["instances"]} == {"up"}
    assert status["unfinished"] == []
    instances = [c for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "instance"]
    assert len(instances) == 3  # no leftovers of the killed deploys...
    names = sorted(c["Names"][0] for c in instances)
    assert fleet_secrets(fleet) == [f"{name}--APP_TOKEN" for name in names]  # ...nor secrets
    assert httpx.get(fleet.url).json()["version"] == final
    history = json.loads(fleet.corral("history", "--json").stdout)["releases"]
    killed = [r["status"] for r in history[1:-1]]
    assert set(killed) <= {"aborted", "superseded"}
    # Most kills landed inside a deploy's release (one killed while planning records none;
    # one the kill came too late for is superseded)
    assert killed.count("aborted") >= 5, killed
    assert history[-1]["status"] == "active"
    assert fleet.corral("plan", check=False, env=SECRET).returncode == 0  # it needs the value
