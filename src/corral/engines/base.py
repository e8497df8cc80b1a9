"""The interface between corral and a container engine: a few small protocols.

The core (spec, build, plan, apply) talks to engines only through these protocols and the
frozen values of ``corral.engines.values``. An engine finds corral's objects by labels
(``io.corral.*``), never by parsing names.

    Images         build, import a root filesystem, distribute, inspect, list, tag, remove
    Runtime        start, stop, remove, inspect, list, logs; resume; one-off containers
    Networks       the fleet's private networks
    Volumes        named data volumes (capability ``volumes``)
    Pods           network namespaces with open ports that outlive their containers,
                   and renaming a container in one (capability ``pods``: the edge)
    Introspection  security settings, exec, events, diff, run facts (one capability each)
    Access         how corral reaches an instance: the address its health checks use,
                   the testinfra backend URL, where a container's control socket is
    Engine         all of them, a ``name`` and the ``capabilities`` it declares

What goes beyond the core is a ``Capability`` (``corral.engines.capabilities``); a method
an engine cannot offer raises ``NotSupportedError``, and a caller that needs one checks it
first with ``require``. The protocols' methods that have a body are defaults an engine
inherits by subclassing ``Engine``; the others every engine implements.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from corral.engines.capabilities import Capability, lacks
from corral.engines.values import (
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    ExecResult,
    FileChange,
    ImageInfo,
    LogSink,
    Mount,
    PodSpec,
    PortMapping,
    ProbeResult,
    RunFacts,
    SecurityFacts,
)
from corral.errors import NotSupportedError


class Images(Protocol):
    """Where images are built and kept, and how they reach the hosts that run them."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo:
        """Make an image of the root filesystem in ``tarball`` (a base), tagged ``tag``.

        Args:
            changes: Containerfile instructions applied to it (``CMD``, ``ENV``...).
        """
        ...

    def build_image(
        self,
        context: Path,
        containerfile: Path,
        tag: str,
        labels: Mapping[str, str],
        log: LogSink | None = None,
        *,
        build_args: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> ImageInfo:
        """Build ``containerfile`` in ``context``; stream output lines to ``log``.

        Args:
            build_args: values for the Containerfile's ``ARG`` names, passed as data: a
                value substituted for ``${NAME}`` is never parsed as Containerfile text.
            network: let the build's steps reach the network. Without it they have none
                (a build step is the role's code, and it runs before any test).

        Raises:
            BuildError: the build failed; the error carries the tail of the log.
        """
        ...

    def distribute(self, image: str) -> str:
        """Make ``image`` (an id or a tag) startable wherever this engine runs containers;
        return the reference ``Runtime.start`` must be given.

        An engine with ``local-images`` runs what it built, and returns ``image`` as it
        is; one that spans hosts pushes it to its registry or loads it on each host.

        Raises:
            EngineError: the image could not be distributed.
        """
        if Capability.LOCAL_IMAGES in self.capabilities:
            return image
        raise lacks(self, Capability.LOCAL_IMAGES)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image called ``ref`` (tag or id), or None when there is none."""
        ...

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """Images carrying every one of ``labels``."""
        ...

    def tag_image(self, ref: str, tag: str) -> None:
        """Give the image ``ref`` the name ``tag`` too."""
        ...

    def untag_image(self, tag: str) -> None:
        """Drop one name of an image, keeping the image (and the build cache) itself;
        a name no image has is not an error."""
        ...

    def remove_image(self, ref: str) -> None:
        """Remove an image; an image that is already gone is not an error."""
        ...


class Runtime(Protocol):
    """Containers: corral's instances, its edge and its throwaway containers."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container as ``spec`` says; it carries ``spec.labels``.

        Raises:
            EngineError: it could not be created or started (a name in use included).
        """
        ...

    def stop(self, name: str, timeout: int = 10) -> None:
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` s); it stays, exited.
        A missing one is not an error."""
        ...

    def remove(self, name: str) -> None:
        """Remove a container (stopping it first); a missing one is not an error."""
        ...

    def kill(self, name: str) -> None:
        """Kill a running container at once (SIGKILL: no stop signal, no grace), as a crash
        would (``corral chaos``); it stays, exited. A missing one is not an error. An
        engine with no kill of its own stops the container with no grace period."""
        self.stop(name, timeout=0)

    def inspect(self, name: str) -> ContainerInfo | None:
        """The container called ``name`` (or with that id), or None when there is none."""
        ...

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying every one of ``labels``."""
        ...

    def logs(self, name: str, tail: int = 40) -> str:
        """The last ``tail`` lines the container printed (stdout and stderr)."""
        ...

    def resume(self, name: str) -> ContainerInfo:
        """Start a stopped container again, as it was (capability ``resume``: a blue-green
        stand-by switched back at once).

        Raises:
            NotSupportedError: the engine cannot.
        """
        raise lacks(self, Capability.RESUME)

    def collect_leftovers(self, prefix: str) -> list[str]:
        """Remove what the engine keeps for containers named ``prefix...`` that do not
        exist (a start killed after it stored a secret, before its container was
        created); return what was removed. An engine that keeps nothing apart from its
        containers has nothing to do."""
        return []

    def run_once(
        self,
        image: str,
        command: Sequence[str],
        timeout: float = 120,
        mounts: Sequence[Mount] = (),
    ) -> str:
        """Run ``command`` as root in a throwaway container with no network; return stdout
        (capability ``run-once``).

        Raises:
            EngineError: the command failed.
            NotSupportedError: the engine cannot.
        """
        raise lacks(self, Capability.RUN_ONCE)

    def run_probe(self, spec: ContainerSpec, timeout: float) -> ProbeResult:
        """Run ``spec``'s command to its end in a throwaway container, then remove it
        (capability ``run-once``).

        The container is locked down as ``spec`` says (as an instance is) and runs
        ``spec.command`` itself, not the image's entrypoint. One that is still running
        after ``timeout`` seconds is killed and removed. A command that fails is a result,
        not an error.

        Raises:
            EngineError: the engine could not be run at all.
            NotSupportedError: the engine cannot.
        """
        raise lacks(self, Capability.RUN_ONCE)

    def pause(self, name: str) -> None:
        """Freeze every process of a running container (capability ``pause``): its files
        hold still while a backup reads them; ``unpause`` lets it go on.

        Raises:
            NotSupportedError: the engine cannot.
        """
        raise lacks(self, Capability.PAUSE)

    def unpause(self, name: str) -> None:
        """Let a paused container's processes run again (capability ``pause``)."""
        raise lacks(self, Capability.PAUSE)

    def run_piped(
        self, spec: ContainerSpec, timeout: float, stdin: int | None, stdout: int | None
    ) -> ProbeResult:
        """Run ``spec``'s command to its end in a throwaway container, its standard input
        and output the file descriptors given (None: none), then remove it (capability
        ``pipes``: a dump streamed into a backup, a restore fed from one).

        Locked down as ``spec`` says, with ``spec.secrets`` handed over as an instance's
        are; only stderr is kept in the result. One still running after ``timeout``
        seconds is killed and removed.

        Raises:
            EngineError: the engine could not be run at all.
            NotSupportedError: the engine cannot.
        """
        raise lacks(self, Capability.PIPES)


class Networks(Protocol):
    """The private networks a fleet's containers talk on."""

    def ensure_network(self, name: str, labels: Mapping[str, str], internal: bool = False) -> None:
        """Create the network unless it exists; ``internal``: no route out of it."""
        ...

    def remove_network(self, name: str) -> None:
        """Remove a network no container uses any more (absent is fine); never its users."""
        ...

    def list_networks(self, labels: Mapping[str, str]) -> list[str]:
        """The names of the networks carrying every one of ``labels``, sorted."""
        ...


class Volumes(Protocol):
    """Named data volumes (capability ``volumes``): they outlive the containers using them."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        """Create the volume unless it exists (an existing one keeps its data)."""
        raise lacks(self, Capability.VOLUMES)

    def list_volumes(self, labels: Mapping[str, str]) -> list[str]:
        """The names of the volumes carrying every one of ``labels``, sorted; an engine
        without volumes has none."""
        return []

    def remove_volume(self, name: str) -> None:
        """Delete a data volume. Only ever called with a name the operator typed."""
        raise lacks(self, Capability.VOLUMES)

    def volume_path(self, name: str) -> Path:
        """The folder on corral's host that holds an existing volume's files (capability
        ``host-volumes``: a files backup reads it, a restore writes a new volume's).

        Raises:
            NotFoundError: there is no such volume.
            NotSupportedError: the engine cannot.
        """
        raise lacks(self, Capability.HOST_VOLUMES)

    def volume_sizes(self, labels: Mapping[str, str]) -> dict[str, int | None]:
        """The bytes on disk of each volume carrying every one of ``labels``, by name
        (None: the engine cannot tell); an engine without volumes has none."""
        return {}


class Pods(Protocol):
    """Network namespaces that outlive the containers in them (capability ``pods``): one
    container takes over another's open sockets while the host port stays published."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def create_pod(self, spec: PodSpec) -> None:
        """Create ``spec``'s pod, holding its network namespace and published ports."""
        raise lacks(self, Capability.PODS)

    def remove_pod(self, name: str) -> None:
        """Remove a pod and every container in it; a missing one is not an error."""
        raise lacks(self, Capability.PODS)

    def rename(self, name: str, new_name: str) -> None:
        """Give a container (running or not) another name."""
        raise lacks(self, Capability.PODS)


class Introspection(Protocol):
    """Looking at and into a running container: for test environments, never a deploy.
    Each method is a capability of its own."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def security(self, name: str) -> SecurityFacts:
        """How locked down a container is (read-only root, user, capabilities...)."""
        raise lacks(self, Capability.SECURITY)

    def exec_in(self, name: str, command: Sequence[str], timeout: float = 30) -> ExecResult:
        """Run ``command`` (an argv) inside a running container; a command that fails is a
        result, with its status. Only test environments may call this.

        Raises:
            EngineError: the container is not running, or the engine failed.
        """
        raise lacks(self, Capability.EXEC)

    def shell(self, name: str) -> subprocess.Popen[bytes]:
        """A POSIX shell (``/bin/sh``) inside a running container, as ``exec_in`` runs
        commands: a local process whose standard input, output and error are the shell's,
        each a pipe. Only test environments' exec broker may call this, for the commands
        of a role's tests (:mod:`corral.testing.shell`).

        Raises:
            EngineError: the shell could not be started.
        """
        raise lacks(self, Capability.EXEC)

    def session(self, name: str, command: Sequence[str], tty: bool, timeout: float) -> int | None:
        """Run ``command`` inside a running container attached to corral's own standard
        input and output (a terminal when ``tty``): ``corral break-glass``, the one
        sanctioned look inside a live instance. It runs as the container's user, with its
        capabilities. Returns its exit status, or None when it was cut after ``timeout``
        seconds.

        Raises:
            EngineError: the container is not running, or the engine failed.
        """
        raise lacks(self, Capability.EXEC)

    def events(self, labels: Mapping[str, str], since: str | None = None) -> Iterator[EngineEvent]:
        """Container events of containers carrying ``labels``, as they happen."""
        raise lacks(self, Capability.EVENTS)

    def diff(self, name: str) -> list[FileChange]:
        """The files a container added, changed or deleted on its root filesystem."""
        raise lacks(self, Capability.DIFF)

    def run_facts(self, name: str) -> RunFacts | None:
        """How a container was started (None: there is no such container)."""
        raise lacks(self, Capability.RUN_FACTS)


class Access(Protocol):
    """How corral, on its own host, reaches what runs in a container."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def probe_address(self, info: ContainerInfo, network: str) -> str | None:
        """The address corral's health checks (and the edge) use for ``info`` on
        ``network``, or None while it has none."""
        return info.addresses.get(network) or None

    def test_backend(self, name: str) -> str:
        """The testinfra backend URL that runs commands in container ``name``
        (capability ``exec``), e.g. ``podman://NAME``."""
        raise lacks(self, Capability.EXEC)

    def control_socket(self, mount: Mount, socket: str) -> str:
        """Where corral connects to the Unix socket a container makes at
        ``mount.target/socket``, ``mount`` being a host folder (``mount.source``) mounted
        into it (capability ``host-sockets``): the edge's admin socket."""
        if Capability.HOST_SOCKETS not in self.capabilities:
            raise lacks(self, Capability.HOST_SOCKETS)
        return str(Path(mount.source) / socket)


class Engine(Images, Runtime, Networks, Volumes, Pods, Introspection, Access, Protocol):
    """What corral needs from a container engine, and nothing more.

    An engine subclasses this (inheriting the defaults), sets ``name`` and lists what it
    can do beyond the core in ``capabilities``.
    """

    name: str
    capabilities: frozenset[Capability]


__all__ = [
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
    "LogSink",
    "Mount",
    "Networks",
    "NotSupportedError",
    "PodSpec",
    "Pods",
    "PortMapping",
    "ProbeResult",
    "Runtime",
    "SecurityFacts",
    "Volumes",
]
