"""How long work reports progress: a tiny protocol the CLI implements with rich."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def step(self, subject: str, message: str) -> None:
        """A new phase of work on ``subject`` (a role, the edge...) has started."""

    def log(self, subject: str, line: str) -> None:
        """One line of output from a long step (a build, a bootstrap)."""


class NullProgress:
    """Progress that goes nowhere: the library default, and what tests use."""

    def step(self, subject: str, message: str) -> None:
        pass

    def log(self, subject: str, line: str) -> None:
        pass
