"""Where a fleet's state lives: one per fleet on the host, shared by every checkout."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.engines.fake import FakeEngine
from corral.errors import StateError
from corral.state import State
from corral.state.location import ROOT_HOME, locate, redact_url, state_home, take_over_legacy

SPEC = """\
fleet: clidemo
roles:
  worker:
    base: {image: localhost/worker-base:1}
    run: {command: [work], user: app}
    replicas: 2
"""
SKIP = ("--skip-tests", "--reason", "location test")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_root_keeps_states_in_var_lib_and_users_in_their_data_folder() -> None:
    assert state_home({}, euid=0) == ROOT_HOME == Path("/var/lib/corral")
    assert state_home({"XDG_DATA_HOME": "/home/u/.data"}, euid=1000) == Path("/home/u/.data/corral")
    assert state_home({"CORRAL_STATE_HOME": "/srv/c"}, euid=0) == Path("/srv/c")
    where = locate("shop", Path("/co/a"), None, {}, euid=0)
    assert where.target == Path("/var/lib/corral/shop/state.db") and where.origin == "default"
    assert where.files == Path("/var/lib/corral/shop")
    assert where.legacy == Path("/co/a/.corral/state.db")


def test_the_environment_wins_over_the_spec_and_urls_stay_urls(tmp_path: Path) -> None:
    env = {"CORRAL_STATE": "postgresql://ci:pw@db:5432/corral", "CORRAL_STATE_HOME": "/h"}
    where = locate("shop", tmp_path, "other.db", env)
    assert where.target == "postgresql://ci:pw@db:5432/corral" and where.origin == "CORRAL_STATE"
    assert where.files == Path("/h/shop")  # the key and test owners: the host's, not a URL's
    assert "pw" not in where.display and where.display == "postgresql://ci:***@db:5432/corral"
    spec = locate("shop", tmp_path, "var/x.db", {"CORRAL_STATE_HOME": "/h"})
    assert spec.target == tmp_path / "var" / "x.db" and spec.legacy is None
    assert redact_url("postgresql:///corral?host=/run/pg") == "postgresql:///corral?host=/run/pg"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEngine:
    made = FakeEngine()
    made.import_rootfs(tmp_path / "rootfs.tar", "localhost/worker-base:1", {})
    monkeypatch.setattr("corral.app.get_engine", lambda: made)
    return made


def _clone(folder: Path) -> Path:
    folder.mkdir()
    (folder / "corral.yaml").write_text(SPEC)
    return folder / "corral.yaml"


def test_two_checkouts_share_one_history(
    tmp_path: Path, engine: FakeEngine, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's reproduction on the fake engine: B continues A's fleet, never resets it."""
    a, b = _clone(tmp_path / "a"), _clone(tmp_path / "b")
    code, out, _ = run(capsys, "--json", "-f", str(a), "deploy", *SKIP)
    assert code == 0 and json.loads(out)["release"] == 1
    code, out, _ = run(capsys, "--json", "-f", str(b), "plan")
    assert code == 0 and json.loads(out)["has_changes"] is False  # B sees A's release
    b.write_text(SPEC.replace("replicas: 2", "replicas: 3"))
    code, out, _ = run(capsys, "--json", "-f", str(b), "deploy", *SKIP)
    assert code == 0 and json.loads(out)["release"] == 2  # numbers continue
    assert not (tmp_path / "a" / ".corral").exists() and not (tmp_path / "b" / ".corral").exists()
    with State.open(state_home / "clidemo" / "state.db") as state:
        actions = [e.action for e in state.audit_log("clidemo")]
    assert actions.count("deploy") == 2  # one audit trail
    code, out, _ = run(capsys, "--json", "-f", str(a), "status")
    assert code == 0 and json.loads(out)["release"] == 2  # A sees what B deployed


def _legacy(spec_root: Path) -> Path:
    path = spec_root / ".corral" / "state.db"
    with State.open(path) as state:
        state.record_audit("clidemo", "deploy", "fleet", "ok", {})
    (spec_root / ".corral" / "clidemo.secret-key").write_text("ab" * 32 + "\n")
    return path


def test_a_checkout_state_is_taken_over_once_with_a_message(
    tmp_path: Path, engine: FakeEngine, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _clone(tmp_path / "a")
    legacy = _legacy(tmp_path / "a")
    code, _, err = run(capsys, "-f", str(spec), "audit")
    assert code == 0 and f"took over the state {legacy}" in err
    home = state_home / "clidemo"
    assert (home / "state.db").is_file() and (home / "clidemo.secret-key").is_file()
    assert not legacy.exists() and legacy.with_name("state.db.moved").is_file()
    code, _, err = run(capsys, "-f", str(spec), "audit")
    assert code == 0 and "took over" not in err  # once
    with State.open(home / "state.db") as state:
        actions = [entry.action for entry in state.audit_log("clidemo")]
    assert actions == ["deploy", "state-take-over"]  # nothing lost, and said


def test_two_histories_are_never_merged_silently(tmp_path: Path, state_home: Path) -> None:
    root = tmp_path / "a"
    root.mkdir()
    legacy = _legacy(root)
    with State.open(state_home / "clidemo" / "state.db") as state:
        state.record_audit("clidemo", "deploy", "fleet", "ok", {})
    where = locate("clidemo", root, None)
    with pytest.raises(StateError, match="two histories") as raised:
        take_over_legacy(where)
    assert f"CORRAL_STATE={legacy}" in raised.value.message
    assert legacy.is_file()  # untouched


def test_an_empty_host_state_is_replaced_by_the_checkout_one(
    tmp_path: Path, state_home: Path
) -> None:
    root = tmp_path / "a"
    root.mkdir()
    _legacy(root)
    State.open(state_home / "clidemo" / "state.db").close()  # e.g. a `corral status` first
    assert take_over_legacy(locate("clidemo", root, None)) is not None
    with sqlite3.connect(state_home / "clidemo" / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM audit").fetchone() == (1,)
