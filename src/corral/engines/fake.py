"""An in-memory engine for fast unit tests of pure logic (planner, strategies, build flow).

It keeps just enough bookkeeping to answer the Engine interface consistently. It is never
the proof that a feature works: the real-engine tests are.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from corral.engines.base import (
    ContainerInfo,
    ContainerSpec,
    Engine,
    ImageInfo,
    LogSink,
    Mount,
    PodSpec,
    ProbeResult,
)
from corral.errors import EngineError


def _matches(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


@dataclass(frozen=True)
class FakeBuild:
    """One ``build_image`` call, as the engine was asked to make it."""

    tag: str
    containerfile: str
    build_args: dict[str, str]
    network: bool


class FakeEngine(Engine):
    name = "fake"
    supports_pods = True

    def __init__(self) -> None:
        self.images: dict[str, ImageInfo] = {}
        self.containers: dict[str, ContainerInfo] = {}
        self.networks: dict[str, Mapping[str, str]] = {}
        self.volumes: dict[str, Mapping[str, str]] = {}
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
        return [i for i in self.images.values() if _matches(i.labels, labels)]

    def tag_image(self, ref: str, tag: str) -> None:
        image = self.inspect_image(ref)
        if image is None:
            raise EngineError(f"no image {ref}")
        self.images[image.id] = replace(image, tags=(*image.tags, tag))

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
        self.calls.append(("start", spec.name))
        return info

    def restart(self, name: str) -> ContainerInfo:
        info = replace(self.containers[name], state="running", exit_code=None)
        self.containers[name] = info
        self.calls.append(("restart", name))
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
        return self.containers.get(name)

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [c for c in self.containers.values() if _matches(c.labels, labels)]

    def ensure_network(self, name: str, labels: Mapping[str, str], internal: bool = False) -> None:
        self.networks.setdefault(name, dict(labels))

    def remove_network(self, name: str) -> None:
        self.networks.pop(name, None)

    def list_networks(self, labels: Mapping[str, str]) -> list[str]:
        return sorted(n for n, lbl in self.networks.items() if _matches(lbl, labels))

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.volumes.setdefault(name, dict(labels))

    def list_volumes(self, labels: Mapping[str, str]) -> list[str]:
        return sorted(n for n, lbl in self.volumes.items() if _matches(lbl, labels))

    def remove_volume(self, name: str) -> None:
        self.volumes.pop(name, None)
