"""True records, for real: a deploy never reports success below its replicas, and a
failed edge replace is audited."""

from __future__ import annotations

import json
import subprocess
import threading

import httpx

from corral.cli.exitcodes import ExitCode
from tests.engine.helpers import CORRAL, Fleet, containers


def _deploy_killing(fleet: Fleet, when: str, victim: str) -> tuple[int, str]:
    """``corral deploy``, killing ``victim`` (podman kill) as soon as ``when`` is printed;
    returns the exit code and everything the deploy printed."""
    proc = subprocess.Popen(
        [*CORRAL, "-f", str(fleet.spec), "deploy", "--skip-tests", "--reason", "records test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    killed = threading.Event()
    for line in proc.stdout:
        lines.append(line)
        if when in line and not killed.is_set():
            subprocess.run(["podman", "kill", victim], check=True, capture_output=True)
            killed.set()
    code = proc.wait(timeout=300)
    assert killed.is_set(), "".join(lines)
    return code, "".join(lines)


def test_a_new_instance_killed_after_its_check_fails_the_deploy_and_it_rolls_back(
    fleet: Fleet, shared_base: str
) -> None:
    """Once, killing a new instance right after "is healthy" gave exit 0 and "release is
    live" with 2 of 3 running. The decision: the deploy fails and goes back to the previous
    release (a replacement could die the same way; the operator must see it)."""
    fleet.write(replicas=3)
    fleet.deploy()
    fleet.write(version="v2", replicas=3)
    first = f"{fleet.name}-web-r2-1"
    code, output = _deploy_killing(fleet, f"{fleet.name}-web-r2-2 is healthy", first)
    assert code == ExitCode.ROLLED_BACK, output  # went back to r1
    print(output)  # shown when the test fails
    assert "is live" not in output
    assert "role web: only 2 of 3 instances serve" in output, output
    assert f"{first} exited with code 137" in output
    assert f"| {first}: " in output  # its last log lines
    assert "back on release r1" in output
    status = fleet.status()
    assert status["release"] == 1
    [web] = status["roles"]
    assert [(i["release"], i["state"], i["health"]) for i in web["instances"]] == [
        (1, "running", "up")
    ] * 3
    assert httpx.get(fleet.url).json()["version"] == "v1"
    last = json.loads(fleet.corral("history", "--json").stdout)["releases"][-1]
    assert (last["release"], last["status"]) == (2, "rolled-back")
    assert "only 2 of 3 instances serve" in last["message"]
    shown = fleet.corral("history", "--release", "2").stdout
    assert "why: role web: only 2 of 3 instances serve" in shown
    assert f"| {first}: " in shown
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    assert (audit[-1]["action"], audit[-1]["outcome"]) == ("deploy", "rolled-back")
    # what the failed release left is gone: three instances of r1 and the edge
    assert len([c for c in containers(fleet.name) if c["State"] == "running"]) == 4


def test_an_instance_that_dies_while_settling_fails_the_deploy(
    fleet: Fleet, shared_base: str
) -> None:
    """Killed after the last replacement, while corral watches the release settle."""
    fleet.write(replicas=2, settle="8s")
    fleet.deploy()
    fleet.write(version="v2", replicas=2, settle="8s")
    victim = f"{fleet.name}-web-r2-1"
    code, output = _deploy_killing(fleet, "settling: watching the instances for 8s", victim)
    assert code == ExitCode.ROLLED_BACK, output
    assert "only 1 of 2 instances serve" in output and "is live" not in output
    assert fleet.status()["release"] == 1
    last = json.loads(fleet.corral("history", "--json").stdout)["releases"][-1]
    assert last["status"] == "rolled-back"


def test_a_failed_edge_replace_is_audited_with_its_error(fleet: Fleet, shared_base: str) -> None:
    fleet.deploy()
    fleet.write(extra="edge: {address: 192.0.2.1}\n")  # an address no interface of this host has
    proc = fleet.corral("edge", "replace", check=False)
    assert proc.returncode == 1, proc.stderr
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    entry = audit[-1]
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "edge-replace",
        "edge",
        "failed",
    )
    assert "cannot assign requested address" in entry["details"]["error"], entry
    fleet.write()
    fleet.corral("edge", "replace")  # the edge comes back with the instances that serve
    assert httpx.get(fleet.url).json()["version"] == "v1"
