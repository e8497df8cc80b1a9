"""What an engine can do beyond the core every engine has, declared as a set.

Every engine starts, stops, removes, inspects and lists containers, and builds and
inspects images. Anything more is a ``Capability`` the engine lists in its
``capabilities``: a caller that needs one asks with :func:`require` first, so an engine
that lacks it (a multi-host engine has no host sockets and no local images) fails with a
``NotSupportedError`` that says what is missing and who needed it, before anything
changed.
"""

from __future__ import annotations

import enum
from typing import Protocol

from corral.errors import NotSupportedError


class Capability(enum.Enum):
    """One optional ability of an engine; the value is its name in messages and JSON."""

    #: Images it builds are where its containers run: ``distribute`` has nothing to do.
    LOCAL_IMAGES = "local-images"
    #: Named volumes that outlive the containers that mount them.
    VOLUMES = "volumes"
    #: A stopped container starts again as it was (a blue-green stand-by switched back).
    RESUME = "resume"
    #: A throwaway container runs a command to its end (command health checks, seeding).
    RUN_ONCE = "run-once"
    #: Commands run inside a running container (lockdown checks, testinfra).
    EXEC = "exec"
    #: It reports how locked down a container is (read-only root, user, capabilities).
    SECURITY = "security-introspection"
    #: It streams container events (exec, died...).
    EVENTS = "events"
    #: It lists the files a running container changed.
    DIFF = "diff"
    #: It reports how a container was started (image, command, environment, mounts...).
    RUN_FACTS = "run-facts"
    #: A socket a container makes in a bind-mounted host folder is reachable on corral's
    #: host (the edge's control socket).
    HOST_SOCKETS = "host-sockets"
    #: Pods: a network namespace, with its published ports, that containers join and
    #: leave; a container in one can be renamed (the edge's take-over of its sockets).
    PODS = "pods"
    #: A running container's processes can be frozen and let go again (files backups).
    PAUSE = "pause"
    #: A throwaway container's standard input and output can be given (dumps, restores).
    PIPES = "pipes"
    #: A volume's files are a folder on corral's host (files backups and restores).
    HOST_VOLUMES = "host-volumes"

    @property
    def ability(self) -> str:
        """What an engine with this capability can do, as words for a message."""
        return _ABILITIES[self]


_ABILITIES = {
    Capability.LOCAL_IMAGES: "run the images it builds without distributing them",
    Capability.VOLUMES: "keep named volumes",
    Capability.RESUME: "start a stopped container again as it was",
    Capability.RUN_ONCE: "run a command in a throwaway container",
    Capability.EXEC: "run commands inside a container",
    Capability.SECURITY: "report a container's security settings",
    Capability.EVENTS: "report container events",
    Capability.DIFF: "list the files a container changed",
    Capability.RUN_FACTS: "report how a container was started",
    Capability.HOST_SOCKETS: "reach a container's Unix socket from corral's host",
    Capability.PODS: "keep a pod whose open ports outlive the containers in it",
    Capability.PAUSE: "pause a running container",
    Capability.PIPES: "stream a throwaway container's standard input and output",
    Capability.HOST_VOLUMES: "show a volume's files as a folder on corral's host",
}


class Declares(Protocol):
    """Anything that names itself and declares its capabilities (every engine)."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...


def supports(engine: Declares, capability: Capability) -> bool:
    """Whether ``engine`` declares ``capability``."""
    return capability in engine.capabilities


def require(engine: Declares, capability: Capability, purpose: str) -> None:
    """Make sure ``engine`` has ``capability`` before ``purpose`` relies on it.

    Args:
        purpose: who needs it, as words that finish "... which ___ needs", e.g.
            "corral test's lockdown checks".

    Raises:
        NotSupportedError: the engine does not declare ``capability``.
    """
    if capability not in engine.capabilities:
        raise NotSupportedError(
            f"the {engine.name} engine cannot {capability.ability}, which {purpose} needs",
            engine=engine.name,
            capability=capability.value,
        )


def lacks(engine: Declares, capability: Capability) -> NotSupportedError:
    """The error an engine's method raises when it lacks ``capability``."""
    return NotSupportedError(
        f"the {engine.name} engine cannot {capability.ability}",
        engine=engine.name,
        capability=capability.value,
    )
