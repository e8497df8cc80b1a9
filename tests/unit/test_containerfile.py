"""The Containerfile carries spec values as data, and copies stay inside the spec's folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from corral.build.bake import BakeTarget, build_fleet, find_current_image, resolve_base
from corral.build.containerfile import (
    ADD_USER,
    ARG_USER,
    ARG_WORKDIR,
    OWN_VOLUMES,
    copy_arg,
    render,
    stage_context,
)
from corral.build.hashing import hash_tree
from corral.build.tree import confined
from corral.engines.fake import FakeEngine
from corral.errors import BuildError
from corral.progress import NullProgress
from corral.spec.load import load_spec
from corral.spec.model import Role
from corral.state import State

# Values the spec refuses today, but that the Containerfile must survive anyway.
HOSTILE = '/srv/a b/$HOME/it\'s/"q"/back\\slash/\\'
INSTRUCTIONS = ("FROM ", "RUN [", "ARG CORRAL_", "COPY [", "USER ${", "WORKDIR ${", "LABEL ")


PLACEHOLDER = "/srv/placeholder"


def make_role(**fields: Any) -> Role:
    """A validated role in which ``HOSTILE`` is put back after validation: the spec refuses
    it, and the Containerfile must survive it all the same."""
    data: dict[str, Any] = {
        "base": {"debian": "bookworm"},
        "run": {"command": ["app"], "user": "app"},
        **fields,
    }
    safe = json.loads(json.dumps(data).replace(json.dumps(HOSTILE)[1:-1], PLACEHOLDER))
    return _put_back(Role.model_validate(safe))


def _put_back(value: Any) -> Any:
    if value == PLACEHOLDER:
        return HOSTILE
    if isinstance(value, BaseModel):
        updates = {name: _put_back(getattr(value, name)) for name in type(value).model_fields}
        return value.model_copy(update=updates)
    if isinstance(value, dict):
        return {k: _put_back(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_put_back(v) for v in value)
    return value


def unchecked(role: Role, section: str, **values: Any) -> Role:
    """``role`` with ``values`` set in ``section`` without validation: what slipped past."""
    part = getattr(role, section).model_copy(update=values)
    return role.model_copy(update={section: part})


def run_steps(text: str) -> list[list[str]]:
    return [json.loads(line[4:]) for line in text.splitlines() if line.startswith("RUN [")]


def test_the_user_and_volume_paths_are_arguments_of_fixed_scripts() -> None:
    role = make_role(volumes={"data": HOSTILE, "logs": "/var/log/app"})
    role = unchecked(role, "run", user="x; touch /pwned #")
    steps = run_steps(render(role, "sha256abc").text)
    assert steps[0] == ["/bin/sh", "-ec", ADD_USER, "sh", "x; touch /pwned #"]
    assert steps[1] == [
        "/bin/sh",
        "-ec",
        OWN_VOLUMES,
        "sh",
        "x; touch /pwned #",
        HOSTILE,
        "/var/log/app",
    ]


def test_copy_user_and_workdir_are_build_arguments_behind_fixed_lines() -> None:
    role = make_role(
        build={"copy": [{"src": "app", "dest": HOSTILE}], "run": ["echo 'role code' $HOME"]},
        run={"command": ["app"], "user": "app", "workdir": HOSTILE},
    )
    rendered = render(role, "sha256abc", {"io.corral.fleet": "shop"})
    assert rendered.build_args == {copy_arg(0): HOSTILE, ARG_USER: "app", ARG_WORKDIR: HOSTILE}
    for line in rendered.text.splitlines():
        assert line.startswith(INSTRUCTIONS), line
        if not line.startswith("RUN ["):
            assert HOSTILE not in line and "$HOME" not in line
    assert 'COPY ["copy-0", "${CORRAL_COPY_0}"]' in rendered.text
    assert ["/bin/sh", "-ec", "echo 'role code' $HOME"] in run_steps(rendered.text)


@pytest.mark.parametrize(
    ("section", "field", "value", "path"),
    [
        ("run", "workdir", "/srv\nUSER root", "run.workdir"),
        ("run", "workdir", "/srv\r", "run.workdir"),
        ("run", "workdir", "/srv\u2028x", "run.workdir"),
        ("run", "user", "app\nUSER root", "run.user"),
        ("run", "user", "app\0", "run.user"),
    ],
)
def test_a_control_character_in_a_value_is_refused(
    section: str, field: str, value: str, path: str
) -> None:
    role = unchecked(make_role(), section, **{field: value})
    with pytest.raises(BuildError, match=path) as caught:
        render(role, "sha256abc")
    assert "control character" in caught.value.message


def test_a_control_character_in_a_volume_path_is_refused() -> None:
    role = make_role().model_copy(update={"volumes": {"data": "/data\nUSER root"}})
    with pytest.raises(BuildError, match=r"volumes\.data"):
        render(role, "sha256abc")


def test_a_control_character_in_a_copy_destination_is_refused() -> None:
    role = make_role(build={"copy": [{"src": "a", "dest": "/x"}]})
    step = role.build.copy_[0].model_copy(update={"dest": "/x\nUSER root"})
    role = unchecked(role, "build", copy_=(step,))
    with pytest.raises(BuildError, match=r"build.copy\[0\].dest"):
        render(role, "sha256abc")


def test_a_role_step_may_span_lines_but_never_hold_a_nul() -> None:
    role = make_role(build={"run": ["set -x\necho two lines"]})
    assert ["/bin/sh", "-ec", "set -x\necho two lines"] in run_steps(render(role, "b").text)
    role = unchecked(role, "build", run=("echo a\0b",))
    with pytest.raises(BuildError, match=r"build\.run\[0\]: the step contains a NUL"):
        render(role, "b")


def test_a_base_reference_is_one_word() -> None:
    with pytest.raises(BuildError, match="base image"):
        render(make_role(), "abc\nUSER root")
    with pytest.raises(BuildError, match="single word"):
        render(make_role(), "abc def")


# -- the build context ---------------------------------------------------------------------


def copy_role(*sources: str, dest: str = "/srv/app") -> Role:
    """A role copying ``sources``, set after validation: the spec refuses some of them."""
    role = make_role(build={"copy": [{"src": "app", "dest": dest} for _ in sources]})
    steps = tuple(
        step.model_copy(update={"src": src})
        for step, src in zip(role.build.copy_, sources, strict=True)
    )
    return unchecked(role, "build", copy_=steps)


@pytest.fixture
def spec_root(tmp_path: Path) -> Path:
    root = tmp_path / "spec"
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "server.py").write_text("print('hi')\n")
    (root / "app" / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / "outside.txt").write_text("host secret\n")
    return root


@pytest.mark.parametrize("src", ["../outside.txt", "app/../../outside.txt", "/etc/hostname"])
def test_a_copy_source_outside_the_spec_folder_is_refused(
    spec_root: Path, tmp_path: Path, src: str
) -> None:
    with pytest.raises(BuildError, match=r"build.copy\[0\].src"):
        stage_context(copy_role(src), spec_root, tmp_path / "ctx")
    assert not (tmp_path / "ctx" / "copy-0").exists()


def test_a_copy_source_that_is_a_symlink_out_of_the_folder_is_refused(
    spec_root: Path, tmp_path: Path
) -> None:
    (spec_root / "shadow").symlink_to(tmp_path / "outside.txt")
    (spec_root / "etc").symlink_to("/etc")
    for src in ("shadow", "etc", "etc/passwd"):
        with pytest.raises(BuildError, match="outside the spec's folder"):
            stage_context(copy_role(src), spec_root, tmp_path / "ctx")


@pytest.mark.parametrize(
    ("name", "target"),
    [("shadow", "/etc/shadow"), ("up", "../../outside.txt"), ("abs-inside", "/srv/app/x")],
)
def test_a_symlink_inside_a_copied_folder_that_leaves_it_is_refused(
    spec_root: Path, tmp_path: Path, name: str, target: str
) -> None:
    (spec_root / "app" / "lib" / name).symlink_to(target)
    with pytest.raises(BuildError, match=f"app/lib/{name} is a symlink"):
        stage_context(copy_role("app/"), spec_root, tmp_path / "ctx")
    with pytest.raises(BuildError, match=f"app/lib/{name} is a symlink"):
        hash_tree(spec_root / "app")


def test_a_symlink_chain_that_ends_outside_is_refused(spec_root: Path, tmp_path: Path) -> None:
    (spec_root / "app" / "hop").symlink_to("lib/next")
    (spec_root / "app" / "lib" / "next").symlink_to("../../../outside.txt")
    with pytest.raises(BuildError, match="is a symlink"):
        hash_tree(spec_root / "app")


def test_a_symlink_inside_the_folder_is_copied_as_a_symlink(
    spec_root: Path, tmp_path: Path
) -> None:
    (spec_root / "app" / "current").symlink_to("lib/util.py")
    (spec_root / "app" / "libs").symlink_to("lib")
    stage_context(copy_role("app/"), spec_root, tmp_path / "ctx")
    copied = tmp_path / "ctx" / "copy-0"
    assert os.readlink(copied / "current") == "lib/util.py"
    assert os.readlink(copied / "libs") == "lib"
    assert (copied / "lib" / "util.py").read_text() == "X = 1\n"


def test_the_hash_never_reads_through_a_symlink(spec_root: Path, tmp_path: Path) -> None:
    (spec_root / "app" / "current").symlink_to("lib/util.py")
    before = hash_tree(spec_root / "app")
    (spec_root / "app" / "lib" / "util.py").write_text("X = 2\n")  # the link's text is the same
    changed = hash_tree(spec_root / "app")
    (spec_root / "app" / "current").unlink()
    (spec_root / "app" / "current").symlink_to("server.py")
    relinked = hash_tree(spec_root / "app")
    assert len({before, changed, relinked}) == 3


def test_a_fifo_in_a_copied_folder_is_refused(spec_root: Path, tmp_path: Path) -> None:
    os.mkfifo(spec_root / "app" / "pipe")
    with pytest.raises(BuildError, match="FIFO"):
        hash_tree(spec_root / "app")  # never blocks reading it


def test_what_is_copied_is_what_is_hashed(spec_root: Path, tmp_path: Path) -> None:
    for skipped in (".git", "__pycache__", ".venv", ".corral"):
        (spec_root / "app" / skipped).mkdir()
        (spec_root / "app" / skipped / "junk").symlink_to("/etc/shadow")
    (spec_root / "app" / "server.py").chmod(0o755)
    stage_context(copy_role("app/"), spec_root, tmp_path / "ctx")
    copied = tmp_path / "ctx" / "copy-0"
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*")) == [
        "lib",
        "lib/util.py",
        "server.py",
    ]
    assert os.access(copied / "server.py", os.X_OK)
    assert hash_tree(copied) == hash_tree(spec_root / "app")


def test_a_single_file_is_copied_to_a_file_or_into_a_folder(
    spec_root: Path, tmp_path: Path
) -> None:
    role = make_role(
        build={
            "copy": [
                {"src": "app/server.py", "dest": "/srv/server.py"},
                {"src": "app/server.py", "dest": "/srv/bin/"},
            ]
        }
    )
    stage_context(role, spec_root, tmp_path / "ctx")
    assert (tmp_path / "ctx" / "copy-0").read_text() == "print('hi')\n"
    assert (tmp_path / "ctx" / "copy-1" / "server.py").read_text() == "print('hi')\n"


def test_confined_resolves_inside_the_root(spec_root: Path) -> None:
    assert (
        confined(spec_root, "app/lib/../server.py", "f") == (spec_root / "app/server.py").resolve()
    )


# -- the bake: a Containerfile base's context, the network ---------------------------------


def write_spec(root: Path, role_text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "corral.yaml"
    spec.write_text(f"fleet: shop\nroles:\n  web:\n{role_text}")
    return spec


def test_a_containerfile_base_outside_the_spec_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "Containerfile").write_text("FROM scratch\n")
    write_spec(
        tmp_path / "spec",
        "    base: {containerfile: db/Containerfile}\n    run: {command: [app]}\n",
    )
    (tmp_path / "spec" / "db").mkdir()
    (tmp_path / "spec" / "db" / "Containerfile").write_text("FROM scratch\n")
    spec = load_spec(tmp_path / "spec" / "corral.yaml")
    (tmp_path / "spec" / "db" / "Containerfile").unlink()
    (tmp_path / "spec" / "db").rmdir()
    (tmp_path / "spec" / "db").symlink_to(tmp_path / "elsewhere")  # swapped after loading
    target = BakeTarget("shop", "web", spec.fleet.roles["web"], spec.root)
    engine = FakeEngine()
    with pytest.raises(BuildError, match=r"base\.containerfile"):
        resolve_base(target, engine, NullProgress())
    with (
        State.open(tmp_path / "state.db") as state,
        pytest.raises(BuildError, match=r"base\.containerfile"),
    ):
        find_current_image(target, engine, state)
    assert engine.builds == []


@pytest.mark.parametrize("network", [False, True])
def test_the_bake_asks_the_engine_for_the_role_network(tmp_path: Path, network: bool) -> None:
    role_text = (
        "    base: {containerfile: db/Containerfile}\n"
        f"    build: {{run: ['true'], network: {str(network).lower()}}}\n"
        "    run: {command: [app], workdir: /srv}\n"
    )
    write_spec(tmp_path, role_text)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "Containerfile").write_text("FROM scratch\n")
    engine = FakeEngine()
    with State.open(tmp_path / "state.db") as state:
        build_fleet(load_spec(tmp_path / "corral.yaml"), engine, state)
    base, stage, final = engine.builds
    assert (base.network, stage.network, final.network) == (network, network, False)
    assert stage.build_args[ARG_WORKDIR] == "/srv"
