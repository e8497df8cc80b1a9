"""The command line's contract: exit codes, --json shapes, no tracebacks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.engines.fake import FakeEngine
from corral.spec import load_spec
from corral.state import State

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "corral.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_validate_example_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-f", str(EXAMPLE), "validate", "--json")
    assert code == 0
    assert json.loads(out)["roles"] == ["web", "api"]


def test_broken_spec_exits_2_with_locations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text("fleet: demo\nroles:\n  web:\n    replcas: 2\n")
    code, out, err = run(capsys, "-f", str(spec), "validate")
    assert code == 2
    assert f"{spec}:4:5: roles.web.replcas: unknown key" in err.replace("\n", " ")
    assert "Traceback" not in err + out
    code, out, _ = run(capsys, "--json", "-f", str(spec), "validate")
    assert code == 2
    data = json.loads(out)
    assert data["error"] == "spec"
    assert {(d["line"], d["column"]) for d in data["diagnostics"]} >= {(4, 5)}


def test_missing_spec_is_a_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", str(tmp_path / "nope.yaml"), "validate")
    assert code == 2 and "nope.yaml" in err


def test_skip_tests_needs_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", str(EXAMPLE), "deploy", "--skip-tests")
    assert code == 2 and "--reason" in err


def test_unknown_command_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "frobnicate")
    assert code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and "corral" in out


def test_declining_destroy_removes_nothing_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("corral.app.destroy", lambda *a, **k: pytest.fail("destroy ran"))
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    code, _, err = run(capsys, "-f", str(EXAMPLE), "destroy")
    assert code == 1 and "nothing removed" in err
    # No terminal (a script, </dev/null): the answer is no, not "interrupted" (130).
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "-f", str(EXAMPLE), "destroy")
    assert code == 1 and "no terminal to ask; pass --yes" in err, err


def test_destroy_names_an_unknown_volume_before_asking_anything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No terminal and no --yes: the data guard's "not a volume" (audited), not "pass --yes"."""
    from corral.errors import DataGuardError

    checked = []

    def refuse(path: Path, deletion: object) -> None:
        checked.append(deletion)
        raise DataGuardError("refusing to delete data: nope is not a volume of fleet demo")

    monkeypatch.setattr("corral.app.refuse_unknown_volumes", refuse)
    monkeypatch.setattr("corral.app.destroy", lambda *a, **k: pytest.fail("destroy ran"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "-f", str(EXAMPLE), "destroy", "--delete-data", "nope")
    assert code == 5 and "nope is not a volume of fleet demo" in err, err
    assert "pass --yes" not in err
    [deletion] = checked
    assert deletion.names == ("nope",)  # type: ignore[attr-defined]


class _Terminal(io.StringIO):
    """What an operator types, on a terminal."""

    def isatty(self) -> bool:
        return True


# -- the deploy commands' --json and exit codes, on the fake engine ------------------------

WORKER_SPEC = """\
fleet: clidemo
roles:
  worker:
    base: {image: localhost/worker-base:1}
    run: {command: [work], user: app}
    replicas: 2
    volumes: {data: {path: /var/lib/worker, shareable: true}}
"""


@pytest.fixture
def fake_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-role fleet (no port, no edge) whose engine is one FakeEngine for the test."""
    engine = FakeEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/worker-base:1", {})
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    spec = tmp_path / "corral.yaml"
    spec.write_text(WORKER_SPEC)
    return spec


SKIP = ("--skip-tests", "--reason", "cli contract test")


def test_deploy_commands_json_and_exit_codes(
    fake_fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = ("--json", "-f", str(fake_fleet))
    code, out, _ = run(capsys, "-f", str(fake_fleet), "status")
    assert code == 0 and "nothing deployed: run corral deploy" in out
    assert "INSTANCE" not in out  # no empty table's header
    code, out, _ = run(capsys, *f, "plan")
    assert code == 3 and json.loads(out)["unbuilt"] == ["worker"]  # changes pending (was 2)
    assert json.loads(out)["volumes_touched"] == 1

    code, out, _ = run(capsys, *f, "deploy", *SKIP)
    first = json.loads(out)
    assert code == 0 and first["status"] == "active" and first["release"] == 1
    assert first["summary"]["start"] == 2
    code, out, _ = run(capsys, *f, "plan")
    assert code == 0 and json.loads(out)["has_changes"] is False
    code, out, _ = run(capsys, *f, "deploy", *SKIP)
    assert code == 0 and json.loads(out)["status"] == "unchanged"

    code, out, _ = run(capsys, *f, "deploy", "nosuchrole", *SKIP)
    assert code == 2 and json.loads(out)["error"] == "usage"
    code, out, _ = run(capsys, *f, "rollback", "--to", "7", *SKIP)
    assert code == 2 and json.loads(out)["error"] == "usage"

    fake_fleet.write_text(WORKER_SPEC.replace("replicas: 2", "replicas: 1"))
    code, out, _ = run(capsys, *f, "deploy", *SKIP)
    assert code == 0 and json.loads(out)["release"] == 2
    code, out, _ = run(capsys, *f, "rollback", *SKIP)
    back = json.loads(out)
    assert code == 0 and back["kind"] == "rollback" and back["status"] == "active"

    with State.open(load_spec(fake_fleet).state_path) as state, state.lock("deploy", purpose="x"):
        code, out, _ = run(capsys, *f, "deploy", *SKIP)
    assert code == 4 and json.loads(out)["error"] == "locked"  # its own code (was 1)

    code, out, _ = run(capsys, *f, "destroy", "--yes")
    removed = json.loads(out)["removed"]
    assert code == 0 and len(removed) == 2  # the rollback's two instances
    assert all(name.startswith("clidemo-worker-r") for name in removed)
    # Nothing is to run: no release is active, the fleet is not unwell, and a watcher's
    # pass (reconcile) brings nothing back (it brought every instance back before).
    code, out, _ = run(capsys, *f, "status")
    assert code == 0 and json.loads(out)["release"] is None, out
    code, out, _ = run(capsys, *f, "reconcile")
    assert code == 0 and json.loads(out)["status"] == "no-release", out
    code, out, _ = run(capsys, *f, "rollback", *SKIP)  # the destroyed release comes back
    assert code == 0 and json.loads(out)["status"] == "active", out
