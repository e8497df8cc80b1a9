"""The narrow interface between corral and a container engine.

The core (spec, build, plan, apply) talks to engines only through ``Engine`` and the
frozen values below. An engine finds corral's objects by labels (``io.corral.*``), never by
parsing names. Optional abilities are declared as capability flags; a method an engine
cannot offer raises ``NotSupportedError`` so callers can say so plainly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import EngineError

LogSink = Callable[[str], None]


class NotSupportedError(EngineError):
    kind = "not-supported"


@dataclass(frozen=True)
class ImageInfo:
    id: str
    digest: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    created: str
    size: int


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class Mount:
    """A named volume (``volume``) or a host path (``source`` absolute) at ``target``."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class PodSpec:
    """A network namespace that outlives the containers joining it (``ContainerSpec.pod``).

    It holds the network, the published ports and the network's kernel settings, so one
    container can take over from another in it while the host port stays open.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    ports: tuple[PortMapping, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)  # ``net.*`` of its namespace


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one instance; lockdown defaults are the safe ones."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    network_aliases: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    mounts: tuple[Mount, ...] = ()
    workdir: str | None = None
    read_only: bool = True
    tmpfs: tuple[str, ...] = ("/tmp",)
    # Writable folders on the read-only root that belong to ``user`` (mode 0755, noexec):
    # /run, so a program can make its runtime folder, and those the role asks for.
    owned_tmpfs: tuple[str, ...] = ("/run",)
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    stop_timeout: int = 10
    # A tiny init as PID 1 forwards SIGTERM to the program, which PID 1 would ignore, so
    # an instance stops at once instead of being killed after the stop timeout.
    init: bool = True
    # Kernel settings of the container's own namespaces (``net.*`` of its network), by name.
    sysctls: Mapping[str, str] = field(default_factory=dict)
    # Secret values by environment variable name: handed to the engine's secret store,
    # never written into the container's configuration, labels or corral's state.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Join this pod's network namespace; ``network``, ``ports`` and ``sysctls`` are then
    # the pod's and stay empty here.
    pod: str | None = None
    # What ``stop`` and ``remove`` send first (the image's or SIGTERM when None): a program
    # whose graceful stop is another signal (HAProxy's SIGUSR1) names it.
    stop_signal: str | None = None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image_id: str
    labels: Mapping[str, str]
    state: str  # created | running | exited | ...
    addresses: Mapping[str, str]  # network name -> IP address
    created: str
    exit_code: int | None = None
    finished: str = ""  # when it last stopped (ISO time), empty while it never has
    volumes: tuple[str, ...] = ()  # names of the named volumes it mounts

    @property
    def holds_mounts(self) -> bool:
        """Whether a process of it may still be using its volumes: anything but a
        container that never started or has exited."""
        return self.state not in _AT_REST


_AT_REST = frozenset({"created", "configured", "exited", "stopped"})


@dataclass(frozen=True)
class ProbeResult:
    """How one run of a probe container ended."""

    exit_code: int | None  # None: it did not finish in time and was killed
    output: str  # the last lines it printed, stdout and stderr together
    seconds: float  # how long the run took, the engine's start and removal included


@dataclass(frozen=True)
class SecurityFacts:
    """How locked down a container is, as the engine reports it."""

    read_only_root: bool
    user: str
    # Every capability a process in it may hold: the bounding set and the effective one.
    # A non-root user's effective set is empty anyway; the bounding set shows a missing drop.
    capabilities: tuple[str, ...]
    no_new_privileges: bool
    published_ports: tuple[int, ...]  # host ports


@dataclass(frozen=True)
class EngineEvent:
    time: str
    kind: str  # e.g. exec, exec_died, died, start
    container: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class FileChange:
    kind: str  # A (added) | C (changed) | D (deleted)
    path: str


class Engine(ABC):
    """What corral needs from a container engine, and nothing more."""

    name: str = "engine"
    supports_diff: bool = False
    supports_events: bool = False
    supports_pods: bool = False

    # -- images -----------------------------------------------------------------------
    @abstractmethod
    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo:
        """Import a root filesystem tarball as an image tagged ``tag``."""

    @abstractmethod
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

    @abstractmethod
    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image called ``ref`` (tag or id), or None when there is none."""

    @abstractmethod
    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """Images carrying every one of ``labels``."""

    @abstractmethod
    def tag_image(self, ref: str, tag: str) -> None: ...

    def untag_image(self, tag: str) -> None:
        """Drop one name of an image, keeping the image (and the build cache) itself."""
        self.remove_image(tag)

    @abstractmethod
    def remove_image(self, ref: str) -> None:
        """Remove an image; an image that is already gone is not an error."""

    @abstractmethod
    def run_once(
        self,
        image: str,
        command: Sequence[str],
        timeout: float = 120,
        mounts: Sequence[Mount] = (),
    ) -> str:
        """Run ``command`` as root in a throwaway container with no network; return stdout."""

    def run_probe(self, spec: ContainerSpec, timeout: float) -> ProbeResult:
        """Run ``spec``'s command to its end in a throwaway container, then remove it.

        The container is locked down as ``spec`` says (as an instance is) and runs
        ``spec.command`` itself, not the image's entrypoint. One that is still running
        after ``timeout`` seconds is killed and removed. A command that fails is a result,
        not an error.

        Raises:
            EngineError: the engine could not be run at all.
        """
        raise NotSupportedError(f"{self.name} cannot run probe containers")

    # -- containers -------------------------------------------------------------------
    @abstractmethod
    def start(self, spec: ContainerSpec) -> ContainerInfo: ...

    @abstractmethod
    def restart(self, name: str) -> ContainerInfo:
        """Start a stopped container again, as it was (for an instant switch back)."""

    @abstractmethod
    def stop(self, name: str, timeout: int = 10) -> None: ...

    @abstractmethod
    def logs(self, name: str, tail: int = 40) -> str:
        """The last ``tail`` lines the container printed (stdout and stderr)."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove a container (stopping it first); a missing one is not an error."""

    @abstractmethod
    def inspect(self, name: str) -> ContainerInfo | None: ...

    @abstractmethod
    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying every one of ``labels``."""

    def security(self, name: str) -> SecurityFacts:
        """How locked down a container is (read-only root, user, capabilities...)."""
        raise NotSupportedError(f"{self.name} cannot report a container's security settings")

    def forget_secrets(self, prefix: str) -> list[str]:
        """Remove the stored secrets of containers named ``prefix...`` that do not exist
        (a start killed after storing them, before creating its container); return them.
        Engines that store no secrets apart from their containers have nothing to do."""
        return []

    def exec_in(self, name: str, command: Sequence[str], timeout: float = 30) -> str:
        """Run a command inside a container. Only test environments may call this."""
        raise NotSupportedError(f"{self.name} cannot run commands in a container")

    def events(self, labels: Mapping[str, str], since: str | None = None) -> Iterator[EngineEvent]:
        raise NotSupportedError(f"{self.name} does not report events")

    def diff(self, name: str) -> list[FileChange]:
        raise NotSupportedError(f"{self.name} cannot list changed files")

    def rename(self, name: str, new_name: str) -> None:
        """Give a container (running or not) another name."""
        raise NotSupportedError(f"{self.name} cannot rename containers")

    # -- pods -------------------------------------------------------------------------
    def create_pod(self, spec: PodSpec) -> None:
        """Create ``spec``'s pod, holding its network namespace and published ports."""
        raise NotSupportedError(f"{self.name} has no pods")

    def remove_pod(self, name: str) -> None:
        """Remove a pod and every container in it; a missing one is not an error."""
        raise NotSupportedError(f"{self.name} has no pods")

    # -- networks and volumes ---------------------------------------------------------
    @abstractmethod
    def ensure_network(
        self, name: str, labels: Mapping[str, str], internal: bool = False
    ) -> None: ...

    @abstractmethod
    def remove_network(self, name: str) -> None:
        """Remove a network no container uses any more (absent is fine); never its users."""

    @abstractmethod
    def list_networks(self, labels: Mapping[str, str]) -> list[str]: ...

    @abstractmethod
    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None: ...

    @abstractmethod
    def list_volumes(self, labels: Mapping[str, str]) -> list[str]: ...

    @abstractmethod
    def remove_volume(self, name: str) -> None:
        """Delete a data volume. Only ever called with a name the operator typed."""
