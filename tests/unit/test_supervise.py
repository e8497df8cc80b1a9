"""``corral watch``'s supervision: per-role back-off and degraded roles (no loop of
death), instances unhealthy past their grace, alerts to a webhook; the fake engine
stands in for Podman (tests/engine/test_supervise.py has the real proof)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from corral import app
from corral.deploy.context import Context
from corral.deploy.plan import EdgeServer, Observed
from corral.deploy.reconcile import Watcher
from corral.deploy.supervise import Alert, Backoff, Grace, unhealthy, webhook
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.fake import FakeEngine
from corral.progress import NullProgress
from corral.spec import load_spec
from tests.unit.builders import role_release
from tests.unit.test_cli import run
from tests.unit.test_reconcile import _deployed, _serve, _workers


class CrashingEngine(FakeEngine):
    """New containers exit right after they start while ``crash`` is set."""

    crash = False

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        info = super().start(spec)
        if self.crash:
            info = replace(info, state="exited", exit_code=1)
            self.containers[spec.name] = info
        return info


@pytest.fixture
def crashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, CrashingEngine]:
    return _serve(CrashingEngine(), tmp_path, monkeypatch)


def test_backoff_holds_a_failing_role_and_degrades_it_on_the_third_failure() -> None:
    roles = Backoff("shop", interval=2.0, max_backoff=60.0, degraded_after=3)
    assert roles.failed(["web"], "it exited (code 1)", now=0.0) == []
    assert roles.held(1.0) == {"web"} and roles.held(4.1) == set()  # 2 * 2**1
    assert roles.failed(["web"], "it exited (code 1)", now=5.0) == []
    assert roles.held(12.9) == {"web"} and roles.held(13.1) == set()  # 2 * 2**2
    [alert] = roles.failed(["web"], "it exited (code 1)", now=14.0)
    assert (alert.role, alert.status, alert.failures, alert.retry_in_s) == (
        "web",
        "degraded",
        3,
        16,
    )
    assert roles.passed(["web", "db"], held=["web"]) == []  # held: not proven repaired
    [back] = roles.passed(["web", "db"], held=[])
    assert back.status == "recovered" and roles.roles == {}
    for _ in range(10):
        roles.failed(["web"], "x", now=0.0)
    assert roles.delay(roles.roles["web"].failures) == 60.0


def test_an_instance_the_edge_marks_down_is_unhealthy() -> None:
    desired = {"web": role_release("web", public=8080, run={"port": 8000}, deploy={"grace": 5})}
    servers = [EdgeServer("web-1", "ready", False), EdgeServer("web-2", "ready", True)]
    servers.append(EdgeServer("web-3", "drain", False))  # a deploy's, not yet serving
    observed = Observed([], set(), {1}, set(), datetime.now(UTC), edge_servers={"web": servers})
    assert unhealthy(desired, observed) == {"web-1": ("the edge marks it down", 5.0)}


def test_grace_burns_only_what_stays_unhealthy_past_it() -> None:
    grace = Grace()
    down = {"web-1": ("the edge marks it down (L7STS 500)", 30.0)}
    assert grace.overdue(down, now=100.0) == {}
    assert grace.overdue(down, now=129.0) == {}
    assert grace.overdue({}, now=130.0) == {}  # healthy again: the clock starts over
    assert grace.overdue(down, now=131.0) == {}
    assert grace.overdue(down, now=161.5) == {
        "web-1": "unhealthy for 30s (grace 30s): the edge marks it down (L7STS 500)"
    }


def test_a_role_whose_new_instances_crash_ends_degraded_not_in_a_loop(
    crashing: tuple[Path, CrashingEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = crashing
    before = _deployed(crashing, capsys)  # type: ignore[arg-type]
    engine.stop(before[0])
    engine.crash = True
    alerts: list[Alert] = []
    with app.open_state(load_spec(spec)) as state:
        ctx = Context(load_spec(spec), engine, state, NullProgress())
        watcher = Watcher(ctx, interval=60.0, on_alert=alerts.append)
        for _ in range(3):
            assert watcher.once() is None  # the replacement crashed
            assert watcher.backoff is not None
            held = watcher.once()  # while it backs off, the role is left alone
            assert held is not None and held.held == ("worker",) and held.burns == ()
            watcher.backoff.roles["worker"].retry_at = 0  # its back-off is over
    starts = [c for c in engine.calls if c[0] == "start"]
    assert len(starts) == 2 + 3  # the deploy's two, then one per try: no loop
    assert [a.status for a in alerts] == ["degraded"]
    assert _workers(engine) == [before[1]]  # the healthy one is left alone, serving
    code, out, _ = run(capsys, "--json", "-f", str(spec), "status")
    data = json.loads(out)
    [role] = data["roles"]
    assert code == 1 and "it exited (code 1)" in role["degraded"], data
    assert "role worker is degraded: " in " ".join(data["problems"])
    audit = [e for e in app.audit(spec) if e.action == "degraded"]
    assert [(e.target, e.outcome) for e in audit] == [("worker", "failed")]

    engine.crash = False  # mended: the next try repairs it, and says so
    with app.open_state(load_spec(spec)) as state:
        ctx = Context(load_spec(spec), engine, state, NullProgress())
        watcher = Watcher(ctx, interval=60.0, on_alert=alerts.append)  # a new watcher
        result = watcher.once()
    assert result is not None and result.status == "converged"
    assert [a.status for a in alerts] == ["degraded", "recovered"]
    code, out, _ = run(capsys, "--json", "-f", str(spec), "status")
    assert code == 0 and json.loads(out)["roles"][0]["degraded"] is None
    last = json.loads(out)["last_burn"]
    assert last["role"] == "worker" and "not running" in last["reason"], last


def test_an_instance_unhealthy_past_its_grace_is_burned(
    crashing: tuple[Path, CrashingEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = crashing
    before = _deployed(crashing, capsys)  # type: ignore[arg-type]
    with app.open_state(load_spec(spec)) as state:
        ctx = Context(load_spec(spec), engine, state, NullProgress())
        watcher = Watcher(ctx, interval=60.0)
        down = {before[0]: ("its check fails (connection refused)", 30.0)}
        watcher.grace.since[before[0]] = time.monotonic() - 31
        watcher._overdue = lambda desired, seen: watcher.grace.overdue(down, time.monotonic())  # type: ignore[method-assign]
        result = watcher.once()
    assert result is not None and [b.instance for b in result.burns] == [before[0]]
    assert "unhealthy for 31s (grace 30s): its check fails" in result.burns[0].reason
    assert before[0] not in _workers(engine) and len(_workers(engine)) == 2


class _Receiver(BaseHTTPRequestHandler):
    got: list[Any] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_alert_is_posted_as_json_with_secrets_scrubbed() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    said: list[str] = []
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook?token=t0ken"
        send = webhook(url, lambda text: text.replace("s3cret", "***"), said.append)
        send(Alert("shop", "web", "degraded", "bad password s3cret", 3, 16.0))
        deadline = time.monotonic() + 5
        while not _Receiver.got and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.shutdown()
    assert _Receiver.got == [
        {
            "fleet": "shop",
            "role": "web",
            "status": "degraded",
            "reason": "bad password ***",
            "failures": 3,
            "retry_in_s": 16.0,
        }
    ]
    failing = webhook("http://127.0.0.1:9/hook?token=t0ken", str, said.append)
    failing(Alert("shop", "web", "recovered", "", 0, 0.0))
    deadline = time.monotonic() + 5
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert said and "t0ken" not in said[0] and "failed" in said[0]
