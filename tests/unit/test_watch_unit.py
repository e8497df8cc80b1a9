"""The systemd unit of ``corral watch``, as scripts/setup installs it.

This machine has systemd installed but not as PID 1, so the unit cannot be started here.
What can be checked is checked: systemd's own parser accepts the unit (every key known,
every value valid, the command executable), and its command line, expanded as systemd
expands it from the environment file scripts/watch-service writes, is one corral accepts
and that reaches the watcher with those options.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "corral.yaml"


def rendered() -> str:
    return subprocess.run(
        [str(ROOT / "scripts" / "render-watch-unit")], capture_output=True, text=True, check=True
    ).stdout


def test_systemd_accepts_the_unit_as_setup_installs_it(tmp_path: Path) -> None:
    unit = tmp_path / "corral-watch@demo.service"  # an instance of the template
    unit.write_text(rendered())
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "info"},
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    # The same check fails a broken unit: it sees what it is asked to see.
    unit.write_text(rendered().replace("Restart=always", "Restart=alwayz"))
    broken = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], text=True, capture_output=True
    )
    assert "restart specifier" in broken.stderr


def expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's expansion of an ExecStart line: ``${VAR}`` is one word, ``$VAR`` is split
    on whitespace into words (systemd.service(5), "Command lines")."""
    words: list[str] = []
    for word in shlex.split(command):
        if word.startswith("${") and word.endswith("}"):
            words.append(env.get(word[2:-1], ""))
        elif word.startswith("$"):
            words += env.get(word[1:], "").split()
        else:
            words.append(word)
    return words


def test_the_units_command_runs_the_watcher_with_the_env_files_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(rendered())
    service = parser["Service"]
    assert service["Restart"] == "always" and service["KillMode"] == "process"
    assert service["EnvironmentFile"] == "/etc/corral/watch/%i.env"
    env = {"CORRAL_SPEC": str(EXAMPLE), "CORRAL_WATCH_OPTIONS": "--interval 5 --passes 3"}
    argv = expand(service["ExecStart"], env)
    assert Path(argv[0]) == (ROOT / ".venv" / "bin" / "corral").resolve()
    seen: dict[str, Any] = {}

    def watch(path: Path, interval: float, passes: int, *args: Any, **kwargs: Any) -> None:
        seen.update(path=path, interval=interval, passes=passes)

    monkeypatch.setattr("corral.app.watch", watch)
    with pytest.raises(SystemExit) as exited:
        main(argv[1:])
    assert exited.value.code in (0, None), capsys.readouterr().err
    assert seen == {"path": EXAMPLE, "interval": 5.0, "passes": 3}
