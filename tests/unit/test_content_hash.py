"""The content hash: every input that shapes an image changes it; release settings do not.

The inputs are the ones docs/architecture.md lists: the role's base and build sections,
run.user, run.workdir, volume paths, the base image id, and the bytes, execute bits (and
symlinks) of every copied file. Each case changes one thing alone.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.build.bake import BakeTarget, resolve_base, role_content_hash
from corral.engines.fake import FakeEngine
from corral.errors import BuildError
from corral.progress import NullProgress
from corral.spec.model import Role

BASE_ID = "sha256:" + "a" * 64
Data = dict[str, Any]


def role_data() -> Data:
    return {
        "base": {"debian": "bookworm", "packages": ["python3"]},
        "build": {"copy": [{"src": "app/", "dest": "/srv/app"}], "run": ["true"]},
        "run": {
            "command": ["python3", "/srv/app/server.py"],
            "user": "app",
            "port": 8000,
            "env": {"GREETING": "hi"},
            "secrets": ["TOKEN"],
            "workdir": "/srv/app",
        },
        "health": {"http": "/healthz"},
        "replicas": 1,  # more would need the volume shareable
        "volumes": {"data": "/var/lib/app"},
        "deploy": {"strategy": "rolling"},
        "public": 8080,
        "resources": {"memory": "512m"},
    }


def write_app(root: Path) -> None:
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "server.py").write_text("print('v1')\n")
    (root / "app" / "lib" / "util.py").write_text("X = 1\n")
    (root / "app" / "current").symlink_to("lib/util.py")
    (root / "other").mkdir()
    (root / "other" / "x.py").write_text("Y = 1\n")


def content_hash(root: Path, data: Data, base_id: str = BASE_ID) -> str:
    target = BakeTarget("shop", "web", Role.model_validate(data), root)
    return role_content_hash(target, base_id)


def set_field(path: str, value: Any) -> Callable[[Data], None]:
    """A change of the field at dotted ``path`` (list items by index)."""

    def change(data: Data) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return change


IMAGE_INPUTS: dict[str, Callable[[Data], None]] = {
    "base.debian": set_field("base.debian", "trixie"),
    "base.packages": set_field("base.packages", ["python3", "curl"]),
    "base.variant": set_field("base.variant", "minbase"),
    "base kind (image)": set_field("base", {"image": "localhost/base:1"}),
    "build.copy src": set_field("build.copy.0.src", "other/"),
    "build.copy dest": set_field("build.copy.0.dest", "/opt/app"),
    "build.copy added": set_field("build.copy", [{"src": "app/", "dest": "/srv/app"}] * 2),
    "build.run": set_field("build.run", ["true", "echo more"]),
    "build.network": set_field("build.network", True),
    "run.user": set_field("run.user", "web"),
    "run.workdir": set_field("run.workdir", "/srv"),
    "run.workdir unset": set_field("run.workdir", None),
    "volume path": set_field("volumes.data", "/var/lib/other"),
    "volume added": set_field("volumes", {"data": "/var/lib/app", "logs": "/var/log/app"}),
}

RELEASE_SETTINGS: dict[str, Callable[[Data], None]] = {
    "run.command": set_field("run.command", ["python3", "-u", "/srv/app/server.py"]),
    "run.env": set_field("run.env", {"GREETING": "hello"}),
    "run.port": set_field("run.port", 9000),
    "run.secrets": set_field("run.secrets", ["OTHER"]),
    "replicas": set_field("replicas", 0),
    "health": set_field("health", {"tcp": True}),
    "deploy": set_field("deploy", {"strategy": "blue-green"}),
    "public": set_field("public", 9090),
    "resources": set_field("resources", {"memory": "1g"}),
    "lockdown": set_field("lockdown", {"capabilities": ["NET_BIND_SERVICE"]}),
    "volume name": set_field("volumes", {"state": "/var/lib/app"}),
    "volume shareable": set_field("volumes.data", {"path": "/var/lib/app", "shareable": True}),
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_app(tmp_path)
    return tmp_path


@pytest.mark.parametrize("change", IMAGE_INPUTS.values(), ids=IMAGE_INPUTS.keys())
def test_each_image_input_alone_changes_the_hash(
    root: Path, change: Callable[[Data], None]
) -> None:
    changed = copy.deepcopy(role_data())
    change(changed)
    assert changed != role_data()
    assert content_hash(root, changed) != content_hash(root, role_data())


@pytest.mark.parametrize("change", RELEASE_SETTINGS.values(), ids=RELEASE_SETTINGS.keys())
def test_release_settings_leave_the_hash_alone(root: Path, change: Callable[[Data], None]) -> None:
    changed = copy.deepcopy(role_data())
    change(changed)
    assert changed != role_data()
    assert content_hash(root, changed) == content_hash(root, role_data())


def _chmod_x(root: Path) -> None:
    (root / "app" / "server.py").chmod(0o755)


def _relink(root: Path) -> None:
    (root / "app" / "current").unlink()
    (root / "app" / "current").symlink_to("server.py")


FILE_CHANGES: dict[str, Callable[[Path], Any]] = {
    "bytes of a file": lambda r: (r / "app" / "server.py").write_text("print('v2')\n"),
    "bytes of a nested file": lambda r: (r / "app" / "lib" / "util.py").write_text("X = 2\n"),
    "execute bit": _chmod_x,
    "a file added": lambda r: (r / "app" / "new.py").write_text(""),
    "a file renamed": lambda r: (r / "app" / "server.py").rename(r / "app" / "main.py"),
    "an empty folder added": lambda r: (r / "app" / "empty").mkdir(),
    "a symlink's target": _relink,
}


@pytest.mark.parametrize("change", FILE_CHANGES.values(), ids=FILE_CHANGES.keys())
def test_each_copied_file_change_alone_changes_the_hash(
    root: Path, change: Callable[[Path], Any]
) -> None:
    before = content_hash(root, role_data())
    change(root)
    assert content_hash(root, role_data()) != before


def test_the_base_image_id_changes_the_hash(root: Path) -> None:
    other = "sha256:" + "b" * 64
    assert content_hash(root, role_data(), other) != content_hash(root, role_data())


def test_files_the_image_never_gets_leave_the_hash_alone(root: Path) -> None:
    before = content_hash(root, role_data())
    (root / "other" / "x.py").write_text("Y = 2\n")  # not copied by this role
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "server.pyc").write_bytes(b"\0")
    os.utime(root / "app" / "server.py", (0, 0))  # times are not inputs
    assert content_hash(root, role_data()) == before


def test_the_same_inputs_give_the_same_hash_in_another_folder(tmp_path: Path) -> None:
    write_app(tmp_path / "one")
    write_app(tmp_path / "two")
    assert content_hash(tmp_path / "one", role_data()) == content_hash(
        tmp_path / "two", role_data()
    )


def test_a_containerfile_base_is_rebuilt_when_its_folder_or_the_network_changes(
    tmp_path: Path,
) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "Containerfile").write_text("FROM scratch\n")
    data = {**role_data(), "base": {"containerfile": "db/Containerfile"}, "build": {}}
    engine = FakeEngine()

    def base_id(role: Data) -> str:
        target = BakeTarget("shop", "web", Role.model_validate(role), tmp_path)
        return resolve_base(target, engine, NullProgress()).id

    first = base_id(data)
    assert base_id(data) == first  # cached: nothing changed
    (tmp_path / "db" / "Containerfile").write_text("FROM scratch\nENV A=1\n")
    second = base_id(data)
    (tmp_path / "db" / "setup.sh").write_text("true\n")  # the rest of the build context
    third = base_id(data)
    fourth = base_id({**data, "build": {"network": True}})
    assert len({first, second, third, fourth}) == 4
    assert len(engine.builds) == 4


@pytest.mark.parametrize("src", ["shadow", "../outside/secret.txt", "/etc/hostname"])
def test_the_hash_never_reads_a_copy_source_outside_the_spec_folder(
    root: Path, tmp_path_factory: pytest.TempPathFactory, src: str
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("host secret\n")
    (root / "shadow").symlink_to(outside)
    role = Role.model_validate(role_data())  # the spec refuses src: the bake must too
    steps = (role.build.copy_[0].model_copy(update={"src": src}),)
    role = role.model_copy(update={"build": role.build.model_copy(update={"copy_": steps})})
    with pytest.raises(BuildError, match=r"build\.copy\[0\]\.src"):
        role_content_hash(BakeTarget("shop", "web", role, root), BASE_ID)
