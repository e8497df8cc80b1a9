"""An in-memory engine for fast unit tests of pure logic (planner, strategies, build flow).

It keeps just enough bookkeeping to answer the Engine interface consistently, and passes
the same contract suite as Podman (tests/contract_suite.py). It is never the proof that a
feature works: the real-engine tests are. It lacks two capabilities on purpose (events and
diff), so the path of an engine that declares what it lacks is exercised too.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from corral.engines.base import Engine
from corral.engines.capabilities import Capability
from corral.engines.values import (
    ContainerInfo,
    ContainerSpec,
    ExecResult,
    ImageInfo,
    LogSink,
    Mount,
    PodSpec,
    ProbeResult,
    RunFacts,
    SecurityFacts,
)
from corral.errors import EngineError, NotFoundError
from corral.formats import labels_match

#: What the fake can do: everything but what only a real kernel could tell.
# Backups need a real engine (paused writers, piped dumps, a volume's host folder).
FAKE_CAPABILITIES = frozenset(Capability) - {
    Capability.EVENTS,
    Capability.DIFF,
    Capability.PAUSE,
    Capability.PIPES,
    Capability.HOST_VOLUMES,
}


@dataclass(frozen=True)
class FakeBuild:
    """One ``build_image`` call, as the engine was asked to make it."""

    tag: str
    containerfile: str
    build_args: dict[str, str]
    network: bool


def fake_exec(name: str, command: Sequence[str]) -> ExecResult:
    """The fake's answer to a command run in a container: ``echo``, ``true`` and
    ``false`` behave as they would; any other program is not found (status 127)."""
    program, *args = command or ("",)
    if program == "echo":
        return ExecResult(0, " ".join(args) + "\n", "")
    if program in ("true", "false"):
        return ExecResult(0 if program == "true" else 1, "", "")
    return ExecResult(127, "", f"{program}: command not found\n")


class FakeEngine(Engine):
    """Containers, images, networks and volumes as dictionaries."""

    name = "fake"
    capabilities = FAKE_CAPABILITIES

    def __init__(self) -> None:
        self.images: dict[str, ImageInfo] = {}
        self.containers: dict[str, ContainerInfo] = {}
        self.networks: dict[str, Mapping[str, str]] = {}
        self.volumes: dict[str, Mapping[str, str]] = {}
        self.volume_bytes: dict[str, int] = {}  # what volume_sizes answers (absent: None)
        self.pods: dict[str, PodSpec] = {}
        self.pod_of: dict[str, str] = {}  # container name -> the pod it joined
        self.calls: list[tuple[str, str]] = []
        self.builds: list[FakeBuild] = []
        self._ids = itertools.count(1)
        self._address_counter = itertools.count(0)  # only goes up: no two containers share one
        self.now = "2026-01-01T00:00:00Z"  # what ``stop`` records as the finish time
        # Every probe container run, and what decides how it ends (healthy by default).
        self.probes: list[ContainerSpec] = []
        self.probe_answer: Callable[[ContainerSpec], ProbeResult] = lambda spec: ProbeResult(
            0, "", 0.0
        )
        self.specs: dict[str, ContainerSpec] = {}  # each container's, for ``security``
        # What a command run with ``exec_in`` answers; a test may replace it.
        self.exec_answer: Callable[[str, Sequence[str]], ExecResult] = fake_exec
        # How a break-glass session ends (its status; None: cut at the time limit); by
        # default as ``exec_in`` would end the same command.
        self.session_answer: Callable[[str, Sequence[str]], int | None] = lambda name, command: (
            self.exec_answer(name, command).status
        )

    def _new_id(self) -> str:
        return hashlib.sha256(str(next(self._ids)).encode()).hexdigest()

    def _add_image(self, tag: str, labels: Mapping[str, str]) -> ImageInfo:
        image_id = self._new_id()
        image = ImageInfo(image_id, "sha256:" + image_id, (tag,), dict(labels), "", 0)
        self.images[image_id] = image
        self.calls.append(("image", tag))
        return image

    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo:
        return self._add_image(tag, labels)

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
        text = containerfile.read_text()
        self.builds.append(FakeBuild(tag, text, dict(build_args or {}), network))
        return self._add_image(tag, labels)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        for image in self.images.values():
            if ref in (image.id, image.digest) or ref in image.tags:
                return image
        return None

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        return [i for i in self.images.values() if labels_match(i.labels, labels)]

    def tag_image(self, ref: str, tag: str) -> None:
        image = self.inspect_image(ref)
        if image is None:
            raise EngineError(f"no image {ref}")
        self.images[image.id] = replace(image, tags=(*image.tags, tag))

    def untag_image(self, tag: str) -> None:
        image = self.inspect_image(tag)
        if image is not None and tag in image.tags:
            self.images[image.id] = replace(image, tags=tuple(t for t in image.tags if t != tag))

    def remove_image(self, ref: str) -> None:
        image = self.inspect_image(ref)
        if image is not None:
            del self.images[image.id]

    def run_once(
        self,
        image: str,
        command: Sequence[str],
        timeout: float = 120,
        mounts: Sequence[Mount] = (),
    ) -> str:
        return "base-files\t12.4\npython3\t3.11.2-1\n"

    def run_probe(self, spec: ContainerSpec, timeout: float) -> ProbeResult:
        if spec.name in self.containers:
            raise EngineError(f"a container called {spec.name} exists already")
        self.probes.append(spec)
        self.calls.append(("probe", spec.name))
        return self.probe_answer(spec)

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        if spec.name in self.containers:
            raise EngineError(f"a container called {spec.name} exists already")
        network = spec.network
        if spec.pod is not None:
            if spec.pod not in self.pods:
                raise EngineError(f"no pod {spec.pod}")
            network = self.pods[spec.pod].network
            self.pod_of[spec.name] = spec.pod
        number = next(self._address_counter)
        address = f"10.88.{number // 250}.{number % 250 + 2}"
        info = ContainerInfo(
            self._new_id(),
            spec.name,
            spec.image,
            dict(spec.labels),
            "running",
            {network or "podman": address},
            "",
            volumes=tuple(m.source for m in spec.mounts if not m.source.startswith("/")),
        )
        self.containers[spec.name] = info
        self.specs[spec.name] = spec
        self.calls.append(("start", spec.name))
        return info

    def resume(self, name: str) -> ContainerInfo:
        if name not in self.containers:
            raise NotFoundError(f"no container {name}")
        info = replace(self.containers[name], state="running", exit_code=None)
        self.containers[name] = info
        self.calls.append(("restart", name))  # the plan's word for it
        return info

    def logs(self, name: str, tail: int = 40) -> str:
        return f"(fake logs of {name})"

    def stop(self, name: str, timeout: int = 10) -> None:
        if name in self.containers:
            self.containers[name] = replace(
                self.containers[name], state="exited", exit_code=0, finished=self.now
            )
            self.calls.append(("stop", name))

    def remove(self, name: str) -> None:
        self.pod_of.pop(name, None)
        self.specs.pop(name, None)
        if self.containers.pop(name, None) is not None:
            self.calls.append(("remove", name))

    def rename(self, name: str, new_name: str) -> None:
        if new_name in self.containers:
            raise EngineError(f"a container called {new_name} exists already")
        info = self.containers.pop(name)
        self.containers[new_name] = replace(info, name=new_name)
        if name in self.pod_of:
            self.pod_of[new_name] = self.pod_of.pop(name)
        self.calls.append(("rename", f"{name}>{new_name}"))

    def create_pod(self, spec: PodSpec) -> None:
        if spec.name in self.pods:
            raise EngineError(f"a pod called {spec.name} exists already")
        self.pods[spec.name] = spec
        self.calls.append(("pod", spec.name))

    def remove_pod(self, name: str) -> None:
        for container in [c for c, pod in self.pod_of.items() if pod == name]:
            self.remove(container)
        if self.pods.pop(name, None) is not None:
            self.calls.append(("remove-pod", name))

    def inspect(self, name: str) -> ContainerInfo | None:
        found = self.containers.get(name)
        if found is None:  # by id, as a real engine answers too
            found = next((c for c in self.containers.values() if c.id == name), None)
        return found

    def security(self, name: str) -> SecurityFacts:
        spec = self.specs.get(name)
        if spec is None:
            raise NotFoundError(f"no container {name}")
        return SecurityFacts(
            read_only_root=spec.read_only,
            user=spec.user or "",
            capabilities=tuple(sorted(f"CAP_{c.removeprefix('CAP_')}" for c in spec.cap_add)),
            no_new_privileges=spec.no_new_privileges,
            published_ports=tuple(sorted(p.host_port for p in spec.ports)),
        )

    def kill(self, name: str) -> None:
        info = self.containers.get(name)
        if info is not None and info.state == "running":
            self.containers[name] = replace(info, state="exited", exit_code=137, finished=self.now)
            self.calls.append(("kill", name))

    def session(self, name: str, command: Sequence[str], tty: bool, timeout: float) -> int | None:
        info = self.containers.get(name)
        if info is None or info.state != "running":
            raise EngineError(f"cannot open a session in {name}: it is not running")
        self.calls.append(("session", name))
        return self.session_answer(name, command)

    def run_facts(self, name: str) -> RunFacts | None:
        spec, info = self.specs.get(name), self.containers.get(name)
        if spec is None or info is None:
            return None
        return RunFacts(
            image_id=info.image_id,
            command=spec.command,
            env=dict(spec.env),
            image_env=frozenset(),
            mounts=tuple(sorted(spec.mounts, key=lambda m: m.target)),
            capabilities=frozenset(c.removeprefix("CAP_") for c in spec.cap_add),
            user=spec.user or "",
            ports=spec.ports,
        )

    def exec_in(self, name: str, command: Sequence[str], timeout: float = 30) -> ExecResult:
        info = self.containers.get(name)
        if info is None or info.state != "running":
            raise EngineError(f"cannot run a command in {name}: it is not running")
        self.calls.append(("exec", name))
        return self.exec_answer(name, command)

    def test_backend(self, name: str) -> str:
        return f"fake://{name}"

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [c for c in self.containers.values() if labels_match(c.labels, labels)]

    def ensure_network(self, name: str, labels: Mapping[str, str], internal: bool = False) -> None:
        self.networks.setdefault(name, dict(labels))

    def remove_network(self, name: str) -> None:
        self.networks.pop(name, None)

    def list_networks(self, labels: Mapping[str, str]) -> list[str]:
        return sorted(n for n, lbl in self.networks.items() if labels_match(lbl, labels))

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.volumes.setdefault(name, dict(labels))

    def list_volumes(self, labels: Mapping[str, str]) -> list[str]:
        return sorted(n for n, lbl in self.volumes.items() if labels_match(lbl, labels))

    def remove_volume(self, name: str) -> None:
        if any(name in c.volumes for c in self.containers.values()):
            raise EngineError(f"volume {name} is being used by a container")
        self.volumes.pop(name, None)

    def volume_sizes(self, labels: Mapping[str, str]) -> dict[str, int | None]:
        return {name: self.volume_bytes.get(name) for name in self.list_volumes(labels)}
