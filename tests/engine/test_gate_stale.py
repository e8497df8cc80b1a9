"""A gate that means tested, for real: stale passes do not count, dependencies come up
in the test environment, and a role with no replicas can be tested and deployed."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.engine.helpers import Fleet
from tests.engine.test_gate import leftovers, write_tests
from tests.unit.serving import serving

ROLE = """\
  {name}:
    base: {{debian: bookworm, packages: [python3]}}
    build: {{copy: [{{src: app/, dest: /srv/app}}]}}
    run: {{command: [python3, /srv/app/server.py], user: app, port: 8000}}
    health: {{http: /healthz, interval: 200ms, retries: 25}}
    replicas: {replicas}
    tests: [{tests}]
"""

# Run inside the web instance: the role name is a DNS name on the fleet's network.
REACHES_DB = """
def test_web_reaches_db_by_name(host):
    fetch = "import urllib.request; print(urllib.request.urlopen('http://db:8000/').read())"
    answer = host.run("python3 -c " + repr(fetch))
    assert answer.rc == 0, answer.stderr
    assert "version" in answer.stdout
"""

INSTANCE_ANSWERS = """
import httpx

def test_the_instance_answers(instance_url):
    assert httpx.get(instance_url).json()["version"] == "v1"
"""


def _results(fleet: Fleet, *args: str) -> dict[str, dict[str, Any]]:
    proc = fleet.corral("test", "--json", *args, check=False)
    return {r["role"]: r for r in json.loads(proc.stdout)["results"]}


def test_a_new_failing_test_file_invalidates_an_earlier_pass(
    fleet: Fleet, shared_base: str
) -> None:
    write_tests(fleet, "v1")
    assert _results(fleet)["web"]["outcome"] == "passed"
    (fleet.folder / "tests" / "test_new.py").write_text("def test_new():\n    assert False\n")
    refused = fleet.corral("deploy", check=False)
    assert refused.returncode == 5, refused.stdout + refused.stderr  # the gate refused
    assert "changed since it was last tested: tests/)" in refused.stderr, refused.stderr
    assert "corral test web" in refused.stderr
    # Not "already passed": the new key has no result yet, so corral test runs it.
    rerun = _results(fleet)["web"]
    assert rerun["outcome"] == "failed"
    assert any("test_new" in c["name"] for c in rerun["checks"])
    assert fleet.corral("deploy", check=False).returncode == 5
    assert all(not r["instances"] for r in fleet.status()["roles"])  # nothing went live
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}


def test_a_failing_run_again_blocks_the_same_digest(fleet: Fleet, shared_base: str) -> None:
    # The flag is served from this process (the sandboxed tests reach the host's network,
    # not its files): not part of the test key, so the second run has the same key.
    flag = {"value": b"good"}

    class Flag(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(flag["value"])))
            self.end_headers()
            self.wfile.write(flag["value"])

        def log_message(self, format: str, *args: object) -> None:
            pass

    write_tests(fleet, "v1")
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Flag)) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        (fleet.folder / "tests" / "test_flag.py").write_text(
            "import urllib.request\n\ndef test_flag():\n"
            f"    assert urllib.request.urlopen({url!r}).read() == b'good'\n"
        )
        first = _results(fleet)["web"]
        assert first["outcome"] == "passed"
        flag["value"] = b"bad"
        second = _results(fleet, "--again")["web"]
    assert second["outcome"] == "failed"
    assert second["image_digest"] == first["image_digest"]  # the same image, the same tests
    refused = fleet.corral("deploy", check=False)
    assert refused.returncode == 5, refused.stdout + refused.stderr  # the gate refused
    assert "its newest test run" in refused.stderr and "failed" in refused.stderr
    report = json.loads(fleet.corral("test", "--report", "--json").stdout)["roles"]
    assert report[0]["outcome"] == "failed"  # the report says what the gate says
    assert "newest test run" in report[0]["reason"]


def test_corral_test_of_a_role_brings_up_the_roles_it_is_after(
    fleet: Fleet, shared_base: str
) -> None:
    (fleet.folder / "dbtests").mkdir()
    (fleet.folder / "dbtests" / "test_db.py").write_text("def test_db():\n    assert False\n")
    fleet.write(extra="    after: [db]\n" + ROLE.format(name="db", replicas=1, tests="dbtests/"))
    write_tests(fleet, "v1")
    (fleet.folder / "tests" / "test_db.py").write_text(REACHES_DB)
    proc = fleet.corral("test", "--json", "web", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["role"]: r for r in json.loads(proc.stdout)["results"]}
    assert list(results) == ["web"]  # db came up for web; db's own (failing) tests did not run
    names = [c["name"] for c in results["web"]["checks"]]
    assert results["web"]["outcome"] == "passed" and any("reaches_db" in n for n in names)
    assert "db: brought up for the roles that come after it; not tested" in proc.stderr
    assert leftovers(fleet) == {"containers": [], "networks": [], "volumes": []}


def test_a_role_with_no_replicas_is_tested_with_one_and_does_not_block_deploy(
    fleet: Fleet, shared_base: str
) -> None:
    (fleet.folder / "jobtests").mkdir()
    (fleet.folder / "jobtests" / "test_job.py").write_text(INSTANCE_ANSWERS)
    fleet.write(extra=ROLE.format(name="job", replicas=0, tests="jobtests/"))
    write_tests(fleet, "v1")
    results = _results(fleet)
    assert {r: results[r]["outcome"] for r in results} == {"job": "passed", "web": "passed"}
    report = json.loads(fleet.corral("test", "--report", "--json").stdout)["roles"]
    assert {r["role"]: (r["outcome"], r["reason"]) for r in report} == {
        "job": ("passed", None),
        "web": ("passed", None),
    }
    fleet.corral("deploy")  # through the gate, no --skip-tests
    assert httpx.get(fleet.url).json()["version"] == "v1"
    roles = {r["role"]: r for r in fleet.status()["roles"]}
    assert roles["job"]["instances"] == [] and len(roles["web"]["instances"]) == 2
