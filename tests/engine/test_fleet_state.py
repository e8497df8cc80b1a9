"""Issue 11's reproduction: fresh clones of one repository deploy one fleet in turn and at
the same time, under load through the edge, and continue one history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from corral.state import State
from tests.engine.helpers import CORRAL, Fleet, containers


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _clone(origin: Path, into: Path, fleet: Fleet) -> Fleet:
    _git("clone", "--quiet", str(origin), str(into), cwd=origin.parent)
    return Fleet(into, fleet.name, fleet.port)


def _commit(folder: Path, message: str) -> None:
    _git("add", "-A", cwd=folder)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=folder)


def test_fresh_clones_continue_one_fleet_with_no_failed_request(
    fleet: Fleet, shared_base: str, state_home: Path, tmp_path: Path
) -> None:
    _git("init", "--quiet", "-b", "main", cwd=fleet.folder)
    (fleet.folder / "tests" / "README").write_text("git keeps no empty folder\n")
    _commit(fleet.folder, "v1")
    a = _clone(fleet.folder, tmp_path / "a", fleet)
    a.deploy()
    b = _clone(fleet.folder, tmp_path / "b", fleet)
    b.write(version="v2")
    with a.load() as load:
        b.deploy()  # today: "retiring demo-web-r1-1 (role web is no longer in the spec)"
        a.write(version="v3")
        a.deploy()  # today: "Connection refused" on a socket another state's edge left
        c, d = (_clone(fleet.folder, tmp_path / name, fleet) for name in ("c", "d"))
        c.write(version="v4")
        d.write(version="v4")
        both = [
            subprocess.Popen(
                [*_argv(x), "deploy", "--wait", "120", "--skip-tests", "--reason", "t", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for x in (c, d)
        ]
        results = [p.communicate(timeout=300) for p in both]
    load.assert_no_failures()
    assert [p.returncode for p in both] == [0, 0], results
    assert load.versions["v2"] > 0 and load.versions["v3"] > 0 and load.versions["v4"] > 0
    status = a.status()
    assert status["release"] == 4  # r1 (a), r2 (b), r3 (a), r4 (c or d); the other: unchanged
    assert sorted(json.loads(out)["status"] for out, _ in results) == ["active", "unchanged"]
    versions = [r["version"] for r in status["roles"] if r["role"] == "web"]
    assert versions[0].startswith("4-")  # build numbers continued: v1..v4 are builds 1..4
    with State.open(state_home / fleet.name / "state.db") as state:
        deploys = [e for e in state.audit_log(fleet.name) if e.action == "deploy"]
    # One audit trail for every clone: r1 to r4 (the unchanged deploy changed nothing).
    assert [e.details.get("release") for e in deploys] == [1, 2, 3, 4]
    for clone in (a, b):
        assert not (clone.folder / ".corral").exists()


def _argv(fleet: Fleet) -> list[str]:
    return [*CORRAL, "-f", str(fleet.spec)]


def test_a_lost_state_is_recovered_and_another_state_changes_nothing(
    fleet: Fleet, shared_base: str, state_home: Path, tmp_path: Path
) -> None:
    """Issue 11, deliverable 3, on Podman under load: a corral pointed at another state is
    refused and names the owner; the state file lost, `corral state recover` rebuilds it
    from the labels and the next deploy continues the numbers; no request fails."""
    fleet.deploy()
    owner = state_home / fleet.name / "state.db"
    before = sorted(c["Names"][0] for c in containers(fleet.name))
    with fleet.load() as load:
        other = {"CORRAL_STATE": str(tmp_path / "other.db")}
        refused = fleet.deploy("--json", check=False, env=other)
        assert refused.returncode == 5, refused.stderr
        assert json.loads(refused.stdout)["owner"] == str(owner)
        assert f"CORRAL_STATE={owner}" in refused.stderr
        assert fleet.corral("destroy", "--yes", check=False, env=other).returncode == 5
        for suffix in ("", "-wal", "-shm"):
            Path(f"{owner}{suffix}").unlink(missing_ok=True)
        lost = fleet.deploy(check=False)
        assert lost.returncode == 5 and "corral state recover" in lost.stderr
        assert sorted(c["Names"][0] for c in containers(fleet.name)) == before
        recovered = json.loads(fleet.corral("state", "recover", "--json").stdout)
        assert recovered["release"] == 1 and len(recovered["instances"]) == 2
        assert recovered["volumes"] == [f"{fleet.name}-web-data"]
        assert fleet.deploy("--json").returncode == 0  # unchanged: nothing to do
        fleet.write(version="v2")
        done = json.loads(fleet.deploy("--json").stdout)
    load.assert_no_failures()
    assert done["release"] == 2 and load.versions["v2"] > 0
    status = fleet.status()
    assert next(r["version"][:2] for r in status["roles"] if r["role"] == "web") == "2-"
    with State.open(owner) as state:
        trail = [(e.action, e.outcome) for e in state.audit_log(fleet.name)]
        last = state.audit_log(fleet.name, action="deploy")[-1]
    # The new state's trail: the refused deploy (the empty state owned nothing), the
    # recovery, the deploy that found nothing to do and the one that made release 2.
    assert trail[:2] == [("deploy", "refused"), ("state-recover", "ok")], trail
    assert last.details.get("release") == 2
