"""Which commit a build came from, read from git if the spec lives in a checkout."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    dirty: bool


def git_info(folder: Path) -> GitInfo:
    """The HEAD commit of the checkout holding ``folder`` and whether it has changes."""
    head = _git(folder, "rev-parse", "HEAD")
    if head is None:
        return GitInfo(commit=None, dirty=False)
    status = _git(folder, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    return GitInfo(commit=head, dirty=bool(status))


def _git(folder: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None
