"""Health and edge changes, deployed for real (issue 10, reproduction 2).

A health-path change used to make a release that changed nothing and checked nothing, and
the `corral edge replace` that `plan` asked for then marked every server down. Now a health
change rolls the role: new instances are checked on the new path before they take traffic,
each server of the edge is checked on its own release's path, and the edge's configuration
changes by a reload in place that refuses no connection.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx

from corral.edge.container import CHECK_MAP, CONFIG_IN_CONTAINER
from corral.edge.runtime import worker_pid
from tests.engine.helpers import Fleet, containers

HEALTH_404 = "{http: /missing, interval: 200ms, retries: 10}"
HEALTH_READY = "{http: '/healthz?ready=1', interval: 200ms, retries: 25}"
HEALTH_TCP = "{tcp: true, interval: 200ms, retries: 25}"


def check_paths(fleet: Fleet) -> dict[str, str]:
    """Every server's HTTP check path, as the running edge's check map has it."""
    with fleet.edge_api() as api:
        answer = api.command(f"show map {CONFIG_IN_CONTAINER}/{CHECK_MAP}")
    return {line.split()[1]: line.split()[2] for line in answer.splitlines() if line.strip()}


def serving(fleet: Fleet) -> dict[str, int]:
    """The edge's web servers that are up and take requests, by name, with their release."""
    with fleet.edge_api() as api:
        servers = api.servers("web")
    return {
        s.name: int(s.name.split("-r")[-1].split("-")[0])
        for s in servers
        if s.admin == "ready" and s.healthy
    }


def test_a_404_health_path_fails_the_deploy_and_the_fleet_keeps_serving(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.deploy()
    fleet.write(health=HEALTH_404)
    plan = fleet.corral("plan", check=False)
    assert plan.returncode == 3, plan.stdout + plan.stderr  # changes pending...
    assert "run configuration changed" in plan.stdout and "edge replace" not in plan.stdout
    with fleet.load() as load:
        failed = fleet.deploy(check=False)
    assert failed.returncode == 6, failed.stdout + failed.stderr  # failed, rolled back
    assert "GET /missing: HTTP 404" in failed.stderr and "back on release r1" in failed.stderr
    load.assert_no_failures()  # ...and the old instances served throughout, on their check
    assert set(serving(fleet).values()) == {1} and len(serving(fleet)) == 2
    assert set(check_paths(fleet).values()) == {"/healthz"}

    fleet.write(health=HEALTH_READY)  # the spec fixed: a new path that answers
    with fleet.load() as load:
        fleet.deploy()
    load.assert_no_failures()
    assert set(serving(fleet).values()) == {3} and len(serving(fleet)) == 2
    paths = check_paths(fleet)
    assert set(paths) == set(serving(fleet)) and set(paths.values()) == {"/healthz?ready=1"}
    history = json.loads(fleet.corral("history", "--json").stdout)["releases"]
    assert [r["status"] for r in history] == ["superseded", "rolled-back", "active"]

    with fleet.load() as load:  # reversible: a rollback brings the old check back
        fleet.corral("rollback", "--to", "1", "--skip-tests", "--reason", "health test")
    load.assert_no_failures()
    assert set(check_paths(fleet).values()) == {"/healthz"}
    assert len(serving(fleet)) == 2


def edge_requests(fleet: Fleet) -> list[str]:
    """The request lines every worker of the edge logged (``option httplog``)."""
    out = subprocess.run(
        ["podman", "logs", f"{fleet.name}-edge"], capture_output=True, text=True, check=True
    )
    return [line for line in (out.stdout + out.stderr).splitlines() if " fe_web web/" in line]


def test_edge_replace_reloads_in_place_and_refuses_no_connection(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.deploy()
    [before] = [c["Id"] for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "edge"]
    with fleet.edge_api() as api:
        old_pid = worker_pid(api)
    logged_before = len(edge_requests(fleet))
    with fleet.load() as load:
        for _ in range(3):
            done = json.loads(fleet.corral("edge", "replace", "--json").stdout)
            assert done["reloaded"] is True
            time.sleep(0.5)
    # The clients saw nothing, POSTs included, and neither did any worker of the edge.
    assert load.failures == 0 and load.outcomes["POST 200"] > 0, load.outcomes
    assert load.edge_problems() == [], load.edge_problems()
    # Every request, whichever worker had it, is logged: answered 200, never retried
    # (the last of the five connection counts), terminated normally ("----").
    logged = edge_requests(fleet)[logged_before:]
    assert len(logged) >= load.total, (len(logged), load.total)
    good = re.compile(r" 200 \d+ - - ---- \d+/\d+/\d+/\d+/0 ")
    bad = [line for line in logged if not good.search(line)]
    assert bad == [], bad[:5]
    [after] = [c["Id"] for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "edge"]
    assert after == before  # the same container, a new worker
    with fleet.edge_api() as api:
        assert worker_pid(api) not in (None, old_pid)
    assert len(serving(fleet)) == 2
    assert httpx.get(fleet.url, timeout=5).json()["version"] == "v1"


def test_a_check_kind_change_reloads_the_edge_in_the_same_deploy(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.deploy()
    [edge] = [c["Id"] for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "edge"]
    fleet.write(health=HEALTH_TCP)
    plan = fleet.corral("plan", check=False).stdout
    assert "edge: reload" in plan, plan
    with fleet.load() as load:
        fleet.deploy()
    assert load.failures == 0 and load.outcomes["POST 200"] > 0, load.outcomes
    assert load.edge_problems() == [], load.edge_problems()
    assert set(serving(fleet).values()) == {2} and len(serving(fleet)) == 2
    assert "edge:" not in fleet.corral("plan").stdout  # nothing left to do, no replace asked
    [same] = [c["Id"] for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "edge"]
    assert same == edge
