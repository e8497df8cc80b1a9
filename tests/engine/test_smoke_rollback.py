"""A smoke test that fails after a deploy takes the fleet back, under load, with no
failed request, and says why (the test that the live edge is not a test environment's).
It measures failed requests, so it runs alone (not in SHARES_MACHINE)."""

from __future__ import annotations

import json

import httpx

from tests.engine.helpers import Fleet
from tests.engine.test_gate import write_tests


def test_a_failed_smoke_test_takes_the_fleet_back(fleet: Fleet, shared_base: str) -> None:
    write_tests(fleet, "v1")
    fleet.corral("test")
    fleet.corral("deploy")
    fleet.write(version="v2")
    write_tests(fleet, "v2")
    (fleet.folder / "tests" / "test_where.py").write_text(
        "def test_not_on_the_live_edge(edge_url):\n"
        "    assert '127.0.0.1' not in edge_url  # true in a test environment only\n"
    )
    fleet.corral("test")  # passes in the throwaway environment
    with fleet.load() as load:
        proc = fleet.corral("deploy", check=False)
    assert proc.returncode == 6  # failed, and the fleet went back
    assert "smoke test failed" in proc.stderr and "test_not_on_the_live_edge" in proc.stderr
    assert "back on release r1" in proc.stderr
    # why, readable: pytest's assertion text and the new instances' last log lines
    assertion = "assert '127.0.0.1' not in 'http://127.0.0.1:"
    logged = f"{fleet.name}-web-r2-1: app v2 listening on :8000"
    assert assertion in proc.stderr and logged in proc.stderr, proc.stderr
    load.assert_no_failures()
    assert httpx.get(fleet.url).json()["version"] == "v1"
    assert {i["release"] for i in fleet.status()["roles"][0]["instances"]} == {1}
    last = json.loads(fleet.corral("history", "--json").stdout)["releases"][-1]
    assert last["status"] == "rolled-back" and "smoke test failed" in last["message"]
    assert assertion in last["message"]
    shown = fleet.corral("history", "--release", str(last["release"])).stdout
    assert assertion in shown and logged in shown, shown
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    deploy = [e for e in audit if e["action"] == "deploy"][-1]
    assert deploy["outcome"] == "rolled-back" and assertion in deploy["details"]["error"]
