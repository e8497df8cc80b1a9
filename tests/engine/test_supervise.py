"""``corral watch`` supervising on the real engine.

The edge: a crashed HAProxy is started again by Podman's restart policy with no corral
running, serving the servers it had; a ``podman kill``ed one (a user's stop for podman
4.3: no restart) makes ``corral status`` exit 1 and is brought back by the watcher within
2 s. A role whose new instances crash ends degraded with its old instance serving; a
file changed inside an instance (a role with a writable root) and an instance started
unlike its release (drift) get them burned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.engine.helpers import Fleet, containers, podman_json, until, watching


def _serves(fleet: Fleet) -> bool:
    try:
        return httpx.get(fleet.url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_dead_edge_is_back_within_2s_by_the_engine_and_by_the_watcher(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write("v1", replicas=2)
    fleet.deploy()
    edge = f"{fleet.name}-edge"
    [inspected] = podman_json("container", "inspect", edge)
    assert inspected["HostConfig"]["RestartPolicy"]["Name"] == "always"

    # A crash (the process dies, no one asked): podman's restart policy, no corral running.
    os.kill(inspected["State"]["Pid"], signal.SIGKILL)
    by_engine = until(lambda: _serves(fleet), 10, every=0.02)
    assert by_engine < 2.0, f"the engine brought the edge back in {by_engine:.2f}s"

    # podman kill counts as a user's stop in podman 4.3: the edge stays down, and says so.
    subprocess.run(["podman", "kill", edge], check=True, capture_output=True)
    time.sleep(1.5)
    assert not _serves(fleet)
    down = fleet.corral("status", "--json", check=False)
    assert down.returncode == 1 and "the edge is exited" in down.stdout, down.stdout

    with watching(fleet.spec, stderr=True) as watch:
        first = until(lambda: _serves(fleet), 30, every=0.02)  # its first pass brings it back
        time.sleep(2)  # the event stream is up
        subprocess.run(["podman", "kill", edge], check=True, capture_output=True)
        by_watcher = until(lambda: _serves(fleet), 30, every=0.02)
        assert fleet.corral("status", "--json", check=False).returncode == 0
    print(f"engine: {by_engine:.2f}s; watcher: first pass {first:.2f}s, kill {by_watcher:.2f}s")
    assert by_watcher < 2.0, f"the watcher brought the edge back in {by_watcher:.2f}s: {watch}"


def _running(fleet: Fleet, role: str = "web") -> list[str]:
    return sorted(
        c["Names"][0]
        for c in containers(fleet.name)
        if c["Labels"].get("io.corral.role") == role and c["State"] == "running"
    )


def _audit(fleet: Fleet) -> list[dict[str, Any]]:
    return list(json.loads(fleet.corral("audit", "--json").stdout)["audit"])


def test_a_role_whose_new_instances_crash_ends_degraded_with_the_old_one_serving(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write("v1", replicas=2)
    fleet.deploy()
    before = _running(fleet)
    [volume] = podman_json("volume", "inspect", f"{fleet.name}-web-data")
    (Path(volume["Mountpoint"]) / "crash-on-start").write_text("")  # new instances exit 3
    subprocess.run(["podman", "kill", before[0]], check=True, capture_output=True)
    with watching(fleet.spec, "--diff-interval", "600", stderr=True) as watch:
        until(lambda: bool(fleet.status()["roles"][0]["degraded"]), 60)
        with fleet.load(clients=2) as load:  # the old one serves, and nothing churns
            time.sleep(5)
        status = fleet.corral("status", "--json", check=False)
    _, err = watch.communicate(timeout=30)
    assert load.total > 0 and load.failures == 0, load.outcomes
    assert _running(fleet) == [before[1]]
    [role] = json.loads(status.stdout)["roles"]
    assert status.returncode == 1 and "exited" in role["degraded"], status.stdout
    tries = [e for e in _audit(fleet) if e["action"] == "reconcile" and e["outcome"] == "failed"]
    assert 3 <= len(tries) <= 4, tries  # backed off: 1 s, then 2, 4, 8... between tries
    assert [e["target"] for e in _audit(fleet) if e["action"] == "degraded"] == ["web"]
    assert "ALERT fleet" in err and "role web degraded" in err, err[-2000:]


def test_a_file_changed_inside_an_instance_gets_it_burned(fleet: Fleet, shared_base: str) -> None:
    fleet.write("v1", replicas=2, extra="    lockdown: {read_only_root: false}\n")
    fleet.deploy()
    before = _running(fleet)
    [inspected] = podman_json("container", "inspect", before[0])
    upper = Path(inspected["GraphDriver"]["Data"]["UpperDir"])
    with watching(fleet.spec, "--diff-interval", "1"):
        time.sleep(3)  # its first diffs are the instances' baselines
        (upper / "srv" / "app").mkdir(parents=True, exist_ok=True)
        (upper / "srv" / "app" / "server.py").write_text("# changed outside corral\n")
        took = until(lambda: before[0] not in _running(fleet) and len(_running(fleet)) == 2, 30)
    [burn] = [e for e in _audit(fleet) if e["action"] == "burn"]
    assert burn["target"] == before[0], burn
    assert "files changed" in burn["details"]["reason"] and "/srv/app" in burn["details"]["reason"]
    assert before[1] in _running(fleet)
    print(f"changed file -> replaced in {took:.2f}s")


def test_an_instance_started_unlike_its_release_is_burned(fleet: Fleet, shared_base: str) -> None:
    fleet.write("v1", replicas=2)
    fleet.deploy()
    before = _running(fleet)
    unchanged = json.loads(fleet.corral("reconcile", "--json").stdout)
    assert unchanged["status"] == "unchanged", unchanged  # no drift seen where there is none
    # A look-alike: the same name, labels, image and network, one more variable, as root.
    [inspected] = podman_json("container", "inspect", before[0])
    subprocess.run(["podman", "rm", "-f", before[0]], check=True, capture_output=True)
    [network] = inspected["NetworkSettings"]["Networks"]
    argv = ["podman", "run", "-d", "--name", before[0], "--network", network]
    argv += [f"--label={k}={v}" for k, v in inspected["Config"]["Labels"].items()]
    argv += ["--env", "INJECTED=1", "--user", "root", inspected["Image"]]
    argv += inspected["Config"]["Cmd"]
    subprocess.run(argv, check=True, capture_output=True)
    result = json.loads(fleet.corral("reconcile", "--json").stdout)
    [burn] = result["burns"]
    assert burn["instance"] == before[0], result
    assert "environment: missing START_DELAY; added INJECTED;" in burn["reason"], burn
    assert "mounts: -/var/lib/app" in burn["reason"], burn
    assert "user root instead of app" in burn["reason"], burn
    assert len(_running(fleet)) == 2 and before[1] in _running(fleet)


def test_an_instance_unhealthy_past_its_grace_is_replaced(fleet: Fleet, shared_base: str) -> None:
    fleet.write("v1", replicas=2)
    fleet.spec.write_text(fleet.spec.read_text().replace("drain: 2s,", "drain: 2s, grace: 3s,"))
    fleet.deploy()
    before = _running(fleet)
    [inspected] = podman_json("container", "inspect", before[0])
    [volume] = podman_json("volume", "inspect", f"{fleet.name}-web-data")
    sick = Path(volume["Mountpoint"]) / f"sick-{inspected['Id'][:12]}"  # its hostname
    with watching(fleet.spec, "--diff-interval", "600", settle=3), fleet.load(clients=2) as load:
        sick.write_text("")  # its health check answers 500 from now on, and it serves on
        took = until(lambda: before[0] not in _running(fleet) and len(_running(fleet)) == 2, 60)
    assert took >= 3, took  # not before its grace ran out
    load.assert_no_failures()
    [burn] = [e for e in _audit(fleet) if e["action"] == "burn"]
    assert burn["target"] == before[0], burn
    assert "grace 3s" in burn["details"]["reason"], burn
    assert before[1] in _running(fleet)
    print(f"sick -> replaced in {took:.2f}s (grace 3s)")
