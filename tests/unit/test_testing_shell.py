"""The exec broker's long-lived shell, against the host's own /bin/sh (the engine's
``podman exec -i`` is the same pipes; tests/engine/test_gate.py runs it for real)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from corral.engines.values import ExecResult
from corral.testing import broker
from corral.testing.shell import Shell, ShellGone


class Opener:
    """Opens /bin/sh here as an engine opens one in a container; counts the opens."""

    def __init__(self) -> None:
        self.opened: list[subprocess.Popen[bytes]] = []

    def __call__(self, container: str) -> subprocess.Popen[bytes]:
        pipe = subprocess.PIPE
        proc = subprocess.Popen(["/bin/sh"], stdin=pipe, stdout=pipe, stderr=pipe)
        self.opened.append(proc)
        return proc


@pytest.fixture
def shell() -> Shell:
    opened = Shell("web-1", Opener())
    yield opened
    opened.close()


@pytest.mark.parametrize(
    ("command", "want"),
    [
        ("echo hello", ExecResult(0, "hello\n", "")),
        ("printf no-newline", ExecResult(0, "no-newline", "")),
        ("echo out; echo err >&2; exit 3", ExecResult(3, "out\n", "err\n")),
        ("printf ''", ExecResult(0, "", "")),
        ("printf 'a\\n\\n\\n'", ExecResult(0, "a\n\n\n", "")),
        ("cat", ExecResult(0, "", "")),  # its input is /dev/null, not the shell's script
        ('echo "it\'s $((1 + 1))"', ExecResult(0, "it's 2\n", "")),
    ],
)
def test_a_command_gives_what_exec_would(shell: Shell, command: str, want: ExecResult) -> None:
    assert shell.run(command, timeout=10) == want


def test_output_that_is_not_utf8_fails_as_execs_does_and_the_shell_goes_on(
    shell: Shell,
) -> None:
    with pytest.raises(UnicodeDecodeError):
        shell.run("printf '\\377'", 10)
    assert shell.run("echo next", 10).stdout == "next\n"


def test_commands_share_nothing_but_the_shell(shell: Shell) -> None:
    assert shell.run("cd /tmp; X=1; exit 7", 10).status == 7
    assert shell.run("pwd; echo ${X:-unset}", 10).stdout == f"{Path.cwd()}\nunset\n"


def test_a_line_that_looks_like_the_end_is_output(shell: Shell) -> None:
    fake = "printf '\\nabc 0\\n'; printf '\\nabc\\n' >&2"
    assert shell.run(fake, 10) == ExecResult(0, "\nabc 0\n", "\nabc\n")


def test_a_background_process_holding_the_output_does_not_hold_the_answer(
    shell: Shell,
) -> None:
    assert shell.run("sleep 30 & echo started", timeout=5).stdout == "started\n"


def test_a_command_that_takes_too_long_ends_the_shell(shell: Shell) -> None:
    with pytest.raises(ShellGone, match="took too long") as gone:
        shell.run("sleep 30", timeout=0.3)
    assert gone.value.ran
    with pytest.raises(ShellGone, match="has ended") as again:
        shell.run("true", 5)
    assert not again.value.ran  # never handed over


def test_a_command_that_ends_the_shell_itself_may_have_run(shell: Shell) -> None:
    with pytest.raises(ShellGone, match="has ended") as gone:
        shell.run("kill -9 $PPID", 5)
    assert gone.value.ran


class Exec:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, command: object, timeout: float) -> ExecResult:
        self.calls.append(str(command))
        return ExecResult(0, "by exec\n", "")


def test_the_broker_runs_a_containers_commands_through_one_shell(tmp_path: Path) -> None:
    opener, exec_in, path = Opener(), Exec(), tmp_path / "exec.sock"
    with broker.ExecBroker(path, ["web-1", "web-2"], exec_in, 5, opener):
        for _ in range(3):
            assert broker.request(path, "web-1", "echo inside", 5)["stdout"] == "inside\n"
        assert broker.request(path, "web-2", "echo two", 5)["stdout"] == "two\n"
        # The shell gone between two commands: the next one is not lost.
        opener.opened[0].kill()
        opener.opened[0].wait()
        assert broker.request(path, "web-1", "echo after", 5)["stdout"] == "by exec\n"
        assert broker.request(path, "web-1", "echo new", 5)["stdout"] == "new\n"
    assert len(opener.opened) == 3 and exec_in.calls == ["['/bin/sh', '-c', 'echo after']"]
    assert all(proc.poll() is not None for proc in opener.opened)  # closed at the end


def test_a_command_for_a_busy_shell_is_an_exec(tmp_path: Path) -> None:
    opener, exec_in, path = Opener(), Exec(), tmp_path / "exec.sock"
    with broker.ExecBroker(path, ["web-1"], exec_in, 5, opener):
        slow = threading.Thread(target=broker.request, args=(path, "web-1", "sleep 1", 5))
        slow.start()
        while not opener.opened:  # the slow command holds the shell
            pass
        assert broker.request(path, "web-1", "echo quick", 5)["stdout"] == "by exec\n"
        slow.join()


def test_a_shell_that_cannot_be_opened_leaves_exec(tmp_path: Path) -> None:
    def refuse(container: str) -> subprocess.Popen[bytes]:
        raise OSError("no podman")

    exec_in, path = Exec(), tmp_path / "exec.sock"
    with broker.ExecBroker(path, ["web-1"], exec_in, 5, refuse):
        assert broker.request(path, "web-1", "true", 5)["stdout"] == "by exec\n"
        assert broker.request(path, "web-1", "true", 5)["stdout"] == "by exec\n"
    assert len(exec_in.calls) == 2
