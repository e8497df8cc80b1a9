"""The Podman engine's own promises, checked against the real podman."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from corral.engines.base import ContainerSpec, Mount
from corral.engines.podman import PodmanEngine
from corral.engines.podman_api import PodmanAPI
from corral.errors import EngineError
from tests.engine.helpers import secret_store


def test_listing_by_several_labels_needs_all_of_them(engine: PodmanEngine) -> None:
    # podman ORs repeated label filters for volumes and networks; corral must not.
    tag = uuid.uuid4().hex[:8]
    both = {"io.corral.fleet": f"corral-test-{tag}", "io.corral.env": "test-x"}
    one = {"io.corral.fleet": f"corral-test-{tag}", "io.corral.env": "live"}
    names = {f"corral-test-{tag}-both": both, f"corral-test-{tag}-one": one}
    try:
        for name, labels in names.items():
            engine.ensure_volume(name, labels)
            engine.ensure_network(name, labels)
        assert engine.list_volumes(both) == [f"corral-test-{tag}-both"]
        assert engine.list_networks(both) == [f"corral-test-{tag}-both"]
    finally:
        for name in names:
            engine.remove_volume(name)
            engine.remove_network(name)


# -- reads through podman's REST API and through the CLI ---------------------------------


def test_the_api_service_answers(engine: PodmanEngine) -> None:
    # scripts/setup starts it; without it every read costs a podman process (30-50 ms).
    assert engine.api is not None, "podman's API does not answer: run scripts/setup"


def test_reads_agree_through_the_api_and_the_cli(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    assert engine.api is not None
    cli = PodmanEngine(api=None)
    fleet = cleanup_fleet
    labels = {"io.corral.fleet": fleet, "io.corral.kind": "instance"}
    name = f"{fleet}-web-r1-1"
    engine.ensure_network(f"corral-{fleet}", {"io.corral.fleet": fleet})
    engine.ensure_volume(f"{fleet}-data", {"io.corral.fleet": fleet})
    engine.start(
        ContainerSpec(
            name=name,
            image=shared_base,
            command=("sleep", "300"),
            labels=labels,
            network=f"corral-{fleet}",
            mounts=(Mount(f"{fleet}-data", "/data"),),
        )
    )
    through_api = engine.inspect(name)
    assert through_api is not None and through_api.state == "running"
    assert through_api.addresses[f"corral-{fleet}"]  # what a deploy needs from it
    assert through_api == cli.inspect(name)
    assert engine.list_containers(labels) == cli.list_containers(labels) == [through_api]
    assert engine.list_containers({**labels, "io.corral.kind": "edge"}) == []
    assert engine.inspect_image(shared_base) == cli.inspect_image(shared_base)
    assert engine.list_volumes({"io.corral.fleet": fleet}) == [f"{fleet}-data"]
    assert cli.list_volumes({"io.corral.fleet": fleet}) == [f"{fleet}-data"]
    assert engine.api.network_exists(f"corral-{fleet}")
    for missing in (engine, cli):
        assert missing.inspect(f"{fleet}-nothing") is None
        assert missing.inspect_image(f"localhost/{fleet}-nothing:1") is None
    assert not engine.api.network_exists(f"{fleet}-nothing")


def test_reads_fall_back_to_the_cli_when_the_api_goes_away(
    shared_base: str, tmp_path: Path
) -> None:
    engine = PodmanEngine(api=PodmanAPI(str(tmp_path / "gone.sock")))
    image = engine.inspect_image(shared_base)
    assert image is not None and image.id == shared_base
    assert engine.api is None  # the CLI from now on, without trying the socket again


@pytest.mark.parametrize("reads", ["api", "cli"])
def test_a_removed_containers_secrets_leave_the_store(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str, reads: str
) -> None:
    podman = engine if reads == "api" else PodmanEngine(api=None)
    name, unrelated = f"{cleanup_fleet}-web-r1-1", f"{cleanup_fleet}-unrelated"
    subprocess.run(["podman", "secret", "create", unrelated, "-"], input="x", text=True, check=True)
    try:
        podman.start(
            ContainerSpec(
                name=name,
                image=shared_base,
                command=("sleep", "300"),
                secrets={"APP_TOKEN": "not-for-anyone"},
            )
        )
        assert f"{name}--APP_TOKEN" in secret_store()
        podman.remove(name)
        assert podman.inspect(name) is None
        store = secret_store()
        assert f"{name}--APP_TOKEN" not in store
        assert unrelated in store  # only the container's own
    finally:
        subprocess.run(["podman", "secret", "rm", unrelated], capture_output=True, check=False)


# Stores one secret through a podman that takes a second to start, as a loaded host's.
STORE_ONCE = """
import sys
from corral.engines.podman import PodmanEngine
engine = PodmanEngine(binary=sys.argv[1], api=None)
print("storing", flush=True)
engine._store_secret(sys.argv[2], "v" * 4096)
"""
SLOW_PODMAN = '#!/bin/sh\nsleep 1\nexec podman "$@"\n'


def test_a_podman_writing_the_secret_store_outlives_a_kill_of_corrals_process_group(
    cleanup_fleet: str, tmp_path: Path
) -> None:
    # podman 4.3 empties its store's file, then writes it: one killed in between leaves
    # the host's store unreadable ("unexpected end of JSON input") for every program.
    # So a Ctrl-C or kill -9 of corral's process group must not reach that podman.
    slow = tmp_path / "podman"
    slow.write_text(SLOW_PODMAN)
    slow.chmod(0o755)
    name = f"{cleanup_fleet}-web-r1-1--APP_TOKEN"
    proc = subprocess.Popen(
        [sys.executable, "-c", STORE_ONCE, str(slow), name],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as corral run from a shell
    )
    assert proc.stdout is not None and proc.stdout.readline() == "storing\n"
    time.sleep(0.3)  # the store's podman is on its way
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while name not in secret_store():  # the podman, left to finish in its own session
        assert time.monotonic() < deadline, "the store's podman was killed with corral"
        time.sleep(0.2)
    check = subprocess.run(
        ["podman", "secret", "create", f"{cleanup_fleet}-probe", "-"],
        input="x",
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_collect_leftovers_removes_only_the_secrets_of_missing_containers(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    live, killed = f"{cleanup_fleet}-web-r2-1", f"{cleanup_fleet}-web-r3-1"
    engine.start(
        ContainerSpec(
            name=live, image=shared_base, command=("sleep", "300"), secrets={"APP_TOKEN": "a"}
        )
    )
    # What a start killed between storing its secret and creating its container leaves:
    subprocess.run(
        ["podman", "secret", "create", f"{killed}--APP_TOKEN", "-"],
        input="b",
        text=True,
        check=True,
    )
    try:
        assert engine.collect_leftovers(f"{cleanup_fleet}-web-r") == [f"{killed}--APP_TOKEN"]
        mine = [n for n in secret_store() if n.startswith(cleanup_fleet)]
        assert mine == [f"{live}--APP_TOKEN"]
    finally:
        engine.remove(live)
        subprocess.run(["podman", "secret", "rm", f"{killed}--APP_TOKEN"], capture_output=True)
    assert [n for n in secret_store() if n.startswith(cleanup_fleet)] == []


def test_removing_a_network_never_removes_its_users(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    network, foreign = f"corral-{cleanup_fleet}", f"{cleanup_fleet}-not-corrals"
    engine.ensure_network(network, {"io.corral.fleet": cleanup_fleet})
    subprocess.run(
        [
            "podman",
            "run",
            "-d",
            "--name",
            foreign,
            "--network",
            network,
            shared_base,
            "sleep",
            "300",
        ],
        capture_output=True,
        check=True,
    )
    try:
        with pytest.raises(EngineError):
            engine.remove_network(network)
        info = engine.inspect(foreign)
        assert info is not None and info.state == "running"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", foreign], capture_output=True)
    engine.remove_network(network)  # no user left: now it goes
    gone = subprocess.run(["podman", "network", "exists", network], capture_output=True)
    assert gone.returncode == 1


# -- labels -------------------------------------------------------------------------------

AWKWARD_LABELS = [
    "plain",
    'a "quoted" word',
    "back\\slash\\",
    "$HOME ${HOME} $(id) `id`",
    "it's",
    "#not a comment",
    "é ü 日本",
    '\\"',
    "\\$x",
    " spaces  ",
    "",
    "a=b=c",
    "LABEL x=y",
]


def test_every_label_value_reaches_the_image_as_given_in_one_build_step(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str, tmp_path: Path
) -> None:
    """Labels go into one LABEL step each value quoted (one commit instead of one per
    label); the real buildah must read every value back byte for byte."""
    labels = {f"io.corral.test-{i}": v for i, v in enumerate(AWKWARD_LABELS)}
    labels["io.corral.fleet"] = cleanup_fleet
    (tmp_path / "Containerfile").write_text(f"FROM {shared_base}\n")
    tag = f"localhost/corral/{cleanup_fleet}/labels:1"
    image = engine.build_image(tmp_path, tmp_path / "Containerfile", tag, labels)
    assert {k: v for k, v in image.labels.items() if k in labels} == labels
    steps = subprocess.run(
        ["podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image.id],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert sum("#(nop) LABEL" in step for step in steps.splitlines()) == 1, steps
    # A value with a newline cannot be written into a Containerfile line: the flags.
    multi = engine.build_image(
        tmp_path, tmp_path / "Containerfile", tag, {**labels, "io.corral.test-nl": "a\nb"}
    )
    assert multi.labels["io.corral.test-nl"] == "a\nb"
