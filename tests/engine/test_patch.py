"""The emergency lane for real (issue 14): a security fix lands in a local Debian archive
made here (a dummy package built with dpkg-deb, indexed with dpkg-scanpackages), and
``corral patch`` takes it to every instance under load through the edge; then a "fix"
that breaks the app is stopped by the canary with the fleet on the release it ran.

The fleet's bases live under its own repository (``CORRAL_BASE_REPO``): the first one is
the shared bookworm base with ``corral-fixture`` 1.0 installed, and the refreshes move
that tag only, never the base every other test shares.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from corral.build.base import BaseRecipe
from tests.debrepo import PACKAGE, build_deb, make_archive
from tests.engine.conftest import SHARED_BASE
from tests.engine.helpers import Fleet, containers

APP = """
import json, subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIXTURE = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "corral-fixture"],
                         capture_output=True, text=True).stdout
STATUS = open("/usr/share/corral-fixture/status").read().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz" or STATUS == "ok":
            self.reply(200, {"version": FIXTURE})
        else:  # the "fix" broke the app: healthy to its check, failing every request
            self.reply(500, {"error": STATUS})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""

TEST = """
import httpx

def test_answers(edge_url):
    assert httpx.get(edge_url + "healthz").status_code == 200
"""


@pytest.fixture
def patch_fleet(
    fleet: Fleet, shared_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Fleet:
    """The test fleet (web, 2 replicas, public) on a base of its own holding the fixture 1.0."""
    monkeypatch.setenv("CORRAL_BASE_REPO", f"localhost/corral/{fleet.name}/base")
    first = tmp_path / "first"
    first.mkdir()
    build_deb(first, "1.0")
    (first / "Containerfile").write_text(
        f"FROM {shared_base}\n"
        "RUN --mount=type=bind,target=/run/fixture,ro dpkg -i "
        f"/run/fixture/{PACKAGE}_1.0_all.deb\n"
    )
    tag = BaseRecipe.from_spec(SHARED_BASE).tag
    subprocess.run(
        ["podman", "build", "-q", "--network", "none", "-t", tag, str(first)],
        check=True,
        capture_output=True,
    )
    (fleet.folder / "app").mkdir(exist_ok=True)
    (fleet.folder / "app" / "server.py").write_text(APP)
    (fleet.folder / "tests").mkdir(exist_ok=True)
    (fleet.folder / "tests" / "test_up.py").write_text(TEST)
    fleet.spec.write_text(
        f"fleet: {fleet.name}\n"
        "roles:\n"
        "  web:\n"
        "    base: {debian: bookworm, packages: [python3]}\n"
        "    build: {copy: [{src: app/, dest: /srv/app}]}\n"
        "    run: {command: [python3, /srv/app/server.py], user: app, port: 8000}\n"
        "    health: {http: /healthz, interval: 200ms, retries: 25}\n"
        "    replicas: 2\n"
        f"    public: {fleet.port}\n"
        "    deploy: {drain: 10s, settle: 0s, canary: {instances: 1, traffic: 30}}\n"
        "    tests: [tests/]\n"
    )
    fleet.deploy()  # without the gate: the patch's own gate is what this test is about
    return fleet


def image_id(ref: str) -> str:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def fixture_versions(fleet: Fleet) -> dict[str, str]:
    """Per running instance of web: the corral-fixture version inside it."""
    found = {}
    for c in containers(fleet.name):
        name = c["Names"][0]
        if c.get("Labels", {}).get("io.corral.role") != "web" or c["State"] != "running":
            continue
        out = subprocess.run(
            ["podman", "exec", name, "dpkg-query", "-W", "-f", "${Version}", PACKAGE],
            capture_output=True,
            text=True,
            check=True,
        )
        found[name] = out.stdout
    return found


def test_a_fix_goes_to_every_instance_and_a_bad_one_is_stopped_by_the_canary(
    patch_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = patch_fleet
    before = fixture_versions(fleet)
    assert set(before.values()) == {"1.0"} and len(before) == 2

    dry = fleet.corral("patch", "--dry-run", "--json")
    planned = json.loads(dry.stdout)
    assert planned["status"] == "dry-run"
    assert sorted(planned["would_replace"]["web"]) == sorted(before)
    assert planned["total_seconds"] < 10

    fixed = make_archive(tmp_path / "fix", "1.1")
    args = ["--archive", str(fixed), "--no-default-archives", "--watch", "3", "--json"]
    with fleet.load() as load:
        done = fleet.corral("patch", *args)
        time.sleep(0.5)  # requests after the last old instance went
    load.assert_no_failures()
    report = json.loads(done.stdout)
    print("patch stages:", report["stages"], report["total_seconds"])  # the figures, with -s
    [role] = report["roles"]
    assert {"name": PACKAGE, "old": "1.0", "new": "1.1"} in role["packages"]
    assert sorted(role["retired"]) == sorted(before)
    assert len(role["started"]) == 2
    assert [s["stage"] for s in report["stages"]] == [
        "refresh", "build", "test", "plan", "canary", "watch", "rollout", "settle",
    ]  # fmt: skip
    [verdict] = report["canary"]
    assert verdict["passed"] and verdict["canary"]["requests"] > 0, verdict
    assert verdict["canary"]["errors"] == 0
    after = fixture_versions(fleet)
    assert set(after.values()) == {"1.1"} and set(after) == set(role["started"])
    live = fleet.status()["release"]
    fixed_base = image_id(BaseRecipe.from_spec(SHARED_BASE).tag)

    broken = tmp_path / "broken"
    make_archive(broken, "1.2", status="broken")
    stop = threading.Event()

    def traffic() -> None:  # the canary needs requests to be compared
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(fleet.url)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        failed = fleet.corral(
            "patch", "--archive", str(broken), "--no-default-archives", "--watch", "3",
            check=False,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(timeout=10)
    assert failed.returncode != 0, failed.stdout
    # Stopped by its comparison (error rate), or, when the edge saw it first, by the
    # edge's check of the canary: both are the canary stopping the lane (one CI run on a
    # loaded machine saw the check fail first, "HTTP 0", cause not yet known).
    said = failed.stderr
    assert "canary" in said and ("error rate" in said or "failed the edge's check" in said), said
    assert f"back on release r{live}" in failed.stderr, failed.stderr
    assert fixture_versions(fleet) == after  # the same instances, on the old release
    assert fleet.status()["release"] == live
    assert image_id(BaseRecipe.from_spec(SHARED_BASE).tag) == fixed_base  # tag put back
