"""Test before deploy, for real: throwaway environments, the gate, nothing left behind.

None of these measures requests or time (they share the machine); the smoke test that
takes a fleet back under load is in test_smoke_rollback.py."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx

from tests.engine.helpers import CORRAL, Fleet, podman_json

HTTP_TEST = """
import httpx

def test_version(edge_url):
    assert httpx.get(edge_url).json()["version"] == "{version}"
"""

INSTANCE_TEST = """
def test_app_is_read_only_for_its_user(host):
    assert host.file("/srv/app/server.py").exists
    assert host.run("test -w /srv/app/server.py").rc != 0
    assert host.user().name == "app"
"""


def write_tests(fleet: Fleet, version: str, extra: str = "") -> None:
    (fleet.folder / "tests" / "test_http.py").write_text(HTTP_TEST.format(version=version))
    (fleet.folder / "tests" / "test_instance.py").write_text(INSTANCE_TEST + extra)


def leftovers(fleet: Fleet) -> dict[str, list[str]]:
    """Objects of this fleet's test environments (io.corral.env=test-*) still in the engine."""
    fleet_label = f"label=io.corral.fleet={fleet.name}"
    found = {
        "containers": [
            (c["Names"][0], c.get("Labels"))
            for c in podman_json("ps", "--all", "--filter", fleet_label)
        ],
        "networks": [
            (n["name"], n.get("labels"))
            for n in podman_json("network", "ls", "--filter", fleet_label)
        ],
        "volumes": [
            (v["Name"], v.get("Labels"))
            for v in podman_json("volume", "ls", "--filter", fleet_label)
        ],
    }
    return {
        kind: sorted(
            name
            for name, labels in items
            if (labels or {}).get("io.corral.env", "").startswith("test-")
        )
        for kind, items in found.items()
    }


def test_failing_test_blocks_deploy_and_fixing_it_passes(fleet: Fleet, shared_base: str) -> None:
    write_tests(fleet, "v1")
    result = json.loads(fleet.corral("test", "--json").stdout)["results"]
    [web] = result
    assert web["outcome"] == "passed"
    kinds = {c["kind"] for c in web["checks"]}
    assert {"health", "lockdown", "http", "testinfra"} <= kinds
    fleet.corral("deploy")
    assert httpx.get(fleet.url).json()["version"] == "v1"

    fleet.write(version="v2")  # the test still expects v1: it must fail
    proc = fleet.corral("test", check=False)
    assert proc.returncode == 1 and "test_version" in proc.stdout
    refused = fleet.corral("deploy", check=False)
    assert refused.returncode == 5  # the gate refused
    assert "no passing test record" in refused.stderr and "corral test web" in refused.stderr
    assert httpx.get(fleet.url).json()["version"] == "v1"  # the live fleet is untouched
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}

    write_tests(fleet, "v2")
    fleet.corral("test")
    report = json.loads(fleet.corral("test", "--report", "--json").stdout)["roles"]
    assert report[0]["outcome"] == "passed" and report[0]["image_version"].startswith("2-")
    fleet.corral("deploy")  # passes the gate, then the smoke test against the live edge
    assert httpx.get(fleet.url).json()["version"] == "v2"
    again = json.loads(fleet.corral("test", "--json").stdout)["results"]
    assert again[0]["outcome"] == "already-passed"  # this digest, these tests


def test_skip_tests_needs_a_reason_and_is_audited(fleet: Fleet, shared_base: str) -> None:
    assert fleet.corral("deploy", "--skip-tests", check=False).returncode == 2
    fleet.deploy()
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    skips = [e for e in audit if e["action"] == "skip-tests"]
    assert skips and skips[0]["details"]["reason"] == "deploy mechanics test"


def test_unhealthy_role_fails_with_log_and_is_torn_down(fleet: Fleet, shared_base: str) -> None:
    write_tests(fleet, "broken")
    fleet.write(version="broken")
    proc = fleet.corral("test", check=False)
    assert proc.returncode == 1
    assert "did not become healthy" in proc.stdout
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}


def test_syntax_error_and_hanging_test_fail_cleanly(fleet: Fleet, shared_base: str) -> None:
    write_tests(fleet, "v1", extra="\ndef test_hangs():\n    import time\n    time.sleep(300)\n")
    (fleet.folder / "tests" / "test_broken.py").write_text("def test_oops(:\n")
    proc = fleet.corral("test", "--per-test-timeout", "3", check=False)
    assert proc.returncode == 1
    assert "test_broken.py" in proc.stdout and "SyntaxError" in proc.stdout
    assert "test_hangs" in proc.stdout and "Timeout" in proc.stdout
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}


def test_interrupted_and_killed_test_runs_leave_nothing(fleet: Fleet, shared_base: str) -> None:
    write_tests(fleet, "v1", extra="\ndef test_slow():\n    import time\n    time.sleep(60)\n")
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(
            [*CORRAL, "-f", str(fleet.spec), "test", "--again"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_test_instances(fleet)
        time.sleep(3)  # inside the role's tests by now
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
        _assert_role_tests_ended(fleet)
        if sig == signal.SIGKILL:
            assert leftovers(fleet)["containers"], "kill -9 cannot clean up by itself"
            fleet.corral("status")  # reads only: the dead run's objects stay...
            assert leftovers(fleet)["containers"]
            swept = json.loads(fleet.corral("gc", "--json").stdout)  # ...until gc sweeps
            assert len(swept["test_environments"]) == 1, swept
        assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}, sig


def _assert_role_tests_ended(fleet: Fleet) -> None:
    """No pytest of this fleet's role tests outlives corral (its sandbox dies with it)."""
    deadline = time.monotonic() + 10
    while (alive := _role_test_processes(fleet)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"role tests outlived corral: {alive}"


def _role_test_processes(fleet: Fleet) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "corral.testing.plugin" in cmdline and str(fleet.folder) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def _wait_for_test_instances(fleet: Fleet) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any("-web-" in n for n in leftovers(fleet)["containers"]):
            return
        time.sleep(0.3)
    raise AssertionError("the test environment never came up")


FIXTURE_TEST = """
def test_the_fixture_is_seeded_and_its_links_are_copied_as_links(host):
    seeded = host.file("/var/lib/app/hello.txt")
    assert seeded.content_string == "hello\\n" and seeded.user == "app"
    assert host.file("/var/lib/app/sub/inner.txt").user == "app"
    for name, target in {links!r}.items():
        link = host.run("readlink /var/lib/app/" + name)
        assert link.stdout.strip() == target  # the very link, not what it points to
        assert host.run("stat -c %U /var/lib/app/" + name).stdout.strip() == "app"
    assert host.run("grep -r SECRET-TEXT /var/lib/app").rc == 1
"""


def test_fixtures_seed_the_test_volume_and_links_in_them_are_never_followed(
    fleet: Fleet, shared_base: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("SECRET-TEXT\n")
    secret.chmod(0o600)
    seed = fleet.folder / "seed"
    (seed / "sub").mkdir(parents=True)
    (seed / "hello.txt").write_text("hello\n")
    (seed / "sub" / "inner.txt").write_text("inner\n")
    links = {"abs": str(secret), "up": "../../outside/secret.txt", "root": "/"}
    for name, target in links.items():
        (seed / name).symlink_to(target)
    fleet.write(extra="    fixtures: {data: seed}\n")
    write_tests(fleet, "v1")
    (fleet.folder / "tests" / "test_fixture.py").write_text(FIXTURE_TEST.format(links=links))
    proc = fleet.corral("test", "--json", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [web] = json.loads(proc.stdout)["results"]
    names = {c["name"] for c in web["checks"]}
    assert web["outcome"] == "passed" and any("test_the_fixture_is_seeded" in n for n in names)
    info = secret.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)  # the host file untouched
    assert secret.read_text() == "SECRET-TEXT\n"
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}


def test_a_fixture_outside_the_spec_folder_is_refused_before_anything_runs(
    fleet: Fleet, shared_base: str
) -> None:
    (fleet.folder / "escape").symlink_to("/")
    fleet.write(extra="    fixtures: {data: escape}\n")
    write_tests(fleet, "v1")
    proc = fleet.corral("test", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "roles.web.fixtures.data" in proc.stdout + proc.stderr
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}
