"""Ancestry and revocation on real Podman: ``corral images`` sees instances outdated once
their base is refreshed and none after a rebuild and deploy; a revoked image, or a revoked
base, is never deployed or rolled back to; the package lists are read from real images.

The fleet's base is an image of its own name: first the shared bookworm base under a tag
of the test's, then a "refreshed" base made cheaply as an image derived from it (one
label, no RUN step) moved onto that tag, as a refresh moves a base's tag. A full
mmdebstrap run would prove nothing more here and costs 20 s.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from corral.cli.exitcodes import ExitCode
from tests.engine.helpers import APP, Fleet, containers, free_port


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def base_tag(shared_base: str, cleanup_fleet: str) -> Iterator[str]:
    """The shared base under a tag of this test's own; the tag (never the shared image)
    is removed at the end. Bases derived from it carry the fleet's label, so the fleet's
    clean-up removes them."""
    tag = f"localhost/{cleanup_fleet}-base:1"
    _podman("tag", shared_base, tag)
    yield tag
    subprocess.run(["podman", "untag", shared_base, tag], capture_output=True, check=False)


@pytest.fixture
def fleet(tmp_path: Path, cleanup_fleet: str, base_tag: str) -> Iterator[Fleet]:
    made = Fleet(tmp_path / "fleet", cleanup_fleet, free_port())
    made.folder.mkdir()
    _write(made, base_tag)
    yield made
    made.corral("destroy", "--yes", check=False)


def _write(fleet: Fleet, base: str, version: str = "v1", mode: str = "a") -> None:
    """Two replicas of the test app on ``base``, not public (no edge: these tests are
    about images, and stay fast)."""
    (fleet.folder / "app").mkdir(parents=True, exist_ok=True)
    (fleet.folder / "app" / "server.py").write_bytes((APP / "server.py").read_bytes())
    (fleet.folder / "app" / "VERSION").write_text(version + "\n")
    fleet.spec.write_text(
        f"fleet: {fleet.name}\n"
        "roles:\n"
        "  web:\n"
        f"    base: {{image: {base}}}\n"
        "    build: {copy: [{src: app/, dest: /srv/app}]}\n"
        "    run: {command: [python3, /srv/app/server.py], user: app, port: 8000,\n"
        f"          env: {{MODE: {mode}}}}}\n"
        "    health: {http: /healthz, interval: 200ms, retries: 25}\n"
        "    replicas: 2\n"
        "    deploy: {settle: 0s}\n"
    )


def _refresh_base(fleet: Fleet, tag: str, folder: Path) -> str:
    """A newer base under ``tag``: derived from the one it holds, one label added."""
    folder.mkdir()
    (folder / "Containerfile").write_text(
        f"FROM {tag}\nLABEL io.corral.fleet={fleet.name} io.corral.test-refresh=1\n"
    )
    _podman("build", "--quiet", "-t", tag, str(folder))
    return _podman("image", "inspect", "--format", "{{.Id}}", tag).strip()


def _json(fleet: Fleet, *args: str) -> Any:
    return json.loads(fleet.corral(*args, "--json").stdout)


def _running(fleet: Fleet) -> list[str]:
    return sorted(c["Names"][0] for c in containers(fleet.name) if c["State"] == "running")


def test_corral_images_shows_outdated_instances_before_a_base_refresh_and_none_after(
    fleet: Fleet, base_tag: str, shared_base: str, tmp_path: Path
) -> None:
    fleet.deploy()
    before = _json(fleet, "images")
    assert [i["base_status"] for i in before["instances"]] == ["up to date"] * 2
    assert {i["base"] for i in before["instances"]} == {base_tag}
    assert all(i["base_age_s"] >= 0 for i in before["instances"])

    # the package list is read from the real image after its build (dpkg-query inside it)
    python = _podman("run", "--rm", shared_base, "dpkg-query", "-W", "-f", "${Version}", "python3")
    carriers = _json(fleet, "sbom", "--package", "python3")
    assert [c["package_version"] for c in carriers["images"]] == [python]
    assert sorted(i["name"] for i in carriers["instances"]) == _running(fleet)
    bom = fleet.corral("sbom", "web", "--format", "cyclonedx").stdout
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom) is None
    purls = {c["name"]: PackageURL.from_string(c["purl"]) for c in json.loads(bom)["components"]}
    assert (purls["python3"].type, purls["python3"].version) == ("deb", python)

    new_base = _refresh_base(fleet, base_tag, tmp_path / "refresh")
    outdated = _json(fleet, "images")
    assert [i["base_status"] for i in outdated["instances"]] == ["outdated"] * 2
    assert {i["newest_base"]["id"] for i in outdated["instances"]} == {new_base}
    assert "outdated" in fleet.corral("images").stdout

    fleet.deploy()  # rebuilds web on the new base (its id is an input), replaces both
    after = _json(fleet, "images")
    assert [i["base_status"] for i in after["instances"]] == ["up to date"] * 2
    assert {i["image_id"] for i in after["instances"]} != {
        i["image_id"] for i in before["instances"]
    }
    on_new = {i["image_id"] for i in after["images"] if i["base_id"] == new_base}
    assert {i["image_id"] for i in after["instances"]} <= on_new


def test_a_revoked_image_or_base_is_never_deployed_or_rolled_back_to(
    fleet: Fleet, base_tag: str, shared_base: str
) -> None:
    fleet.deploy()
    [first] = _json(fleet, "images")["images"]
    _write(fleet, base_tag, version="v2")
    fleet.deploy()
    running = _running(fleet)
    assert len(running) == 2 and all("-r2-" in name for name in running)

    revoked = _json(fleet, "revoke", first["tag"], "--reason", "CVE-2026-0001: v1 leaks")
    assert revoked["kind"] == "image" and revoked["id"] == first["image_id"]
    refused = fleet.corral("rollback", "--skip-tests", "--reason", "test", check=False)
    assert refused.returncode == ExitCode.REFUSED, refused.stderr
    assert "CVE-2026-0001: v1 leaks" in refused.stderr
    assert _running(fleet) == running  # nothing changed

    base = _json(fleet, "revoke", shared_base[:12], "--reason", "openssl CVE-2026-0002")
    assert base["kind"] == "base" and len(base["images"]) == 2  # v1 and v2 are built on it
    _write(fleet, base_tag, version="v2", mode="b")  # a change that needs new instances
    refused = fleet.corral("deploy", "--skip-tests", "--reason", "test", "--json", check=False)
    assert refused.returncode == ExitCode.REFUSED, refused.stderr
    error = json.loads(refused.stdout)
    assert error["error"] == "revoked" and error["revoked"][0]["reason"] == "openssl CVE-2026-0002"
    assert _running(fleet) == running
    history = _json(fleet, "history")
    assert [r["release"] for r in history["releases"]] == [1, 2]  # no release was started
    actions = [(e["action"], e["outcome"]) for e in _json(fleet, "audit")["audit"]]
    assert ("revoke", "ok") in actions
    assert ("rollback", "refused") in actions and ("deploy", "refused") in actions
