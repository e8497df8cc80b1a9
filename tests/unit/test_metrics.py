"""``corral watch --metrics``: /metrics scraped over HTTP while the watcher runs, and read
back with prometheus_client's own parser (fake engine)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral import app
from corral.deploy.metrics import parse_address, reason_kind
from corral.deploy.reconcile import Reconciled
from corral.engines.fake import FakeEngine
from corral.errors import UsageError
from tests.unit.test_reconcile import _deployed, _serve


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeEngine]:
    return _serve(FakeEngine(), tmp_path, monkeypatch)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_watch_serves_instances_burns_and_time_to_replace(
    fleet: tuple[Path, FakeEngine],
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    engine.stop(before[0])
    port = _free_port()
    scraped: list[str] = []

    def passed(result: Reconciled) -> None:
        scraped.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)

    app.watch(spec, interval=0.2, passes=2, on_pass=passed, metrics=("127.0.0.1", port))
    first, second = (_samples(t) for t in scraped)
    assert first[("corral_burns_total", (("reason", "dead"),))] == 1
    assert first[("corral_replacements_total", (("reason", "dead"),))] == 1
    assert first[("corral_reconcile_passes_total", (("status", "converged"),))] == 1
    assert first[("corral_replace_seconds_count", ())] == 1
    assert first[("corral_instances", (("role", "worker"), ("state", "running")))] == 2
    assert second[("corral_reconcile_passes_total", (("status", "unchanged"),))] == 1
    assert second[("corral_reconcile_failures_total", ())] == 0
    with pytest.raises(httpx.ConnectError):  # closed with the watcher
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_reasons_and_addresses() -> None:
    assert reason_kind("tainted: exec event at 2026") == "exec"
    assert reason_kind("tainted: files changed: C /etc/passwd") == "files"
    assert reason_kind("tainted: break-glass by a@b: x") == "break-glass"
    assert reason_kind("not running (exited)") == "dead"
    assert reason_kind("role ghost is no longer in the spec") == "orphan"
    assert reason_kind("role ghost is not in release 3") == "orphan"
    assert reason_kind("role ghost is not in any earlier release") == "orphan"
    assert reason_kind("new image 3-abc") == "drift"
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    assert parse_address(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "host:0", "host:70000", "a b:1"):
        with pytest.raises(UsageError):
            parse_address(bad)
