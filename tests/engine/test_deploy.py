"""Deploy by replacement, for real: Podman instances behind a real HAProxy edge."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import httpx

from corral.deploy.context import FLEET_EDGE_KEY
from corral.deploy.scope import Scope
from corral.edge.container import (
    EDGE_GID,
    EDGE_UID,
    MASTER_SOCKET_NAME,
    RUNTIME_ROOT,
    SOCKET_NAME,
    Edge,
)
from corral.engines.podman import PodmanEngine
from corral.spec import load_spec
from corral.state import State
from tests.engine.helpers import CORRAL, Fleet, containers, free_port, podman_json


def web_instances(status: dict[str, object]) -> list[dict[str, object]]:
    [web] = [r for r in status["roles"] if r["role"] == "web"]  # type: ignore[attr-defined]
    return list(web["instances"])


def test_rolling_deploy_under_load_loses_no_request(
    fleet: Fleet, shared_base: str, state_backend: str
) -> None:
    fleet.deploy()
    assert httpx.get(fleet.url).json()["version"] == "v1"
    fleet.write(version="v2")
    with fleet.load() as load:
        fleet.deploy()
    load.assert_no_failures()
    assert load.total > 50, load.outcomes
    assert load.versions["v2"] > 0
    status = fleet.status()
    assert status["release"] == 2
    instances = web_instances(status)
    assert len(instances) == 2
    assert {i["release"] for i in instances} == {2}
    assert {i["health"] for i in instances} == {"up"}
    assert len(containers(fleet.name)) == 3  # two instances and the edge, nothing else


def test_broken_version_leaves_old_release_serving(fleet: Fleet, shared_base: str) -> None:
    fleet.deploy()
    fleet.write(version="broken")
    with fleet.load() as load:
        proc = fleet.deploy(check=False)
    assert proc.returncode == 6  # failed, and the fleet went back
    assert "did not become healthy" in proc.stderr and "back on release r1" in proc.stderr
    load.assert_no_failures()
    assert set(load.versions) == {"v1"}
    status = fleet.status()
    assert status["release"] == 1
    assert {i["release"] for i in web_instances(status)} == {1}
    history = json.loads(fleet.corral("history", "--json").stdout)["releases"]
    assert [r["status"] for r in history] == ["active", "rolled-back"]  # failed, then undone


def test_instances_are_locked_down(fleet: Fleet, shared_base: str) -> None:
    fleet.deploy()
    [one, *_] = [c for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "instance"]
    [info] = podman_json("container", "inspect", one["Id"])
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert info["EffectiveCaps"] in (None, []) and info["BoundingCaps"] in (None, [])
    assert host["Memory"] == 512 * 1024**2  # the spec's default resources
    assert host["NanoCpus"] == 1_000_000_000 and host["PidsLimit"] == 256
    assert info["Config"]["User"] == "app"
    assert "no-new-privileges" in " ".join(host["SecurityOpt"] or [])
    assert not host.get("PortBindings")
    assert set(host["Tmpfs"]) >= {"/tmp", "/run"}
    whoami = httpx.get(fleet.url).json()
    assert whoami["version"] == "v1"


def test_rollback_is_a_deploy_recorded_in_history_and_audit(
    fleet: Fleet, shared_base: str, state_backend: str
) -> None:
    fleet.deploy()
    fleet.write(version="v2")
    fleet.deploy()
    with fleet.load() as load:
        fleet.corral("rollback", "--skip-tests", "--reason", "rollback test")
    load.assert_no_failures()
    assert httpx.get(fleet.url).json()["version"] == "v1"
    history = json.loads(fleet.corral("history", "--json").stdout)["releases"]
    assert history[-1]["kind"] == "rollback" and history[-1]["source"] == 1
    assert history[-1]["status"] == "active"
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    assert ("rollback", "ok") in [(e["action"], e["outcome"]) for e in audit]
    # --to N goes to any release that went live, through the same path; others are refused
    skip = ("--skip-tests", "--reason", "rollback test")
    fleet.corral("rollback", "--to", "2", *skip)
    assert httpx.get(fleet.url).json()["version"] == "v2"
    fleet.write(version="broken")
    assert fleet.deploy(check=False).returncode == 6  # a release that failed and was undone
    [failed] = [
        r
        for r in json.loads(fleet.corral("history", "--json").stdout)["releases"]
        if r["status"] == "rolled-back"
    ]
    refused = fleet.corral("rollback", "--to", str(failed["release"]), *skip, check=False)
    assert refused.returncode == 2 and "only releases that went live" in refused.stderr
    assert fleet.corral("rollback", "--to", "99", *skip, check=False).returncode == 2
    assert httpx.get(fleet.url).json()["version"] == "v2"


def test_blue_green_switches_at_once_and_switches_back_instantly(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write(strategy="blue-green")
    fleet.deploy()
    first = {
        c["Names"][0] for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "instance"
    }
    fleet.write(version="v2", strategy="blue-green")
    with fleet.load() as load:
        fleet.deploy()
    load.assert_no_failures()
    stopped = {c["Names"][0] for c in containers(fleet.name) if c["State"] == "exited"}
    assert stopped == first  # the blue set is kept, stopped, for a switch back
    with fleet.load() as load:
        fleet.corral("rollback", "--skip-tests", "--reason", "rollback test")
    load.assert_no_failures()
    running = {
        c["Names"][0]
        for c in containers(fleet.name)
        if c["State"] == "running" and c["Labels"]["io.corral.kind"] == "instance"
    }
    assert running == first  # the same instances came back, none was rebuilt
    assert httpx.get(fleet.url).json()["version"] == "v1"


def test_plan_exit_codes_and_volume_survives_destroy(fleet: Fleet, shared_base: str) -> None:
    first = fleet.corral("plan", check=False)  # nothing built yet: the volume is still counted
    assert first.returncode == 3 and "touches 1 volume " in first.stdout, first.stdout
    data = json.loads(fleet.corral("--json", "plan", check=False).stdout)
    assert data["has_changes"] and data["unbuilt"] == ["web"]
    assert data["volumes_touched"] == 1 and data["unbuilt_volumes"] == [f"{fleet.name}-web-data"]
    fleet.deploy()
    assert fleet.corral("plan", check=False).returncode == 0
    assert httpx.get(fleet.url + "write").status_code == 200
    fleet.write(version="v2")
    fleet.corral("build")
    proc = fleet.corral("plan", check=False)
    assert proc.returncode == 3 and "touches 0 volumes" in proc.stdout
    fleet.corral("destroy", "--yes")
    assert containers(fleet.name) == []
    volumes = podman_json("volume", "ls", "--filter", f"label=io.corral.fleet={fleet.name}")
    assert [v["Name"] for v in volumes] == [f"{fleet.name}-web-data"]
    fleet.deploy()
    assert httpx.get(fleet.url + "write").status_code == 200
    note = subprocess.run(
        ["podman", "volume", "inspect", f"{fleet.name}-web-data", "--format", "{{.Mountpoint}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    with open(note.stdout.strip() + "/note") as handle:
        assert handle.read().split() == ["v1", "v2"]


def test_a_second_deploy_is_refused_naming_the_holder(
    fleet: Fleet, shared_base: str, state_backend: str
) -> None:
    spec = load_spec(fleet.spec)
    target = spec.state_location.target  # a file, or the PostgreSQL database
    with State.open(target) as state, state.lock("deploy", purpose="deploy by test"):
        proc = fleet.deploy(check=False)
    assert proc.returncode == 4  # the lock is held
    assert "deploy lock" in proc.stderr and "deploy by test" in proc.stderr


def test_a_new_port_gets_a_new_edge_in_front_of_the_same_instances(
    fleet: Fleet, shared_base: str
) -> None:
    """A new public port needs a new edge pod (a reload cannot publish a port): the deploy
    starts one, in front of the very same instances; ``edge replace`` then has nothing to
    change and says so (tests/engine/test_port_change.py: the deploy's undo and rollback).
    """
    fleet.deploy()
    before = {c["Names"][0]: c["Id"] for c in containers(fleet.name)}
    fleet.port = free_port()
    fleet.write()
    fleet.deploy()
    assert fleet.corral("plan", check=False).returncode == 0
    done = json.loads(fleet.corral("edge", "replace", "--json").stdout)
    assert done["reloaded"] is True and done["unchanged"] is True
    after = {c["Names"][0]: c["Id"] for c in containers(fleet.name)}
    edge = f"{fleet.name}-edge"
    assert before[edge] != after[edge]  # a new edge container...
    # ...in front of the very same instances (the edge's pod, its infra container
    # included, is new too: the published port changed)
    assert {n: i for n, i in before.items() if not n.startswith(edge)} == {
        n: i for n, i in after.items() if not n.startswith(edge)
    }
    assert httpx.get(fleet.url).json()["version"] == "v1"
    status = fleet.status()
    assert {i["health"] for i in web_instances(status)} == {"up"}
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    assert ("edge-replace", "ok") in [(e["action"], e["outcome"]) for e in audit]


def test_low_ports_need_one_named_capability(fleet: Fleet, shared_base: str) -> None:
    # The edge adds it by itself for a public port under 1024; a role names it in lockdown.
    fleet.port = free_port(below=1024)
    fleet.write(replicas=1, extra="    lockdown: {capabilities: [NET_BIND_SERVICE]}\n")
    fleet.deploy()
    assert httpx.get(fleet.url, timeout=5).json()["version"] == "v1"
    [edge] = podman_json("container", "inspect", f"{fleet.name}-edge")
    [instance] = [c for c in containers(fleet.name) if c["Labels"]["io.corral.kind"] == "instance"]
    [web] = podman_json("container", "inspect", instance["Id"])
    for info in (edge, web):
        assert info["BoundingCaps"] == ["CAP_NET_BIND_SERVICE"]  # that one, no other


def test_ctrl_c_during_a_deploy_keeps_serving_and_the_next_deploy_converges(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write(replicas=2, start_delay=1.0)
    fleet.deploy()
    fleet.write(version="v2", replicas=2, start_delay=1.0)
    fleet.corral("build")
    with fleet.load() as load:
        proc = subprocess.Popen(
            [*CORRAL, "-f", str(fleet.spec), "deploy", "--skip-tests", "--reason", "ctrl-c test"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until the deploy is half-way: one new, one old
            seen.append(line)
            if "starting" in line and "-web-r2-2" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, [*seen, err]
        assert "interrupted" in err
        # Half-way: old and new serve side by side; the release is marked aborted
        assert httpx.get(fleet.url).json()["version"] in ("v1", "v2")
        history = json.loads(fleet.corral("history", "--json").stdout)["releases"]
        assert history[-1]["status"] == "aborted"
        fleet.deploy()
    load.assert_no_failures()
    status = fleet.status()
    assert {i["release"] for i in web_instances(status)} == {status["release"]}
    assert len(web_instances(status)) == 2 and status["unfinished"] == []
    assert httpx.get(fleet.url).json()["version"] == "v2"


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the host's ``nobody``: what any other host user may do."""
    return subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_only_root_and_haproxy_reach_the_edges_admin_socket(
    fleet: Fleet, shared_base: str, engine: PodmanEngine
) -> None:
    fleet.write(replicas=1)
    fleet.deploy()
    folder = Edge(engine, Scope(fleet.name), FLEET_EDGE_KEY).folder
    [edge] = podman_json("container", "inspect", f"{fleet.name}-edge")
    assert edge["Config"]["User"] == f"{EDGE_UID}:{EDGE_GID}"
    assert _owner_and_mode(RUNTIME_ROOT) == _owner_and_mode(folder) == (0, 0, 0o700)
    sock = folder / "sock"
    assert _owner_and_mode(sock) == (EDGE_UID, EDGE_GID, 0o700)
    assert (sock / SOCKET_NAME).stat().st_uid == EDGE_UID  # HAProxy made it there
    # the master's socket (reloads) is HAProxy's alone too, in the same private folder
    assert _owner_and_mode(sock / MASTER_SOCKET_NAME)[::2] == (EDGE_UID, 0o600)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock / SOCKET_NAME)!r})\n"
        "except PermissionError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('connected')\n"
        "try:\n"
        f"    open({str(sock / 'planted')!r}, 'w')\n"
        "except PermissionError:\n"
        "    sys.exit(0)\n"
        "sys.exit('planted a file')\n"
    )
    refused = _as_nobody(probe)
    assert refused.returncode == 0, refused.stderr
    assert httpx.get(fleet.url, timeout=5).json()["version"] == "v1"  # and the edge works
