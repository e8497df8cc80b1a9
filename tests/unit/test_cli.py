"""The command line's contract: exit codes, --json shapes, no tracebacks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from corral.cli.main import main

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
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, _, err = run(capsys, "-f", str(EXAMPLE), "destroy")
    assert code == 1 and "nothing removed" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no answer at all (end of input)
    code, _, err = run(capsys, "-f", str(EXAMPLE), "destroy")
    assert code == 130 and "aborted" in err
