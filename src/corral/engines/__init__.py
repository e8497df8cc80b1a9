"""Container engines behind a few small protocols (see ``base``), found by name in a
small registry; each declares its capabilities (see ``capabilities``)."""

from __future__ import annotations

from collections.abc import Callable

from corral.engines.base import (
    Access,
    Engine,
    Images,
    Introspection,
    Networks,
    Runtime,
    Volumes,
)
from corral.engines.capabilities import Capability, require, supports
from corral.engines.values import (
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    ExecResult,
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
    "Access",
    "Capability",
    "ContainerInfo",
    "ContainerSpec",
    "Engine",
    "EngineEvent",
    "ExecResult",
    "FileChange",
    "ImageInfo",
    "Images",
    "Introspection",
    "Mount",
    "Networks",
    "NotSupportedError",
    "PortMapping",
    "Runtime",
    "SecurityFacts",
    "Volumes",
    "get_engine",
    "require",
    "supports",
]
