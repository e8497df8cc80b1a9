"""Which commit a build came from: git_info against a real git checkout.

git is a tool CI must have (scripts/setup installs it): without it every image would be
labelled with no commit, silently, so its absence fails here instead of skipping.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from corral.build.git import git_info


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed: apt-get install git (or run scripts/setup)")
    repo = tmp_path / "repo"
    (repo / "fleet").mkdir(parents=True)
    (repo / "fleet" / "corral.yaml").write_text("fleet: shop\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q"], ["add", "."], [*identity, "commit", "-q", "-m", "first"]):
        subprocess.run([git, "-C", str(repo), *args], check=True, capture_output=True)
    return repo


def test_a_clean_checkout_names_its_commit(checkout: Path) -> None:
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    info = git_info(checkout / "fleet")
    assert (info.commit, info.dirty) == (head, False)
    assert len(head) == 40


def test_a_changed_file_makes_it_dirty(checkout: Path) -> None:
    (checkout / "fleet" / "corral.yaml").write_text("fleet: other\n")
    assert git_info(checkout / "fleet").dirty


def test_outside_a_checkout_there_is_no_commit(tmp_path: Path) -> None:
    info = git_info(tmp_path)
    assert (info.commit, info.dirty) == (None, False)
