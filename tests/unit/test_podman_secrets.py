"""How the Podman engine hands an instance its secrets: pure parts (the engine test proves
the real thing in tests/engine/test_secrets.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from corral.engines.base import ContainerSpec
from corral.engines.podman import (
    LAUNCHER,
    SecretLaunch,
    has_file,
    resolve_inside,
    resolve_user,
    run_args,
)
from corral.errors import EngineError

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:999:998::/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:998:\n"


def test_a_user_is_found_by_name_or_number() -> None:
    assert resolve_user("app", PASSWD, GROUP) == (999, 998)
    assert resolve_user("999", PASSWD, GROUP) == (999, 998)
    assert resolve_user("app:staff", PASSWD, GROUP) == (999, 50)
    assert resolve_user("1234", PASSWD, GROUP) == (1234, 1234)
    assert resolve_user("", PASSWD, GROUP) == (0, 0)


def test_an_unknown_user_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="not in the image's /etc/passwd"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(EngineError, match="/etc/group"):
        resolve_user("app:wheel", PASSWD, GROUP)


def test_symlinks_are_followed_inside_the_image(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "dash").write_text("")
    (tmp_path / "usr" / "bin" / "sh").symlink_to("dash")
    (tmp_path / "bin").symlink_to("/usr/bin")  # absolute: relative to the image's root
    assert has_file(tmp_path, "bin/sh")
    (tmp_path / "usr" / "bin" / "dash").unlink()
    assert not has_file(tmp_path, "bin/sh")
    (tmp_path / "usr" / "bin" / "loop").symlink_to("loop")
    assert not has_file(tmp_path, "usr/bin/loop")


def test_an_images_symlink_never_leads_to_a_host_file(tmp_path: Path) -> None:
    host_file = tmp_path / "host-passwd"
    host_file.write_text("app:x:0:0::/:/bin/sh\n")
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to(host_file)  # absolute: inside the image, not here
    assert resolve_inside(root, "etc/passwd") is None
    (root / "etc" / "group").symlink_to("../../host-passwd")  # `..` stops at the image's root
    assert resolve_inside(root, "etc/group") is None
    (root / "host-passwd").write_text("the image's own\n")
    assert resolve_inside(root, "etc/group") == root / "host-passwd"


def test_with_secrets_the_launcher_runs_the_entrypoint_and_command() -> None:
    spec = ContainerSpec(name="f-web-r1-1", image="img", command=("serve", "--port", "80"))
    launch = SecretLaunch(999, 998, ("/entry",))
    args = run_args(spec, ["--secret", "f-web-r1-1--K,type=mount"], launch)
    assert args[-5:] == ["img", "/entry", "serve", "--port", "80"]
    assert args[args.index("--entrypoint") + 1] == json.dumps(["/bin/sh", "-c", LAUNCHER, "corral"])
    assert "--tmpfs=/run/secrets:rw,nosuid,nodev,noexec,size=4m,mode=0755" in args
    assert run_args(spec)[-4:] == ["img", "serve", "--port", "80"]
    assert "--entrypoint" not in run_args(spec)


@pytest.mark.parametrize(
    "value",
    ["plain", "two\nlines\n\n", "ends in x", "$(id) `id` 'q' \"q\" \\ *", "é ✓", "-n", "\n"],
)
def test_the_launcher_hands_over_each_value_byte_for_byte(tmp_path: Path, value: str) -> None:
    secrets = tmp_path / "run" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "DB_PASSWORD").write_bytes(value.encode())
    (secrets / "not-a-name").write_text("ignored")
    script = LAUNCHER.replace("/run/secrets", str(secrets))
    out = subprocess.run(
        [
            "/bin/sh",
            "-c",
            script,
            "corral",
            "python3",
            "-c",
            "import os, sys; sys.stdout.buffer.write(os.environb[b'DB_PASSWORD'])",
        ],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert out == value.encode()
