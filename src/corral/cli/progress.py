"""Progress on stderr: a live status line on a terminal, plain lines elsewhere."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.status import Status
from rich.text import Text

from corral.cli.views import visible


class ConsoleProgress:
    """Shows each step as a line and the latest output line of long work as a spinner."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self._status: Status | None = None

    def __enter__(self) -> ConsoleProgress:
        if self.console.is_terminal:
            self._status = self.console.status("working...")
            self._status.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.stop()

    # Subjects and messages carry spec and build-log text: always Text, never read as markup.
    def step(self, subject: str, message: str) -> None:
        subject, message = visible(subject), visible(message)
        self.console.print(Text.assemble((subject, "bold"), f": {message}"), highlight=False)
        if self._status is not None:
            self._status.update(Text(f"{subject}: {message}"))

    def log(self, subject: str, line: str) -> None:
        subject, line = visible(subject), visible(line)
        if self.verbose:
            self.console.print(Text(f"  {subject}| {line}", style="dim"))
        elif self._status is not None:
            self._status.update(Text(f"{subject}: {line[:100]}"))
