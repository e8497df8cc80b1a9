"""Fixture seeding: argv steps without a shell, the fixture read-only and confined."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.engines.base import Mount
from corral.engines.fake import FakeEngine
from corral.errors import SpecError
from corral.testing.environment import (
    FIXTURE_MOUNT,
    FixtureSource,
    TestEnvironment,
    seed_commands,
)
from tests.unit.builders import role_release


class RecordingEngine(FakeEngine):
    """The fake engine, keeping every one-off command and its mounts."""

    def __init__(self) -> None:
        super().__init__()
        self.once: list[tuple[list[str], tuple[Mount, ...]]] = []

    def run_once(
        self,
        image: str,
        command: Sequence[str],
        timeout: float = 120,
        mounts: Sequence[Mount] = (),
    ) -> str:
        self.once.append((list(command), tuple(mounts)))
        return ""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    spec_root = tmp_path / "repo"
    (spec_root / "fixtures" / "data").mkdir(parents=True)
    (spec_root / ".corral").mkdir()
    return spec_root


def source(root: Path) -> FixtureSource:
    return FixtureSource(root, root / ".corral", "web", "data")


def refusal(where: FixtureSource, folder: str) -> str:
    """The one diagnostic a refused fixture gets, as text."""
    with pytest.raises(SpecError) as caught:
        where.resolve(folder)
    [problem] = caught.value.diagnostics
    assert problem.path == "roles.web.fixtures.data"
    return problem.message


def test_seeding_runs_argv_steps_with_the_fixture_read_only(root: Path) -> None:
    engine = RecordingEngine()
    env = TestEnvironment(engine, "shop", root / ".corral" / "tests", root)
    rr = role_release(
        "web",
        volumes={"data": "/var/lib/it's here; $(reboot)"},
        fixtures={"data": "fixtures/data"},
        run={"user": "app"},
    )
    env._seed_volumes(rr)
    path = "/var/lib/it's here; $(reboot)"
    assert [command for command, _ in engine.once] == [
        ["cp", "-a", "--no-target-directory", "--", FIXTURE_MOUNT, path],
        ["chown", "-R", "--no-dereference", "--", "app:", path],
    ]
    for _, mounts in engine.once:
        fixture, volume = mounts
        assert fixture == Mount(str((root / "fixtures" / "data").resolve()), FIXTURE_MOUNT, True)
        assert (volume.target, volume.read_only) == (path, False)


def test_no_step_runs_a_shell_or_follows_links() -> None:
    for command in seed_commands("/data", "app"):
        assert command[0] not in {"sh", "bash", "/bin/sh"} and "-c" not in command
        assert not {"-L", "--dereference", "-H"} & set(command)
    assert "--no-dereference" in seed_commands("/data", "app")[1]


@pytest.mark.parametrize(
    "folder",
    ["/", "..", "../..", "/etc", "fixtures/../..", ".", "", "fixtures/../../repo-sibling"],
)
def test_a_fixture_outside_the_spec_folder_is_refused(root: Path, folder: str) -> None:
    assert "a folder inside the spec's folder" in refusal(source(root), folder)


def test_a_link_out_of_the_spec_folder_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "escape").symlink_to("/")
    (root / "fixtures" / "up").symlink_to(tmp_path)
    for folder in ("escape", "fixtures/up", "escape/etc"):
        assert "inside the spec's folder" in refusal(source(root), folder)


def test_a_link_inside_the_spec_folder_is_followed_to_its_target(root: Path) -> None:
    (root / "seed").symlink_to(root / "fixtures" / "data")
    assert source(root).resolve("seed") == (root / "fixtures" / "data").resolve()


def test_the_state_folder_never_goes_into_a_container(root: Path) -> None:
    for folder in (".corral", ".corral/tests"):
        assert "holds corral's state" in refusal(source(root), folder)
    state_inside = FixtureSource(root, root / "fixtures" / "data" / "state", "web", "data")
    assert "holds corral's state" in refusal(state_inside, "fixtures")


def test_a_fixture_that_is_no_folder_or_that_podman_would_misread_is_refused(root: Path) -> None:
    (root / "fixtures" / "file").write_text("x")
    assert "is not a folder" in refusal(source(root), "fixtures/file")
    assert "is not a folder" in refusal(source(root), "fixtures/missing")
    (root / "a:b,ro").mkdir()
    assert "has a ':'" in refusal(source(root), "a:b,ro")


def test_a_refused_fixture_mounts_nothing(root: Path) -> None:
    engine = RecordingEngine()
    env = TestEnvironment(engine, "shop", root / ".corral" / "tests", root)
    rr = role_release("web", volumes={"data": "/data"}, fixtures={"data": "/"})
    with pytest.raises(SpecError) as caught:
        env._seed_volumes(rr)
    assert "inside the spec's folder" in caught.value.diagnostics[0].message
    assert engine.once == []
