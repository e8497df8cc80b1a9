"""Secrets, for real: the instance gets the value; images, labels, state, audit, output and
logs never see it; replaced and destroyed instances take their copy out of the store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from corral.deploy.secrets import SecretKey
from corral.engines.base import ContainerSpec
from corral.engines.podman import PodmanEngine
from corral.errors import EngineError
from corral.spec import load_spec
from tests.engine.helpers import Fleet, fleet_secrets, podman_json, secret_store


def _ids(*args: str) -> list[str]:
    """The ids a podman listing prints; tried again when another test's removal under it
    ended it ("image not known"), as ``podman_json`` does."""
    for attempt in range(5):
        proc = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
        if proc.returncode == 0 or attempt == 4:
            break
        time.sleep(0.5)
    proc.check_returncode()
    return proc.stdout.split()


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
    shown = json.dumps(podman_json("ps", "--all", "--filter", label))
    assert token not in shown and fleet.name in shown
    for name in live:
        [info] = podman_json("container", "inspect", name)
        assert token not in json.dumps(info)  # every field: Config.Env, Labels, Args...
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        assert token not in logs.stdout + logs.stderr

    fleet.corral("destroy", "--yes")
    assert fleet_secrets(fleet) == []


# Values a shell or podman could mangle: trailing newlines, quotes, expansions, a value
# ending in the launcher's own sentinel, unicode, bytes that are not UTF-8 (as Python holds
# them in os.environ) and an empty value.
ODD_VALUES = {
    "PLAIN": f"plain-{uuid.uuid4().hex}",
    "NEWLINES": f"\n two\nlines {uuid.uuid4().hex}\n\n",
    "SHELLISH": f"$(id) `id` $HOME 'q' \"q\" \\ ; * {uuid.uuid4().hex} x",
    "UNICODE": f"héllo wörld ✓ {uuid.uuid4().hex}",
    "BYTES": f"\udcff\udcfe-{uuid.uuid4().hex}",
    "EMPTY": "",
}


def _digest(value: str) -> str:
    return hashlib.sha256(os.fsencode(value)).hexdigest()


def test_podman_delivers_secrets_as_env_without_showing_them(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    name = f"{cleanup_fleet}-web-r1-1"
    spec = ContainerSpec(
        name=name,
        image=shared_base,
        command=("python3", "-c", "import time; time.sleep(300)"),
        user="nobody",
        labels={"io.corral.fleet": cleanup_fleet},
        env={"VISIBLE": "yes"},
        secrets=ODD_VALUES,
    )
    try:
        engine.start(spec)
        # The program has each value byte for byte, and the plain env too.
        pid1_env = engine.exec_in(name, ["python3", "-c", _launched_env_digests()]).checked()
        digests = json.loads(pid1_env)
        for variable, value in ODD_VALUES.items():
            assert digests[variable] == _digest(value), variable
        assert digests["VISIBLE"] == _digest("yes")
        # Files only the instance's user (nobody, 65534) can read; root owns the folder.
        stat = engine.exec_in(
            name, ["stat", "-c", "%n %a %u", "/run/secrets/PLAIN", "/run/secrets"]
        ).checked()
        assert stat.split("\n")[:2] == ["/run/secrets/PLAIN 400 65534", "/run/secrets 755 0"]
        # Nothing podman shows about the container or its image holds a value.
        shown = [
            json.dumps(podman_json("container", "inspect", name)),
            json.dumps(podman_json("ps", "--all", "--filter", f"name={name}")),
            json.dumps(podman_json("image", "inspect", shared_base)),
            subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout,
        ]
        for variable, value in ODD_VALUES.items():
            if value.strip():
                needle = value.strip().encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                for text in shown:
                    assert needle not in text and json.dumps(needle)[1:-1] not in text, variable
    finally:
        engine.remove(name)


def test_a_refused_secret_leaves_none_in_the_store(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    name = f"{cleanup_fleet}-web-r1-1"
    too_big = "x" * 600_000  # podman stores less than 512,000 bytes
    spec = ContainerSpec(
        name=name, image=shared_base, command=("true",), secrets={"A": "fine", "B": too_big}
    )
    try:
        with pytest.raises(EngineError, match="secret create failed"):
            engine.start(spec)
        assert [n for n in secret_store() if n.startswith(name)] == []
    finally:
        engine.remove(name)


def _launched_env_digests() -> str:
    """Python reading the environment of the launched program (PID 1's child: the command)."""
    return (
        "import glob, hashlib, json\n"
        "for path in glob.glob('/proc/[0-9]*/cmdline'):\n"
        "    if open(path, 'rb').read() == b'python3\\0-c\\0import time; time.sleep(300)\\0':\n"
        "        raw = open(path.replace('cmdline', 'environ'), 'rb').read()\n"
        "        pairs = [p.split(b'=', 1) for p in raw.split(b'\\0') if b'=' in p]\n"
        "        print(json.dumps({k.decode(): hashlib.sha256(v).hexdigest() for k, v in pairs}))\n"
        "        break\n"
    )


def test_an_image_without_a_shell_cannot_take_secrets(
    engine: PodmanEngine, cleanup_fleet: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("app:x:1000:1000::/:/nonexistent\n")
    tag = f"localhost/{cleanup_fleet}-noshell:1"
    image = engine.import_rootfs(
        _tar(root, tmp_path / "root.tar"), tag, {"io.corral.fleet": cleanup_fleet}
    )
    name = f"{cleanup_fleet}-web-r1-1"
    spec = ContainerSpec(
        name=name, image=image.id, command=("/app",), user="app", secrets={"K": "v"}
    )
    try:
        with pytest.raises(EngineError, match="no /bin/sh"):
            engine.start(spec)
        assert not [n for n in secret_store() if n.startswith(name)]
    finally:
        engine.remove(name)
        engine.remove_image(tag)


def _tar(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        tar.add(folder, arcname=".")
    return target


TOKEN_TEST = """
import hashlib
import os

import httpx


def test_the_tests_have_the_instances_value(instance_url):
    token = os.environ["APP_TOKEN"]
    answer = httpx.get(instance_url + "token", timeout=5).json()
    assert answer == {{"sha256": hashlib.sha256(token.encode()).hexdigest()}}
    assert (token == {live!r}) is {want_live}
    assert "OTHER_SECRET" not in os.environ
"""


def test_corral_test_uses_test_values_unless_the_spec_asks_for_live_ones(
    fleet: Fleet, shared_base: str
) -> None:
    live = f"live-{uuid.uuid4().hex}"
    exported = {"APP_TOKEN": live, "OTHER_SECRET": live}
    fleet.write("v1", replicas=1, secrets=("APP_TOKEN",), extra="    test_secrets: [APP_TOKEN]\n")
    tests = fleet.folder / "tests" / "test_token.py"
    tests.write_text(TOKEN_TEST.format(live=live, want_live=False))
    said = [fleet.corral("test", "--json", env=exported)]  # exported, yet not used
    assert json.loads(said[0].stdout)["results"][0]["outcome"] == "passed"
    said.append(fleet.corral("test", "--again"))  # nothing exported: not needed
    text = fleet.spec.read_text().replace(
        "roles:\n", "live_secrets_in_tests: [APP_TOKEN]\nroles:\n"
    )
    fleet.spec.write_text(text)
    refused = fleet.corral("test", "--again", check=False)
    assert refused.returncode == 5 and "APP_TOKEN" in refused.stdout + refused.stderr
    tests.write_text(TOKEN_TEST.format(live=live, want_live=True))
    said.append(fleet.corral("test", "--again", "--json", env=exported))
    assert json.loads(said[-1].stdout)["results"][0]["outcome"] == "passed"
    for proc in said:
        assert live not in proc.stdout + proc.stderr


STATIC_ROLE = """\
  static:
    base: {debian: bookworm, packages: [python3]}
    run: {command: [python3, -c, "import signal, time; signal.signal(15, lambda *a: exit(0));
      time.sleep(600)"], user: app, env: {MODE: %s}}
"""


def _instances(fleet: Fleet, role: str) -> list[str]:
    [found] = [r for r in fleet.status()["roles"] if r["role"] == role]
    return sorted(i["name"] for i in found["instances"] if i["state"] == "running")


def _token_sha(fleet: Fleet) -> str:
    return str(httpx.get(fleet.url + "token", timeout=5).json()["sha256"])


def test_a_rotated_secret_replaces_the_instances_and_is_never_shown(
    fleet: Fleet, shared_base: str
) -> None:
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    assert "APP_TOKEN" not in os.environ  # the partial deploy below runs without it
    fleet.write("v1", replicas=2, secrets=("APP_TOKEN",), extra=STATIC_ROLE % "a")
    said = [fleet.deploy(env={"APP_TOKEN": old})]
    assert _token_sha(fleet) == hashlib.sha256(old.encode()).hexdigest()
    first, static = _instances(fleet, "web"), _instances(fleet, "static")
    said.append(fleet.corral("plan", env={"APP_TOKEN": old}))  # exit 0: nothing to change

    rotated = {"APP_TOKEN": new}
    said.append(fleet.corral("plan", check=False, env=rotated))
    assert said[-1].returncode == 3, said[-1].stdout + said[-1].stderr  # changes pending
    for name in first:
        assert f"replace {name}: secret APP_TOKEN changed" in said[-1].stdout
    assert "static (rolling" in said[-1].stdout and "up to date" in said[-1].stdout
    said.append(fleet.corral("--json", "plan", check=False, env=rotated))
    [web_plan] = [r for r in json.loads(said[-1].stdout)["plan"]["roles"] if r["role"] == "web"]
    assert {c["reason"] for c in web_plan["stop"]} == {"secret APP_TOKEN changed"}

    said.append(fleet.deploy(env=rotated))
    second = _instances(fleet, "web")
    assert not set(second) & set(first) and _instances(fleet, "static") == static
    assert _token_sha(fleet) == hashlib.sha256(new.encode()).hexdigest()  # the new value
    assert fleet_secrets(fleet) == [f"{name}--APP_TOKEN" for name in second]
    said.append(fleet.corral("plan", env=rotated))  # exit 0: it is done

    # A role without secrets deploys with the other role's secret unset.
    fleet.write("v1", replicas=2, secrets=("APP_TOKEN",), extra=STATIC_ROLE % "b")
    said.append(fleet.deploy("static"))
    assert _instances(fleet, "web") == second and _instances(fleet, "static") != static
    said += [fleet.corral(*cmd) for cmd in (["history", "--json"], ["audit", "--json"])]
    said += [fleet.corral("history"), fleet.corral("status", "--json")]
    assert "web: secret APP_TOKEN changed" in said[-2].stdout

    state = load_spec(fleet.spec).state_path
    key = bytes.fromhex((state.parent / f"{fleet.name}.secret-key").read_text())
    hashes = [SecretKey(key).digest("APP_TOKEN", value) for value in (old, new)]
    stored = b"".join(p.read_bytes() for p in state.parent.glob(state.name + "*"))
    assert hashes[1].encode() in stored  # the keyed hash is what state keeps...
    assert old.encode() not in stored and new.encode() not in stored  # ...never a value
    needles = [old, new, *hashes]
    for needle in needles:
        for proc in said:
            assert needle not in proc.stdout + proc.stderr
    label = f"label=io.corral.fleet={fleet.name}"
    shown = [json.dumps(podman_json("ps", "--all", "--filter", label))]
    for name in second:
        shown.append(json.dumps(podman_json("container", "inspect", name)))
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        shown.append(logs.stdout + logs.stderr)
    for needle in needles:
        assert not [text for text in shown if needle in text]
