"""``corral break-glass``: audited and tainted before the session opens, held from the
watcher while it lasts, replaced (new first) when it ends or at its time limit (fake
engine; the proof on Podman is tests/engine/test_breakglass_chaos.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from corral import app
from corral.cli.main import _show_break_glass
from corral.deploy import breakglass
from corral.deploy import reconcile as rec
from corral.deploy.service import Context
from corral.engines.fake import FakeEngine
from corral.progress import NullProgress
from corral.spec import load_spec
from corral.state import State
from tests.unit.test_cli import run
from tests.unit.test_reconcile import _deployed, _serve, _workers


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeEngine]:
    return _serve(FakeEngine(), tmp_path, monkeypatch)


def test_a_session_is_audited_before_it_opens_held_meanwhile_and_replaced_after(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    seen: dict[str, object] = {}
    loaded = load_spec(spec)
    with app.open_state(loaded) as state:
        ctx = Context(loaded, engine, state, NullProgress())

        def session(name: str, command: Sequence[str]) -> int:
            # The audit entry and the taint are there before the shell runs...
            seen["audit"] = [(e.action, e.outcome) for e in app.audit(spec)]
            seen["taints"] = state.stores.taints.all("clidemo")
            # ...and a pass that saw the session's exec leaves the instance alone.
            seen["pass"] = rec.reconcile(ctx, {name: "exec event at t0"}).status
            seen["command"] = list(command)
            return 0

        engine.session_answer = session
        result = breakglass.break_glass(ctx, before[0], "disk full?", 900, tty=False)
    assert seen["audit"][-1] == ("break-glass", "opened")  # type: ignore[index]
    [taint] = seen["taints"]  # type: ignore[misc]
    assert taint.instance == before[0] and "disk full?" in taint.reason and "@" in taint.who
    assert seen["pass"] == "unchanged" and seen["command"] == ["/bin/sh"]
    assert result.status == 0 and result.replaced and result.repair is not None
    assert [b.instance for b in result.repair.burns] == [before[0]]
    assert "break-glass by" in result.repair.burns[0].reason
    after = _workers(engine)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    entries = [e for e in app.audit(spec) if e.action in ("break-glass", "burn")]
    assert [(e.action, e.outcome) for e in entries] == [
        ("break-glass", "opened"),
        ("break-glass", "closed"),
        ("burn", "ok"),
    ]
    assert entries[0].details["who"] == taint.who and entries[0].details["reason"] == "disk full?"
    with State.open(loaded.state_path) as state:
        assert state.stores.taints.all("clidemo") == []  # spent


def test_a_session_whose_process_died_is_burned_at_its_time_limit(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:  # what a killed break-glass leaves
        state.stores.taints.taint(
            "clidemo", before[1], "break-glass by x@y: z", "x@y", time.time() + 60
        )
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    assert code == 0 and json.loads(out)["status"] == "unchanged"  # still held
    with State.open(loaded.state_path) as state:
        state.stores.taints.set_due("clidemo", before[1], time.time() - 1)
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    burns = json.loads(out)["burns"]
    assert [b["instance"] for b in burns] == [before[1]] and "break-glass" in burns[0]["reason"]
    assert before[1] not in _workers(engine) and len(_workers(engine)) == 2


def test_the_cli_cuts_at_the_time_limit_and_refuses_what_is_no_live_instance(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    engine.session_answer = lambda name, command: None  # cut at the limit
    f = ("--json", "-f", str(spec), "break-glass")
    code, out, err = run(capsys, *f, before[0], "--reason", "look", "--time-limit", "2m",
                         "--command", "ls -l '/srv/my dir'")  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["cut_at_time_limit"] and result["replaced"], result
    opened = next(e for e in app.audit(spec) if e.outcome == "opened")
    assert opened.details["command"] == ["ls", "-l", "/srv/my dir"]
    assert opened.details["time_limit_s"] == 120
    assert ("break-glass", before[0], "cut") in [
        (e.action, e.target, e.outcome) for e in app.audit(spec)
    ]
    code, _, err = run(capsys, *f, "clidemo-nope-r1-1", "--reason", "x")
    assert code == 2 and "is not an instance of fleet clidemo" in err
    code, _, err = run(capsys, *f, before[1], "--reason", "x", "--time-limit", "5d")
    assert code == 2 and "expected a duration" in err
    code, _, err = run(capsys, *f, before[1])
    assert code == 2 and "--reason" in err
    assert before[1] in _workers(engine)  # refused: nothing tainted


@pytest.mark.parametrize("ours", [True, False])
def test_the_session_says_which_pass_replaced_the_instance(ours: bool) -> None:
    """Its own pass's burn and start, or, when the watcher's pass got there first, no
    stray "unchanged" line but who did it."""
    burns = (rec.Burn("shop-web-r1-1", "web", "break-glass session"),) if ours else ()
    started = ("shop-web-r1-2",) if ours else ()
    repair = rec.Reconciled("shop", "converged" if ours else "unchanged", 1, burns, started)
    result = breakglass.BreakGlass("shop-web-r1-1", "web", "ops", "why", 0, 3.0, True, repair)
    out = StringIO()
    _show_break_glass(Console(file=out, width=200), result)
    text = out.getvalue()
    assert ("unchanged" in text) is False
    assert ("started shop-web-r1-2" in text) is ours
    assert ("replaced (by another pass: corral watch)" in text) is not ours
