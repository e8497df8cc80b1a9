"""Container engines behind one interface, found by name in a small registry."""

from __future__ import annotations

from collections.abc import Callable

from corral.engines.base import (
    ContainerInfo,
    ContainerSpec,
    Engine,
    EngineEvent,
    FileChange,
    ImageInfo,
    Mount,
    PortMapping,
    SecurityFacts,
)
from corral.errors import NotSupportedError, UsageError


def _podman() -> Engine:
    from corral.engines.podman import PodmanEngine

    return PodmanEngine()


def _fake() -> Engine:
    from corral.engines.fake import FakeEngine

    return FakeEngine()


REGISTRY: dict[str, Callable[[], Engine]] = {"podman": _podman, "fake": _fake}


def get_engine(name: str = "podman") -> Engine:
    """The engine called ``name``.

    Raises:
        UsageError: no engine has that name.
        MissingToolError: the engine's program is not installed.
    """
    try:
        factory = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UsageError(f"unknown engine {name!r}; known engines: {known}") from None
    return factory()


__all__ = [
    "REGISTRY",
    "ContainerInfo",
    "ContainerSpec",
    "Engine",
    "EngineEvent",
    "FileChange",
    "ImageInfo",
    "Mount",
    "NotSupportedError",
    "PortMapping",
    "SecurityFacts",
    "get_engine",
]
