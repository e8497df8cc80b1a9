"""The exit-code contract (cli/exitcodes.py, docs/cli.md): each code means one thing,
whatever the command, checked through the real entry point on the fake engine."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from corral.cli.exitcodes import ExitCode, for_error
from corral.cli.main import main
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.fake import FakeEngine
from corral.errors import (
    BuildError,
    CorralError,
    DeployError,
    Diagnostic,
    EngineError,
    GateError,
    LockedError,
    MissingToolError,
    NotFoundError,
    NotSupportedError,
    ReleaseFailed,
    SpecError,
    StateError,
    UsageError,
)
from corral.spec import load_spec
from corral.state import State

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

SPEC = """\
fleet: exitdemo
roles:
  worker:
    base: {image: localhost/worker-base:1}
    run: {command: [COMMAND], user: app}
    replicas: 1
"""
SKIP = ("--skip-tests", "--reason", "exit code contract test")


class CrashingEngine(FakeEngine):
    """A fake engine whose containers running ``crash`` have exited right after starting."""

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        info = super().start(spec)
        if "crash" in spec.command:
            info = dataclasses.replace(info, state="exited", exit_code=3)
            self.containers[spec.name] = info
        return info


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    engine = CrashingEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/worker-base:1", {})
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC.replace("COMMAND", "work"))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    """Exit code and --json output of ``corral --json ARGV``."""
    with pytest.raises(SystemExit) as exited:
        main(["--json", *argv])
    out, _ = capsys.readouterr()
    return int(exited.value.code or 0), (json.loads(out) if out.strip() else {})


def test_plan_pending_changes_are_not_a_usage_error(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = ("-f", str(spec))
    assert run(capsys, *f, "plan")[0] == ExitCode.CHANGES == 3
    assert run(capsys, *f, "deploy", *SKIP)[0] == ExitCode.OK
    assert run(capsys, *f, "plan")[0] == ExitCode.OK
    assert run(capsys, *f, "plan", "nosuchrole")[0] == ExitCode.USAGE
    spec.write_text(SPEC.replace("replicas: 1", "replcas: 1"))
    code, data = run(capsys, *f, "plan")
    assert (code, data["error"]) == (ExitCode.USAGE, "spec")
    assert run(capsys, *f, "validate")[0] == ExitCode.USAGE


def test_a_refused_gate_and_a_held_lock_have_their_own_codes(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = ("-f", str(spec))
    code, data = run(capsys, *f, "deploy")  # no test record: the gate refuses
    assert (code, data["error"], data["roles"]) == (ExitCode.REFUSED, "gate", ["worker"])
    with State.open(load_spec(spec).state_path) as state, state.lock("deploy", purpose="x"):
        code, data = run(capsys, *f, "deploy", *SKIP)
        assert (code, data["error"], data["lock"]) == (ExitCode.LOCKED, "locked", "deploy")
        assert run(capsys, *f, "rollback", *SKIP)[0] == ExitCode.LOCKED


def test_a_failed_deploy_says_whether_the_fleet_went_back(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = ("-f", str(spec))
    spec.write_text(SPEC.replace("COMMAND", "crash"))
    code, data = run(capsys, *f, "deploy", *SKIP)  # the first release: nothing to go back to
    assert (code, data["error"], data["rolled_back_to"]) == (ExitCode.FAILED, "deploy", None)
    spec.write_text(SPEC.replace("COMMAND", "work"))
    assert run(capsys, *f, "deploy", *SKIP)[0] == ExitCode.OK
    spec.write_text(SPEC.replace("COMMAND", "crash"))
    code, data = run(capsys, *f, "deploy", *SKIP)
    assert (code, data["error"], data["release"]) == (ExitCode.ROLLED_BACK, "deploy", 3)
    assert data["rolled_back_to"] == 2 and data["roles"] == ["worker"]


def test_the_other_commands_exit_0_or_2(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = ("-f", str(spec))
    assert run(capsys, *f, "build")[0] == ExitCode.OK
    assert run(capsys, *f, "deploy", *SKIP)[0] == ExitCode.OK
    for argv in (("images",), ("status",), ("history",), ("audit",), ("validate",)):
        assert run(capsys, *f, *argv)[0] == ExitCode.OK, argv
    assert run(capsys, *f, "rollback", "--to", "9", *SKIP)[0] == ExitCode.USAGE
    assert run(capsys, *f, "edge", "replace")[0] == ExitCode.USAGE  # no public role
    assert run(capsys, *f, "deploy", "--skip-tests")[0] == ExitCode.USAGE  # no --reason
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run(capsys, *f, "destroy")[0] == ExitCode.FAILED  # declined: nothing removed
    assert run(capsys, *f, "destroy", "--yes")[0] == ExitCode.OK


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SpecError([Diagnostic("f", 1, 1, "p", "bad")]), ExitCode.USAGE),
        (UsageError("no role x"), ExitCode.USAGE),
        (MissingToolError("podman", "apt-get install podman"), ExitCode.FAILED),
        (EngineError("podman failed"), ExitCode.FAILED),
        (NotFoundError("no image", name="x"), ExitCode.FAILED),
        (NotSupportedError("cannot exec"), ExitCode.FAILED),
        (BuildError("bake failed"), ExitCode.FAILED),
        (StateError("database unusable"), ExitCode.STATE),
        (DeployError("the state filled up", cause="state"), ExitCode.STATE),
        (LockedError("held", lock="deploy"), ExitCode.LOCKED),
        (GateError("not tested", roles=["web"]), ExitCode.REFUSED),
        (DeployError("failed before a release began"), ExitCode.FAILED),
        (ReleaseFailed("r2 failed; back on r1", release=2, rolled_back_to=1), ExitCode.ROLLED_BACK),
        (ReleaseFailed("r1 failed; nothing to go back to", release=1), ExitCode.FAILED),
        (CorralError("anything else"), ExitCode.FAILED),
    ],
)
def test_each_error_kind_has_one_code(error: CorralError, code: ExitCode) -> None:
    assert for_error(error) == code


def test_the_documented_table_is_the_enum() -> None:
    section = DOCS.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
    assert len({int(code) for code in ExitCode}) == len(ExitCode)  # no alias hides a code


def test_a_change_of_settings_only_is_pending_in_plan_as_deploy_records_it(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in a trial: after a change of deploy.max_unavailable alone, plan said "no
    # changes" (exit 0) and deploy then recorded a release.
    f = ("-f", str(spec))
    assert run(capsys, *f, "deploy", *SKIP)[0] == ExitCode.OK
    spec.write_text(
        SPEC.replace("COMMAND", "work").replace(
            "replicas: 1", "replicas: 1\n    deploy: {max_unavailable: 1}"
        )
    )
    code, data = run(capsys, *f, "plan")
    assert (code, data["settings_only"], data["summary"].get("start", 0)) == (3, True, 0), data
    code, deployed = run(capsys, *f, "deploy", *SKIP)
    assert (code, deployed["status"], deployed["release"]) == (0, "active", 2), deployed
    code, data = run(capsys, *f, "plan")
    assert (code, data["settings_only"]) == (ExitCode.OK, False)
