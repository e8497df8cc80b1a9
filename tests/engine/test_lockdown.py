"""corral's lockdown checks against real Podman containers that break one rule each.

The spec refuses to describe such instances, so the test starts them with podman itself:
each must fail exactly the check named for its flaw, and a container that keeps every rule
must pass them all (so a check that always fails would be caught too).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from corral.engines.podman import PodmanEngine
from corral.testing.lockdown import lockdown_checks
from tests.unit.builders import role_release

LOCKED = ("--read-only", "--user", "65534:65534", "--cap-drop", "all")
RR = role_release("web")  # no capabilities named, no port

Start = Callable[..., str]


@pytest.fixture
def start(cleanup_fleet: str, shared_base: str) -> Iterator[Start]:
    """Starts a container on the shared base with the given podman options, sleeping
    unless it is given another command."""

    def run(*options: str, command: tuple[str, ...] = ("sleep", "300")) -> str:
        name = f"{cleanup_fleet}-lock-{uuid.uuid4().hex[:6]}"
        label = f"io.corral.fleet={cleanup_fleet}"
        argv = ["podman", "run", "-d", "--name", name, "--label", label, *options]
        subprocess.run([*argv, shared_base, *command], check=True, capture_output=True)
        return name

    yield run  # the fleet's label: cleanup_fleet removes every container started here


def failed(engine: PodmanEngine, name: str) -> dict[str, str]:
    """The lockdown checks that failed, by the name without the instance, with why."""
    checks = lockdown_checks(engine, name, RR)
    assert len(checks) == 6, checks
    return {c.name.split(" (")[0]: c.message for c in checks if c.outcome != "passed"}


def test_a_locked_down_container_passes_every_check(engine: PodmanEngine, start: Start) -> None:
    assert failed(engine, start(*LOCKED)) == {}


def test_an_added_capability_fails_no_capabilities(engine: PodmanEngine, start: Start) -> None:
    name = start(*LOCKED, "--cap-add", "NET_RAW")
    assert failed(engine, name) == {
        "lockdown: no capabilities": "has capabilities the role does not name: CAP_NET_RAW"
    }


def test_a_writable_root_fails_read_only_root(engine: PodmanEngine, start: Start) -> None:
    name = start("--user", "65534:65534", "--cap-drop", "all")
    assert failed(engine, name) == {"lockdown: read-only root": "the root filesystem is writable"}


@pytest.mark.parametrize("user", [(), ("--user", "0"), ("--user", "root")])
def test_a_root_user_fails_non_root_user(
    engine: PodmanEngine, start: Start, user: tuple[str, ...]
) -> None:
    name = start("--read-only", "--cap-drop", "all", *user)
    problems = failed(engine, name)
    assert list(problems) == ["lockdown: non-root user"], problems
    assert problems["lockdown: non-root user"].startswith("runs as ")


def test_a_process_named_sshd_fails_no_ssh_server(engine: PodmanEngine, start: Start) -> None:
    # /bin/sleep copied to a tmpfs as sshd: the name is what the check sees in /proc.
    copy = "cp /bin/sleep /tmp/sshd && exec /tmp/sshd 300"
    name = start(*LOCKED, "--tmpfs", "/tmp:rw,exec", command=("sh", "-c", copy))
    assert _settled(engine, name) == {"lockdown: no SSH server": "an SSH server runs: sshd"}


def test_a_listener_on_an_undeclared_port_fails_only_declared_ports(
    engine: PodmanEngine, start: Start
) -> None:
    listen = "my $s = IO::Socket::INET->new(LocalPort => 2222, Listen => 1) or die; sleep 300"
    name = start(*LOCKED, command=("perl", "-MIO::Socket::INET", "-e", listen))
    assert _settled(engine, name) == {
        "lockdown: only declared ports listen": "undeclared listening port(s): [2222]"
    }


def _settled(engine: PodmanEngine, name: str) -> dict[str, str]:
    """The failed checks once the container's command has done its part (it has a
    moment to copy or bind after podman run returns)."""
    for _ in range(50):
        problems = failed(engine, name)
        if problems:
            return problems
        time.sleep(0.1)
    return failed(engine, name)
