"""The edge supervised, on the real engine: a crashed HAProxy is started again by
Podman's restart policy with no corral running, serving the servers it had; a
``podman kill``ed one (a user's stop for podman 4.3: no restart) makes ``corral status``
exit 1 and is brought back by ``corral watch`` within 2 s."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from tests.engine.helpers import CORRAL, Fleet, podman_json


def _until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


def _serves(fleet: Fleet) -> bool:
    try:
        return httpx.get(fleet.url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _watching(fleet: Fleet, *args: str) -> Iterator[subprocess.Popen[str]]:
    watch = subprocess.Popen(
        [*CORRAL, "-f", str(fleet.spec), "watch", "--interval", "1", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield watch
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        watch.wait(timeout=30)


def test_a_dead_edge_is_back_within_2s_by_the_engine_and_by_the_watcher(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.write("v1", replicas=2)
    fleet.deploy()
    edge = f"{fleet.name}-edge"
    [inspected] = podman_json("container", "inspect", edge)
    assert inspected["HostConfig"]["RestartPolicy"]["Name"] == "always"

    # A crash (the process dies, no one asked): podman's restart policy, no corral running.
    os.kill(inspected["State"]["Pid"], signal.SIGKILL)
    by_engine = _until(lambda: _serves(fleet), 10)
    assert by_engine < 2.0, f"the engine brought the edge back in {by_engine:.2f}s"

    # podman kill counts as a user's stop in podman 4.3: the edge stays down, and says so.
    subprocess.run(["podman", "kill", edge], check=True, capture_output=True)
    time.sleep(1.5)
    assert not _serves(fleet)
    down = fleet.corral("status", "--json", check=False)
    assert down.returncode == 1 and "the edge is exited" in down.stdout, down.stdout

    with _watching(fleet) as watch:
        first = _until(lambda: _serves(fleet), 30)  # its first pass brings it back
        time.sleep(2)  # the event stream is up
        subprocess.run(["podman", "kill", edge], check=True, capture_output=True)
        by_watcher = _until(lambda: _serves(fleet), 30)
        assert fleet.corral("status", "--json", check=False).returncode == 0
    print(f"engine: {by_engine:.2f}s; watcher: first pass {first:.2f}s, kill {by_watcher:.2f}s")
    assert by_watcher < 2.0, f"the watcher brought the edge back in {by_watcher:.2f}s: {watch}"
