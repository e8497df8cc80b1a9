"""The bake, for real: mmdebstrap base, podman build, labels, caching, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from corral import app
from corral.build.bake import BakeTarget, bake_target, resolve_base
from corral.engines.podman import PodmanEngine
from corral.errors import BuildError, GateError
from corral.progress import NullProgress
from corral.spec import load_spec
from corral.state import State
from tests.engine.conftest import write_fleet

CORRAL = [sys.executable, "-m", "corral"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def inspect_labels(ref: str) -> dict[str, str]:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "json", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out)[0]["Labels"])


def test_build_labels_version_and_cache(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    spec_path = write_fleet(tmp_path, cleanup_fleet)
    [first] = app.build(spec_path)
    assert first.status == "built"
    number, content = first.version.split("-")
    assert number == "1" and len(content) == 12
    labels = inspect_labels(first.tag)
    assert labels["io.corral.version"] == first.version
    assert labels["io.corral.fleet"] == cleanup_fleet
    assert len(labels["io.corral.spec-hash"]) == 64
    assert "io.corral.git-commit" in labels and labels["io.corral.git-dirty"] in ("true", "false")
    packages = dict(p.split("=", 1) for p in labels["io.corral.packages"].split(","))
    assert "python3" in packages and "base-files" in packages

    [again] = app.build(spec_path)
    assert (again.status, again.version, again.image_id) == (
        "up-to-date",
        first.version,
        first.image_id,
    )


def test_one_file_change_rebuilds_role_layer_only(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    spec_path = write_fleet(tmp_path, cleanup_fleet)
    [first] = app.build(spec_path)
    (tmp_path / "app" / "server.py").write_text("print('v2')\n")
    [second] = app.build(spec_path)
    assert second.status == "built"
    assert second.version.startswith("2-") and second.version != first.version
    parents = {inspect_labels(r.tag).get("io.corral.content-hash") for r in (first, second)}
    assert len(parents) == 2
    # The base was reused: still exactly one image carries the shared base recipe's tag.
    assert shared_base == app_base_id(spec_path)


def app_base_id(spec_path: Path) -> str:
    spec = load_spec(spec_path)
    target = BakeTarget(spec.fleet.fleet, "web", spec.fleet.roles["web"], spec.root)
    return resolve_base(target, PodmanEngine(), NullProgress()).id


def test_failed_step_registers_nothing(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    spec_path = write_fleet(tmp_path, cleanup_fleet, extra_run="echo about to fail; exit 3")
    with pytest.raises(BuildError) as caught:
        app.build(spec_path)
    assert any("about to fail" in line for line in caught.value.log)
    assert app.images(spec_path) == []
    spec = load_spec(spec_path)
    with State.open(spec.state_path) as state:
        [build] = state.builds(cleanup_fleet)
        assert build.status == "failed"
        assert state.audit_log(cleanup_fleet)[-1].outcome == "failed"
    leftovers = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"corral/{cleanup_fleet}/" not in leftovers


def test_image_with_ssh_server_is_refused(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    install = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq --no-install-recommends openssh-server >/dev/null"
    )
    spec_path = allow_network(write_fleet(tmp_path, cleanup_fleet, extra_run=install))
    with pytest.raises(GateError, match="SSH server"):
        app.build(spec_path)
    assert app.images(spec_path) == []


def test_an_ssh_server_outside_any_package_is_refused_unless_allowed(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    spec_path = write_fleet(tmp_path, cleanup_fleet, extra_run="cp /bin/true /usr/local/sbin/sshd")
    with pytest.raises(GateError, match="/usr/local/sbin/sshd"):
        app.build(spec_path)
    assert app.images(spec_path) == []
    with spec_path.open("a") as spec:
        spec.write("    lockdown: {allow_ssh: true}\n")
    [result] = app.build(spec_path)
    assert result.status == "built"


def test_unreachable_mirror_is_a_clear_error(
    tmp_path: Path, cleanup_fleet: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    spec_path = write_fleet(tmp_path, cleanup_fleet)
    scratch = tmp_path / "tmp"  # corral's own: other processes' files in /tmp do not count
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(BuildError, match="cannot reach the Debian mirror"):
        app.build(spec_path)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("roles", [1, 2])
def test_ctrl_c_leaves_state_unchanged(
    tmp_path: Path, cleanup_fleet: str, shared_base: str, roles: int
) -> None:
    """With two roles their builds run side by side, in threads Ctrl-C does not reach:
    each must still record "interrupted"."""
    spec_path = write_fleet(tmp_path, cleanup_fleet, extra_run="sleep 60")
    if roles == 2:
        text = spec_path.read_text()
        web = text[text.index("  web:\n") :]
        spec_path.write_text(text + web.replace("  web:\n", "  api:\n", 1))
    scratch = tmp_path / "tmp"  # corral's own: other processes' files in /tmp do not count
    scratch.mkdir()
    proc = subprocess.Popen(
        [*CORRAL, "-f", str(spec_path), "build"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    _wait_for_running_build(spec_path)
    time.sleep(3)  # inside the podman build's sleep step by now
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert app.images(spec_path) == []
    with State.open(load_spec(spec_path).state_path) as state:
        assert [b.status for b in state.builds(cleanup_fleet)] == ["interrupted"] * roles
    # corral's folders are gone (podman's own, "buildah...", are podman's business)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("corral-")] == []


def _wait_for_running_build(spec_path: Path) -> None:
    deadline = time.monotonic() + 60
    spec = load_spec(spec_path)
    while time.monotonic() < deadline:
        if spec.state_path.exists():
            with State.open(spec.state_path) as state:
                if any(b.status == "running" for b in state.builds(spec.fleet.fleet)):
                    return
        time.sleep(0.2)
    pytest.fail("the build never started")


def test_cli_build_json_and_sbom(tmp_path: Path, cleanup_fleet: str, shared_base: str) -> None:
    spec_path = write_fleet(tmp_path, cleanup_fleet)
    out = subprocess.run(
        [*CORRAL, "-f", str(spec_path), "--json", "build"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [result] = json.loads(out)["builds"]
    assert result["status"] == "built" and result["role"] == "web"
    sbom = subprocess.run(
        [*CORRAL, "-f", str(spec_path), "sbom", "web", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [name for name, _ in json.loads(sbom)["packages"]]
    assert "python3" in names
    audit = subprocess.run(
        [*CORRAL, "-f", str(spec_path), "audit", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [entry] = json.loads(audit)["audit"]
    assert (entry["action"], entry["target"], entry["outcome"]) == ("build", "web", "ok")


def allow_network(spec_path: Path) -> Path:
    """The spec of ``write_fleet`` with ``build.network: true`` (apt-get needs the mirror)."""
    text = spec_path.read_text()
    spec_path.write_text(text.replace("    build:\n", "    build:\n      network: true\n", 1))
    return spec_path


def host_address() -> str:
    """An IPv4 address of this machine that is not loopback: a bridge could reach it."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    addresses = [line.split()[3].split("/")[0] for line in out.splitlines()]
    assert addresses, "this machine has no global IPv4 address to test against"
    return addresses[0]


@contextmanager
def listener(address: str) -> Iterator[socket.socket]:
    """A listening TCP socket on ``address``: the kernel completes connections to it."""
    with socket.create_server((address, 0), backlog=8) as server:
        server.setblocking(False)
        yield server


def connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_a_build_step_has_no_network_unless_the_role_asks(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    address = host_address()
    with listener(address) as server:
        port = server.getsockname()[1]
        spec_path = write_fleet(tmp_path, cleanup_fleet, extra_run="python3 /srv/app/reach.py")
        (tmp_path / "app" / "reach.py").write_text(
            "import socket\n"
            f"socket.create_connection(({address!r}, {port}), timeout=5).close()\n"
            "print('reached the host')\n"
        )
        with pytest.raises(BuildError) as caught:
            app.build(spec_path)
        log = "\n".join(caught.value.log)
        assert "Network is unreachable" in log and "reached the host" not in log
        assert connections(server) == 0

        [built] = app.build(allow_network(spec_path))
        assert built.status == "built"
        assert connections(server) == 1


def test_spec_values_reach_the_image_as_data(
    tmp_path: Path, cleanup_fleet: str, shared_base: str, engine: PodmanEngine
) -> None:
    # A space, a $, a quote and a trailing backslash: each changed what the builder read
    # when values were written into Containerfile lines. The spec may refuse some of them;
    # the role is made here without its checks, as a value that slipped past them.
    odd = "/srv/a b/$HOME/it's\\"
    spec = load_spec(write_fleet(tmp_path, cleanup_fleet))
    role = spec.fleet.roles["web"]
    step = role.build.copy_[0].model_copy(update={"dest": odd})
    role = role.model_copy(
        update={
            "build": role.build.model_copy(update={"copy_": (step,)}),
            "run": role.run.model_copy(update={"workdir": odd}),
            "volumes": {"data": odd + "/data"},
        }
    )
    with State.open(spec.state_path) as state:
        target = BakeTarget(cleanup_fleet, "web", role, spec.root)
        built = bake_target(target, engine, state, NullProgress())
    look = (
        "import os, pwd, sys; p = sys.argv[1]; print(os.getcwd() == p);"
        "print(open(p + '/server.py').read().strip());"
        "owner = pwd.getpwuid(os.stat(p + '/data').st_uid).pw_name;"
        "print(owner, pwd.getpwuid(os.getuid()).pw_name)"
    )
    out = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", built.image_id, "python3", "-c", look, odd],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["True", "print('v1')", "app app"]


def test_the_examples_build_without_network(
    tmp_path: Path, cleanup_fleet: str, shared_base: str
) -> None:
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder)
    spec_path = folder / "corral.yaml"
    spec_path.write_text(spec_path.read_text().replace("fleet: demo", f"fleet: {cleanup_fleet}"))
    results = app.build(spec_path)
    assert sorted((r.role, r.status) for r in results) == [("api", "built"), ("web", "built")]
