"""One long-lived shell in a container that runs the exec broker's commands in turn.

A ``podman exec`` costs a quarter of a second here (a podman process, conmon, the
runtime's exec), and a testinfra test makes one per fact it reads: ``host.file(p).user``,
``.mode`` and ``.exists`` are three. Through one shell per container, opened by the
engine once, a command is a fork inside the container: milliseconds.

Each command is written to the shell's standard input as::

    /bin/sh -c '<command, quoted>' </dev/null; printf '\\n<marker> %d\\n' $? ; \\
        printf '\\n<marker>\\n' >&2

so it runs in a shell of its own (its ``exit`` or ``cd`` ends there), reads nothing of
the script that follows, and is followed on each stream by a line holding a marker
drawn afresh for it (128 random bits a command cannot guess) and, on standard output,
its status. What comes before the marker's line is the command's output, less the
newline the ``printf`` put before the marker.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.engines.values import ExecResult
from corral.errors import EngineError

#: How the broker opens a shell in a container: a local process whose standard input,
#: output and error (pipes) are those of ``/bin/sh`` inside it, run as ``exec_in`` runs.
OpenShell = Callable[[str], "subprocess.Popen[bytes]"]

#: Seconds a shell has to end once its input is closed, before it is killed.
CLOSE_TIMEOUT = 5.0


@dataclass(eq=False, kw_only=True)
class ShellGone(EngineError):
    """The shell ended, or did not answer in time: it cannot be used again.

    Attributes:
        ran: whether the command may have run (False: it was never handed over).
    """

    ran: bool = True


class Shell:
    """A shell in ``container``; :meth:`run` one command at a time (not thread-safe)."""

    def __init__(self, container: str, open_shell: OpenShell) -> None:
        self.container = container
        self._proc = open_shell(container)

    def run(self, command: str, timeout: float) -> ExecResult:
        """``command``'s status and output, as ``exec_in(["/bin/sh", "-c", command])``.

        Raises:
            ShellGone: the shell ended, or the command took longer than ``timeout``
                seconds (the shell is then closed: its state is unknown).
        """
        marker = secrets.token_hex(16)
        script = (
            f"/bin/sh -c {shlex.quote(command)} </dev/null;"
            f" printf '\\n{marker} %d\\n' $?; printf '\\n{marker}\\n' >&2\n"
        )
        try:
            self._write(script.encode())
            out, err = self._read(marker, time.monotonic() + timeout)
        except ShellGone:
            self.close(wait=False)  # a command may still run there: no waiting for it
            raise
        status = re.fullmatch(rf"(?s)(.*)\n{marker} (\d+)\n", out)
        if status is None:  # the marker came without its status: not what was written
            self.close(wait=False)
            raise ShellGone(f"the shell in {self.container} answered out of turn")
        return ExecResult(int(status.group(2)), status.group(1), err[: -len(marker) - 2])

    def close(self, wait: bool = True) -> None:
        """End the shell: its input closed, then killed if it does not end in time (at
        once, without ``wait``)."""
        proc = self._proc
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=CLOSE_TIMEOUT if wait else 0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def _write(self, data: bytes) -> None:
        stdin = self._proc.stdin
        if stdin is None or self._proc.poll() is not None:
            raise ShellGone(f"the shell in {self.container} has ended", ran=False)
        try:
            stdin.write(data)
            stdin.flush()
        except OSError as exc:  # BrokenPipeError: it ended meanwhile
            message = f"the shell in {self.container} has ended: {exc}"
            raise ShellGone(message, ran=False) from exc

    def _read(self, marker: str, deadline: float) -> tuple[str, str]:
        """Read both streams until each has its marker line; (stdout, stderr), stderr
        with its marker line.

        Raises:
            UnicodeDecodeError: the output is not UTF-8 (as ``exec_in``'s text output).
        """
        ends = {"out": f"\n{marker} ", "err": f"\n{marker}\n"}
        got = {"out": bytearray(), "err": bytearray()}
        streams = {"out": self._proc.stdout, "err": self._proc.stderr}
        with selectors.DefaultSelector() as selector:
            for key, stream in streams.items():
                assert stream is not None
                selector.register(stream, selectors.EVENT_READ, key)
            while not _done(got["out"], ends["out"]) or not got["err"].endswith(
                ends["err"].encode()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ShellGone(f"a command in {self.container} took too long")
                for event, _ in selector.select(left):
                    chunk = os.read(event.fd, 65536)
                    if not chunk:
                        raise ShellGone(f"the shell in {self.container} has ended")
                    got[event.data] += chunk
        out, err = (bytes(got[k]).decode("utf-8") for k in ("out", "err"))
        return out, err


def _done(out: bytearray, end: str) -> bool:
    """Whether standard output holds its marker line with the status, whole."""
    at = out.rfind(end.encode())
    return at >= 0 and out.endswith(b"\n") and out[at + len(end) :].strip().isdigit()
