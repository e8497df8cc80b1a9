"""A missing system program is a message that says exactly what to install."""

from __future__ import annotations

import pytest

from corral.build.base import ensure_base
from corral.engines.fake import FakeEngine
from corral.engines.podman import PodmanEngine
from corral.errors import MissingToolError
from corral.progress import NullProgress
from corral.spec.model import DebianBase


def test_missing_podman(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("corral.engines.podman.shutil.which", lambda _: None)
    with pytest.raises(MissingToolError, match=r"apt-get install podman runc"):
        PodmanEngine()


def test_missing_mmdebstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("corral.build.base.shutil.which", lambda _: None)
    with pytest.raises(MissingToolError, match=r"apt-get install mmdebstrap"):
        ensure_base(FakeEngine(), DebianBase(debian="bookworm"), NullProgress())
