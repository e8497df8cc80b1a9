"""One contract per engine protocol, run against every engine.

Each ``...Contract`` class holds the checks of one protocol of ``corral.engines.base``.
A tier makes them tests by subclassing them under a ``Test`` name in a module that
defines the ``contract`` fixture (a :class:`Harness`): tests/unit/test_engine_contract.py
runs them on the fake engine, tests/engine/test_engine_contract.py on real Podman. A
check of an optional ability runs where the engine declares its capability, and where it
does not, checks that the engine says so (``NotSupportedError``) instead.
"""

from __future__ import annotations

import contextlib
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from corral.engines.base import Engine
from corral.engines.capabilities import Capability
from corral.engines.values import (
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    Mount,
    PodSpec,
    PortMapping,
)
from corral.errors import EngineError, NotSupportedError

FLEET = "io.corral.fleet"
KIND = "io.corral.kind"


@dataclass
class Harness:
    """An engine, an image whose containers run until stopped, and a unique fleet name
    whose label every object a check makes carries (the tier removes them afterwards).

    ``port``: a free host port, for the checks that publish one.
    """

    engine: Engine
    image: str
    command: tuple[str, ...]
    fleet: str
    folder: Path
    port: int
    made: list[str] = field(default_factory=list)

    def labels(self, **more: str) -> dict[str, str]:
        return {FLEET: self.fleet, **{f"io.corral.{k}": v for k, v in more.items()}}

    def name(self, what: str) -> str:
        return f"{self.fleet}-{what}"

    def spec(self, what: str, **changes: object) -> ContainerSpec:
        spec = ContainerSpec(
            name=self.name(what),
            image=self.image,
            command=self.command,
            labels=self.labels(kind="contract", what=what),
            stop_timeout=2,
        )
        return replace(spec, **changes)  # type: ignore[arg-type]

    def start(self, what: str, **changes: object) -> ContainerInfo:
        info = self.engine.start(self.spec(what, **changes))
        self.made.append(info.name)
        return info

    def rootfs(self) -> Path:
        """A tiny root filesystem tarball (one file), for ``import_rootfs``."""
        tarball = self.folder / "rootfs.tar"
        marker = self.folder / "contract"
        marker.write_text("corral contract\n")
        with tarfile.open(tarball, "w") as tar:
            tar.add(marker, arcname="etc/contract")
        return tarball


def unique_fleet() -> str:
    return f"corral-test-{uuid.uuid4().hex[:8]}"


def _names(found: list[ContainerInfo]) -> set[str]:
    return {c.name for c in found}


class ImagesContract:
    """Images: import, build, distribute, inspect, list, tag, untag, remove."""

    def _base(self, h: Harness) -> str:
        tag = f"localhost/corral/{h.fleet}/tiny:1"
        image = h.engine.import_rootfs(h.rootfs(), tag, h.labels(kind="base"))
        assert tag in image.tags
        return tag

    def test_an_imported_image_is_found_by_tag_id_and_labels(self, contract: Harness) -> None:
        tag = self._base(contract)
        by_tag = contract.engine.inspect_image(tag)
        assert by_tag is not None and by_tag.labels[KIND] == "base"
        by_id = contract.engine.inspect_image(by_tag.id)
        assert by_id is not None and by_id.id == by_tag.id
        other = contract.labels(kind="something-else")
        assert [i.id for i in contract.engine.list_images(contract.labels(kind="base"))] == [
            by_tag.id
        ]
        assert contract.engine.list_images(other) == []

    def test_a_build_carries_its_labels(self, contract: Harness) -> None:
        tag = self._base(contract)
        cfile = contract.folder / "Containerfile"
        cfile.write_text(f"FROM {tag}\n")
        built = contract.engine.build_image(
            contract.folder,
            cfile,
            f"localhost/corral/{contract.fleet}/built:1",
            contract.labels(kind="built"),
        )
        found = contract.engine.inspect_image(built.id)
        assert found is not None and found.labels[KIND] == "built"

    def test_tag_untag_and_remove(self, contract: Harness) -> None:
        tag = self._base(contract)
        image = contract.engine.inspect_image(tag)
        assert image is not None
        other = f"localhost/corral/{contract.fleet}/other:2"
        contract.engine.tag_image(image.id, other)
        tagged = contract.engine.inspect_image(other)
        assert tagged is not None and tagged.id == image.id
        contract.engine.untag_image(other)
        assert contract.engine.inspect_image(other) is None
        assert contract.engine.inspect_image(image.id) is not None  # the image stays
        contract.engine.remove_image(tag)
        assert contract.engine.inspect_image(tag) is None
        contract.engine.remove_image(tag)  # already gone: not an error

    def test_distribute_gives_a_startable_reference(self, contract: Harness) -> None:
        if Capability.LOCAL_IMAGES not in contract.engine.capabilities:
            pytest.fail("no contract check yet for an engine that distributes images")
        assert contract.engine.distribute(contract.image) == contract.image
        ref = contract.engine.distribute(contract.image)
        info = contract.start("distributed", image=ref)
        assert info.state == "running"


class RuntimeContract:
    """Runtime: start, stop, remove, inspect, list, resume, leftovers."""

    def test_start_then_inspect_shows_it_running_with_its_labels(self, contract: Harness) -> None:
        info = contract.start("web-1")
        found = contract.engine.inspect(info.name)
        assert found is not None
        assert found.state == "running" and found.holds_mounts
        assert found.name == contract.name("web-1")
        assert dict(found.labels).items() >= contract.labels(what="web-1").items()
        by_id = contract.engine.inspect(info.id)
        assert by_id is not None and by_id.name == info.name

    def test_a_name_in_use_is_refused(self, contract: Harness) -> None:
        contract.start("web-1")
        with pytest.raises(EngineError):
            contract.engine.start(contract.spec("web-1"))

    def test_list_filters_by_all_labels(self, contract: Harness) -> None:
        contract.start("a", labels=contract.labels(role="web", env="live"))
        contract.start("b", labels=contract.labels(role="web", env="test-1"))
        contract.start("c", labels=contract.labels(role="db", env="live"))
        engine = contract.engine
        both = engine.list_containers(contract.labels(role="web", env="live"))
        assert _names(both) == {contract.name("a")}
        web = engine.list_containers(contract.labels(role="web"))
        assert _names(web) == {contract.name("a"), contract.name("b")}
        assert len(engine.list_containers(contract.labels())) == 3
        assert engine.list_containers(contract.labels(role="none")) == []

    def test_stop_leaves_it_exited_and_listed(self, contract: Harness) -> None:
        info = contract.start("web-1")
        contract.engine.stop(info.name, timeout=2)
        found = contract.engine.inspect(info.name)
        assert found is not None
        assert found.state != "running" and not found.holds_mounts
        assert found.finished != ""
        assert _names(contract.engine.list_containers(contract.labels())) == {info.name}
        contract.engine.stop(contract.name("never-was"))  # missing: not an error

    def test_kill_leaves_it_exited_at_once(self, contract: Harness) -> None:
        info = contract.start("web-1")
        contract.engine.kill(info.name)
        found = contract.engine.inspect(info.name)
        assert found is not None and found.state != "running"
        assert found.exit_code not in (None, 0)  # killed, not stopped cleanly
        contract.engine.kill(info.name)  # dead already: not an error
        contract.engine.kill(contract.name("never-was"))  # missing: not an error

    def test_remove_then_inspect_is_none(self, contract: Harness) -> None:
        info = contract.start("web-1")
        contract.engine.remove(info.name)
        assert contract.engine.inspect(info.name) is None
        assert contract.engine.list_containers(contract.labels()) == []
        contract.engine.remove(info.name)  # already gone: not an error

    def test_resume_starts_a_stopped_container_as_it_was(self, contract: Harness) -> None:
        info = contract.start("web-1")
        contract.engine.stop(info.name, timeout=2)
        if Capability.RESUME not in contract.engine.capabilities:
            with pytest.raises(NotSupportedError):
                contract.engine.resume(info.name)
            return
        again = contract.engine.resume(info.name)
        assert again.id == info.id and again.state == "running"
        assert dict(again.labels) == dict(info.labels)

    def test_a_probe_container_is_gone_after_it_ran(self, contract: Harness) -> None:
        spec = contract.spec("probe", command=("true",))
        if Capability.RUN_ONCE not in contract.engine.capabilities:
            with pytest.raises(NotSupportedError):
                contract.engine.run_probe(spec, timeout=30)
            return
        result = contract.engine.run_probe(spec, timeout=30)
        assert result.exit_code == 0
        assert contract.engine.inspect(spec.name) is None

    def test_no_leftovers_of_containers_that_exist(self, contract: Harness) -> None:
        info = contract.start("web-1", secrets={"TOKEN": "s3cret"})
        assert contract.engine.collect_leftovers(contract.fleet) == []
        assert contract.engine.inspect(info.name) is not None


class NetworksContract:
    """Networks: ensure, list by all labels, remove (never its users)."""

    def test_ensure_list_and_remove(self, contract: Harness) -> None:
        engine = contract.engine
        net, other = contract.name("net"), contract.name("other")
        engine.ensure_network(net, contract.labels(env="live"))
        engine.ensure_network(net, contract.labels(env="live"))  # exists: nothing to do
        engine.ensure_network(other, contract.labels(env="test-1"), internal=True)
        assert engine.list_networks(contract.labels(env="live")) == [net]
        assert engine.list_networks(contract.labels()) == sorted([net, other])
        engine.remove_network(net)
        engine.remove_network(net)  # absent: fine
        assert engine.list_networks(contract.labels()) == [other]

    def test_a_container_on_a_network_has_an_address_there(self, contract: Harness) -> None:
        net = contract.name("net")
        contract.engine.ensure_network(net, contract.labels())
        info = contract.start("web-1", network=net)
        found = contract.engine.inspect(info.name)
        assert found is not None and found.addresses.get(net)

    def test_removing_a_network_never_removes_its_users(self, contract: Harness) -> None:
        net = contract.name("net")
        contract.engine.ensure_network(net, contract.labels())
        info = contract.start("web-1", network=net)
        with contextlib.suppress(EngineError):  # refusing is keeping its users too
            contract.engine.remove_network(net)
        found = contract.engine.inspect(info.name)
        assert found is not None and found.state == "running"


class PodsContract:
    """Pods: containers join one, keep its network while they come and go, are renamed
    in it, and go with it."""

    def test_a_pod_outlives_its_containers_and_takes_them_with_it(self, contract: Harness) -> None:
        engine, pod = contract.engine, contract.name("pod")
        if Capability.PODS not in engine.capabilities:
            with pytest.raises(NotSupportedError):
                engine.create_pod(PodSpec(pod, contract.labels()))
            return
        net = contract.name("net")
        engine.ensure_network(net, contract.labels())
        engine.create_pod(PodSpec(pod, contract.labels(kind="pod"), network=net))
        try:
            first = contract.start("edge-1", pod=pod)
            contract.engine.remove(first.name)  # the pod stays: a second one joins it
            second = contract.start("edge-next", pod=pod)
            engine.rename(second.name, contract.name("edge"))
            renamed = engine.inspect(contract.name("edge"))
            assert renamed is not None and renamed.state == "running"
            assert engine.inspect(second.name) is None
        finally:
            engine.remove_pod(pod)
        assert engine.inspect(contract.name("edge")) is None  # it went with its pod
        engine.remove_pod(pod)  # absent: fine


class VolumesContract:
    """Volumes: ensure, list by all labels, survive their containers, remove."""

    def _require(self, contract: Harness) -> bool:
        if Capability.VOLUMES in contract.engine.capabilities:
            return True
        with pytest.raises(NotSupportedError):
            contract.engine.ensure_volume(contract.name("data"), contract.labels())
        assert contract.engine.list_volumes(contract.labels()) == []
        return False

    def test_ensure_and_list_by_all_labels(self, contract: Harness) -> None:
        if not self._require(contract):
            return
        engine = contract.engine
        data, other = contract.name("data"), contract.name("other")
        engine.ensure_volume(data, contract.labels(role="db"))
        engine.ensure_volume(data, contract.labels(role="db"))  # exists: kept
        engine.ensure_volume(other, contract.labels(role="cache"))
        assert engine.list_volumes(contract.labels(role="db")) == [data]
        assert engine.list_volumes(contract.labels()) == sorted([data, other])
        engine.remove_volume(other)
        assert engine.list_volumes(contract.labels()) == [data]

    def test_a_volume_survives_its_container(self, contract: Harness) -> None:
        if not self._require(contract):
            return
        data = contract.name("data")
        contract.engine.ensure_volume(data, contract.labels(role="db"))
        info = contract.start("db-1", mounts=(Mount(data, "/data"),))
        found = contract.engine.inspect(info.name)
        assert found is not None and found.volumes == (data,)
        contract.engine.remove(info.name)
        assert contract.engine.list_volumes(contract.labels(role="db")) == [data]
        again = contract.start("db-2", mounts=(Mount(data, "/data"),))
        assert again.volumes == (data,)


class IntrospectionContract:
    """Introspection: security settings, exec, events, diff; each a capability."""

    def test_security_reports_the_lockdown_asked_for(self, contract: Harness) -> None:
        spec_changes: dict[str, object] = {
            "user": "65534:65534",
            "cap_add": ("NET_BIND_SERVICE",),
            "ports": (PortMapping(contract.port, 8000),),
        }
        info = contract.start("locked", **spec_changes)
        if Capability.SECURITY not in contract.engine.capabilities:
            with pytest.raises(NotSupportedError):
                contract.engine.security(info.name)
            return
        facts = contract.engine.security(info.name)
        assert facts.read_only_root and facts.no_new_privileges
        assert facts.user == "65534:65534"
        assert facts.capabilities == ("CAP_NET_BIND_SERVICE",)
        assert facts.published_ports == (contract.port,)
        open_ = contract.start("open", read_only=False, no_new_privileges=False)
        facts = contract.engine.security(open_.name)
        assert not facts.read_only_root and not facts.no_new_privileges
        assert facts.published_ports == ()

    def test_exec_returns_output_and_status(self, contract: Harness) -> None:
        info = contract.start("web-1")
        engine = contract.engine
        if Capability.EXEC not in engine.capabilities:
            with pytest.raises(NotSupportedError):
                engine.exec_in(info.name, ["true"])
            return
        said = engine.exec_in(info.name, ["echo", "hello", "contract"])
        assert (said.status, said.stdout) == (0, "hello contract\n")
        assert said.checked() == "hello contract\n"
        failed = engine.exec_in(info.name, ["false"])
        assert failed.status == 1
        with pytest.raises(EngineError):
            failed.checked()
        assert engine.exec_in(info.name, ["no-such-program-here"]).status == 127

    def test_a_session_ends_with_its_status(self, contract: Harness) -> None:
        info = contract.start("web-1")
        engine = contract.engine
        assert engine.session(info.name, ["true"], tty=False, timeout=30) == 0
        assert engine.session(info.name, ["false"], tty=False, timeout=30) == 1
        engine.stop(info.name, timeout=2)
        with pytest.raises(EngineError):
            engine.session(info.name, ["true"], tty=False, timeout=30)

    def test_exec_in_a_stopped_container_is_an_error(self, contract: Harness) -> None:
        info = contract.start("web-1")
        contract.engine.stop(info.name, timeout=2)
        with pytest.raises(EngineError):
            contract.engine.exec_in(info.name, ["true"])

    def test_diff_lists_a_file_the_container_added(self, contract: Harness) -> None:
        info = contract.start("writer", read_only=False)
        engine = contract.engine
        if Capability.DIFF not in engine.capabilities:
            with pytest.raises(NotSupportedError):
                engine.diff(info.name)
            return
        # /var/tmp: anyone may write there (mmdebstrap's / is 0555, and root has no
        # CAP_DAC_OVERRIDE in an instance).
        engine.exec_in(info.name, ["touch", "/var/tmp/contract-file"]).checked()
        changes = {(c.kind, c.path) for c in engine.diff(info.name)}
        assert ("A", "/var/tmp/contract-file") in changes

    def test_events_report_an_exec(self, contract: Harness) -> None:
        info = contract.start("web-1")
        engine = contract.engine
        labels = contract.labels(what="web-1")
        if Capability.EVENTS not in engine.capabilities:
            with pytest.raises(NotSupportedError):
                next(iter(engine.events(labels)))
            return
        engine.exec_in(info.name, ["true"]).checked()
        seen = _first_event(
            lambda: engine.events(labels, since="5m"),
            lambda e: e.kind == "exec" and e.container == info.name,
        )
        assert seen is not None, "no exec event within 30 s"


def _first_event(
    stream: Callable[[], Iterator[EngineEvent]],
    wanted: Callable[[EngineEvent], bool],
    timeout: float = 30,
) -> EngineEvent | None:
    """The first event of ``stream()`` that is ``wanted``, or None after ``timeout`` s
    (the stream never ends on its own: it is read in a thread)."""
    found: list[EngineEvent] = []

    def read() -> None:
        events = stream()
        for event in events:
            if wanted(event):
                found.append(event)
                break
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a generator's clean-up ends the engine's event stream

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0] if found else None


class AccessContract:
    """Access: the probe address, the test backend URL, the control socket's path."""

    def test_the_probe_address_is_the_address_on_that_network(self, contract: Harness) -> None:
        net = contract.name("net")
        contract.engine.ensure_network(net, contract.labels())
        info = contract.start("web-1", network=net)
        address = contract.engine.probe_address(info, net)
        assert address is not None and address == info.addresses[net]
        assert contract.engine.probe_address(info, contract.name("elsewhere")) is None

    def test_the_test_backend_names_the_container(self, contract: Harness) -> None:
        name = contract.name("web-1")
        if Capability.EXEC not in contract.engine.capabilities:
            with pytest.raises(NotSupportedError):
                contract.engine.test_backend(name)
            return
        url = contract.engine.test_backend(name)
        scheme, _, rest = url.partition("://")
        assert scheme and rest == name

    def test_the_control_socket_is_in_the_mounted_folder(self, contract: Harness) -> None:
        mount = Mount(str(contract.folder / "sock"), "/var/lib/edge")
        if Capability.HOST_SOCKETS not in contract.engine.capabilities:
            with pytest.raises(NotSupportedError):
                contract.engine.control_socket(mount, "admin.sock")
            return
        path = contract.engine.control_socket(mount, "admin.sock")
        assert Path(path) == contract.folder / "sock" / "admin.sock"
