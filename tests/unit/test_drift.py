"""Drift of how an instance runs, judged against what its release asks (pure), and a
drifted instance burned by ``corral reconcile`` with the changed fields as evidence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from corral import app
from corral.deploy.drift import drifted_fields
from corral.engines.fake import FakeEngine
from corral.engines.podman import run_facts_of
from corral.engines.values import ContainerSpec, Mount, PortMapping, RunFacts
from tests.unit.test_cli import run
from tests.unit.test_reconcile import _deployed, _workers, fleet

__all__ = ["fleet"]  # the fixture, shared

EXPECTED = ContainerSpec(
    name="shop-web-r1-1",
    image="be5671c3c3d4425fb7345605fd0122680de0a3c87a37019562634a05c9d8beab",
    command=("python3", "/srv/web/server.py"),
    user="app",
    env={"GREETING": "hello"},
    mounts=(Mount("shop-web-data", "/var/lib/web"),),
    cap_add=("NET_BIND_SERVICE",),
)
# What podman 4.3 reports for the instance EXPECTED starts (cut down from a real one).
INSPECTED = {
    "Image": EXPECTED.image,
    "Config": {
        "Cmd": ["python3", "/srv/web/server.py"],
        "Env": [
            "PATH=/usr/bin:/bin",
            "TERM=xterm",
            "container=podman",
            "LANG=C.UTF-8",
            "GREETING=hello",
            "HOME=/nonexistent",
            "HOSTNAME=01a93b1ad933",
        ],
        "User": "app",
    },
    "HostConfig": {"CapAdd": ["CAP_NET_BIND_SERVICE"], "PortBindings": {}},
    "BoundingCaps": ["CAP_NET_BIND_SERVICE"],
    "Mounts": [
        {
            "Type": "volume",
            "Name": "shop-web-data",
            "Source": "/var/lib/containers/storage/volumes/shop-web-data/_data",
            "Destination": "/var/lib/web",
            "RW": True,
        },
        {"Type": "bind", "Source": "/x/secret", "Destination": "/run/secrets/TOKEN", "RW": False},
    ],
}


def _facts(**changes: object) -> RunFacts:
    facts = run_facts_of(INSPECTED, frozenset({"LANG"}))
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def test_an_instance_as_its_release_asks_has_no_drift() -> None:
    assert drifted_fields(EXPECTED, _facts()) == ()
    # A role with secrets: the launcher runs first, the command follows it.
    launched = _facts(command=("/bin/sh", "-c", "launch", "corral", *EXPECTED.command))
    assert drifted_fields(EXPECTED, launched) == ()


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"image_id": "0123456789abcdef"}, "image 0123456789ab instead of be5671c3c3d4"),
        ({"command": ("sh", "-c", "nc -l 4444")}, "command"),
        (
            {"env": {"GREETING": "pwned", "LD_PRELOAD": "/tmp/x.so", "PATH": "/bin"}},
            "environment: changed GREETING; added LD_PRELOAD",
        ),
        ({"env": {}}, "environment: missing GREETING"),
        ({"mounts": (Mount("/", "/host"),)}, "mounts: +/host -/var/lib/web"),
        (
            {"mounts": (Mount("shop-web-data", "/var/lib/web", read_only=True),)},
            "mounts: +/var/lib/web -/var/lib/web",
        ),
        (
            {"capabilities": frozenset({"NET_BIND_SERVICE", "SYS_PTRACE"})},
            "capabilities: +SYS_PTRACE",
        ),
        ({"user": "root"}, "user root instead of app"),
        ({"ports": (PortMapping(2222, 22, "0.0.0.0"),)}, "ports: 2222->22"),
    ],
)
def test_each_changed_field_is_named(changes: dict[str, object], said: str) -> None:
    assert drifted_fields(EXPECTED, _facts(**changes)) == (said,)


def test_values_never_show_in_the_evidence() -> None:
    found = drifted_fields(EXPECTED, _facts(env={"GREETING": "s3cr3t", "TOKEN": "t0ken"}))
    assert "s3cr3t" not in str(found) and "t0ken" not in str(found)


def test_reconcile_burns_an_instance_whose_run_facts_drifted(
    fleet: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    before = _deployed(fleet, capsys)
    started = engine.specs[before[0]]
    engine.specs[before[0]] = dataclasses.replace(
        started, user="root", env={**started.env, "EXTRA": "1"}, cap_add=("SYS_ADMIN",)
    )
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    result = json.loads(out)
    assert code == 0 and [b["instance"] for b in result["burns"]] == [before[0]], result
    assert before[0] not in _workers(engine) and len(_workers(engine)) == 2
    [burn] = [e for e in app.audit(spec) if e.action == "burn"]
    reason = str(burn.details["reason"])
    assert "environment: added EXTRA" in reason and "user root instead of app" in reason
    assert "capabilities: +SYS_ADMIN" in reason, reason
    code, out, _ = run(capsys, "--json", "-f", str(spec), "reconcile")
    assert json.loads(out)["status"] == "unchanged"
