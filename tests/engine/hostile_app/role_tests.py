"""The hostile role's own tests: run by ``corral test`` on corral's host, in its sandbox.

Each tries what the role's scripts try (``evil.py``), from where a role's test files run:
delete the fleet's state, backup repository and password file, reach Podman, and have the
exec broker run a command outside the role's instances. Every one must be blocked: the
test that proves it passes only if its attack failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evil

from corral.testing import broker


def test_the_tests_cannot_delete_the_state_the_backups_or_the_password() -> None:
    outcome = evil.delete_paths()
    assert set(outcome.values()) == {"absent"}, outcome


def test_the_tests_cannot_reach_podman() -> None:
    for path in ("/run/podman/podman.sock", "/var/lib/containers", "/var/run/docker.sock"):
        assert not os.path.exists(path), path
    with pytest.raises(OSError):  # nor make Podman a storage of its own
        os.makedirs("/var/lib/containers/storage")


def test_the_broker_runs_nothing_outside_the_roles_instances(corral_env: dict) -> None:
    socket = Path(corral_env["exec_socket"])
    mine = corral_env["instances"][0]["name"]
    assert broker.request(socket, mine, "echo inside", 30)["stdout"] == "inside\n"
    for other in (f"{corral_env['fleet']}-edge", "host", mine + "-x"):
        answer = broker.request(socket, other, "echo escaped", 30)
        assert "not an instance of this test environment" in answer.get("error", ""), answer


def test_the_instance_is_reached_through_host(host) -> None:
    assert host.file("/srv/evil/evil.py").exists
    assert json.loads(host.check_output("cat /srv/evil/targets.json"))
