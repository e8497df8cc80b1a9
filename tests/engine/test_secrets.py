"""Secrets, for real: the instance gets the value; images, labels, state, audit, output and
logs never see it; replaced and destroyed instances take their copy out of the store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid

import httpx

from corral.spec import load_spec
from tests.engine.helpers import Fleet, fleet_secrets, podman_json


def _ids(*args: str) -> list[str]:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_a_secret_reaches_the_instances_and_nothing_else(fleet: Fleet, shared_base: str) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    env = {"APP_TOKEN": token}
    fleet.write("v1", replicas=2, secrets=("APP_TOKEN",))
    missing = fleet.deploy(check=False)
    assert missing.returncode != 0 and "APP_TOKEN" in missing.stdout + missing.stderr
    said = [missing]
    said.append(fleet.deploy(env=env))
    said.append(fleet.deploy(env=env))  # nothing changed: no new copy of the secret
    fleet.write("v2", replicas=2, secrets=("APP_TOKEN",))
    said.append(fleet.deploy(env=env))  # replaces both instances: their copies leave the store

    answer = httpx.get(fleet.url + "token", timeout=5).json()
    assert answer == {"sha256": hashlib.sha256(token.encode()).hexdigest()}
    status = fleet.status()
    [web] = status["roles"]
    live = sorted(i["name"] for i in web["instances"])
    assert [i["version"] for i in web["instances"]] == [web["version"]] * 2
    assert fleet_secrets(fleet) == [f"{name}--APP_TOKEN" for name in live]

    said += [fleet.corral(*cmd) for cmd in (["history", "--json"], ["audit", "--json"])]
    said.append(fleet.corral("status", "--json"))
    for proc in said:
        assert token not in proc.stdout + proc.stderr
    state = load_spec(fleet.spec).state_path
    for path in state.parent.glob(state.name + "*"):  # the database, its WAL and lock files
        assert token.encode() not in path.read_bytes(), path
    label = f"label=io.corral.fleet={fleet.name}"
    images = podman_json("image", "inspect", *set(_ids("images", "-q", "--filter", label)))
    assert token not in json.dumps(images)
    for name in live:
        [info] = podman_json("container", "inspect", name)
        assert token not in json.dumps(info["Config"]["Labels"])
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        assert token not in logs.stdout + logs.stderr

    fleet.corral("destroy", "--yes")
    assert fleet_secrets(fleet) == []
