"""The frozen values that pass between corral and a container engine.

They are plain data: an engine reads a ``ContainerSpec`` and answers with the others; none
of them names an engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from corral.errors import EngineError

LogSink = Callable[[str], None]


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
    # Hand over, for each variable of ``secrets`` (their values unused), the value the
    # container of this name was started with, from the engine's store: a helper that
    # must log in to a live instance with what it holds (a dump during a rotation).
    secrets_of: str | None = None
    # Join this pod's network namespace (capability ``pods``); ``network``, ``ports`` and
    # ``sysctls`` are then the pod's and stay empty here.
    pod: str | None = None
    # What ``stop`` and ``remove`` send first (the image's or SIGTERM when None): a program
    # whose graceful stop is another signal (HAProxy's SIGUSR1) names it.
    stop_signal: str | None = None
    # The engine brings the container back when its process dies (``always``), so a
    # crashed edge serves again with no corral running. A stop by corral is not a death.
    restart: str | None = None


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
class RunFacts:
    """How a container was started, as the engine reports it: what drift is judged on."""

    image_id: str
    command: tuple[str, ...]  # the command after the entrypoint (podman's Config.Cmd)
    env: Mapping[str, str]
    image_env: frozenset[str]  # names the image itself sets (PATH...): not drift
    mounts: tuple[Mount, ...]  # volumes (by name) and host folders; no tmpfs, no secret
    capabilities: frozenset[str]  # without the CAP_ prefix
    user: str
    ports: tuple[PortMapping, ...]


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


@dataclass(frozen=True)
class ExecResult:
    """How a command run inside a container ended."""

    status: int  # its exit status
    stdout: str
    stderr: str

    def checked(self) -> str:
        """The command's output; a command that failed is an ``EngineError`` with its status.

        Raises:
            EngineError: the command exited with a status other than 0.
        """
        if self.status != 0:
            said = self.stderr.strip().splitlines()[-1:] or ["(no message)"]
            raise EngineError(
                f"the command exited {self.status}: {said[0]}",
                stderr=self.stderr[-2000:],
            )
        return self.stdout
