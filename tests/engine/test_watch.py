"""`corral reconcile` on the real engine: a killed instance is replaced while the fleet
keeps serving through the edge, an orphan (corral's labels, a role of no release) is
removed, and both burns are in the audit trail."""

from __future__ import annotations

import json
import subprocess
import time

from tests.engine.helpers import Fleet, containers, until, watching


def _running(fleet: Fleet, role: str = "web") -> list[str]:
    return sorted(
        c["Names"][0]
        for c in containers(fleet.name)
        if c["Labels"].get("io.corral.role") == role and c["State"] == "running"
    )


def test_reconcile_replaces_a_killed_instance_and_removes_an_orphan(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write("v1", replicas=2)
    fleet.deploy()
    before = _running(fleet)
    assert len(before) == 2
    unchanged = json.loads(fleet.corral("reconcile", "--json").stdout)
    assert unchanged["status"] == "unchanged"

    # A SIGKILL cuts the requests in flight on the instance (a POST is not retried): the
    # load covers the repair, once the edge's checks took the dead server out.
    subprocess.run(["podman", "kill", before[0]], check=True, capture_output=True)
    time.sleep(3)
    with fleet.load(clients=2) as load:
        result = json.loads(fleet.corral("reconcile", "--json").stdout)
    assert result["status"] == "converged", result
    assert [b["instance"] for b in result["burns"]] == [before[0]]
    after = _running(fleet)
    assert len(after) == 2 and before[1] in after and before[0] not in after
    assert load.total > 0
    load.assert_no_failures()

    [inspected] = json.loads(
        subprocess.run(
            ["podman", "container", "inspect", after[0]],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    labels = {**inspected["Config"]["Labels"], "io.corral.role": "ghost"}
    orphan = f"{fleet.name}-ghost-r1-1"
    argv = ["podman", "run", "-d", "--name", orphan]
    argv += [f"--label={k}={v}" for k, v in labels.items()]
    argv += [inspected["Image"], "sleep", "600"]
    subprocess.run(argv, check=True, capture_output=True)
    result = json.loads(fleet.corral("reconcile", "--json").stdout)
    assert orphan in [b["instance"] for b in result["burns"]], result
    assert orphan not in [c["Names"][0] for c in containers(fleet.name)]
    assert _running(fleet) == after

    audit = json.loads(fleet.corral("audit", "--json").stdout)
    entries = audit["audit"]
    burned = {e["target"] for e in entries if e["action"] == "burn"}
    assert {before[0], orphan} <= burned


def test_watch_burns_an_instance_exec_went_into(fleet: Fleet, shared_base: str) -> None:
    fleet.write("v1", replicas=2)
    fleet.deploy()
    before = _running(fleet)
    with watching(fleet.spec, "--diff-interval", "1", settle=3):
        subprocess.run(["podman", "exec", before[0], "true"], check=True, capture_output=True)
        took = until(lambda: before[0] not in _running(fleet) and len(_running(fleet)) == 2, 30)
    assert before[1] in _running(fleet)
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    [burn] = [e for e in audit if e["action"] == "burn"]
    assert burn["target"] == before[0] and "exec event" in json.dumps(burn["details"]), burn
    print(f"exec -> replaced in {took:.2f}s")
