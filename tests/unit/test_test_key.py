"""The test key: what tested an image (test files, fixtures, test settings), hashed.

A change to anything the test environment used makes a new key; a change that a test run
does not see (replicas, deploy policy) keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corral.errors import BuildError
from corral.spec import load_spec
from corral.spec.model import Role
from corral.testing.key import test_key as key_of

SPEC = """\
fleet: shop
roles:
  web:
    base: {{image: localhost/web}}
    run: {{command: [web], port: 80, env: {{MODE: a}}, secrets: [TOKEN]}}
    volumes: {{data: /var/lib/web}}
{extra}"""

DEFAULT = "    tests: [tests/web/, tests/test_top.py]\n    fixtures: {data: seed}\n"


def _key(root: Path, extra: str = DEFAULT, live: tuple[str, ...] = ()) -> str:
    (root / "corral.yaml").write_text(SPEC.format(extra=extra))
    role: Role = load_spec(root / "corral.yaml").fleet.roles["web"]
    return key_of(root, "web", role, live)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tests" / "web").mkdir(parents=True)
    (tmp_path / "tests" / "web" / "test_a.py").write_text("def test_a():\n    pass\n")
    (tmp_path / "tests" / "test_top.py").write_text("def test_top():\n    pass\n")
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "rows.sql").write_text("insert 1\n")
    return tmp_path


def test_the_key_is_stable(root: Path) -> None:
    first = _key(root)
    assert first == _key(root) and len(first) == 64


def _write(relative: str, text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / relative).write_text(text)

    return change


@pytest.mark.parametrize(
    "change",
    [
        _write("tests/web/test_new.py", "def test_b():\n    assert False\n"),  # a new file
        _write("tests/web/test_a.py", "def test_a():\n    assert False\n"),  # changed
        _write("tests/test_top.py", "def test_top():\n    assert 0\n"),  # a file entry
        _write("tests/conftest.py", "import pytest\n"),  # pytest loads it above the tests
        _write("tests/web/conftest.py", "import pytest\n"),
        _write("seed/rows.sql", "insert 2\n"),  # the fixture that seeds the volume
        lambda root: (root / "tests" / "web" / "test_a.py").chmod(0o755),
        lambda root: (root / "tests" / "web" / "test_a.py").unlink(),
    ],
)
def test_a_change_to_what_the_tests_see_changes_the_key(
    root: Path, change: Callable[[Path], None]
) -> None:
    before = _key(root)
    change(root)
    assert _key(root) != before


@pytest.mark.parametrize(
    "extra",
    [
        DEFAULT + "    health: {tcp: true}\n",
        DEFAULT + "    lockdown: {capabilities: [NET_BIND_SERVICE]}\n",
        DEFAULT + "    resources: {memory: 256m}\n",
        DEFAULT + "    public: 8080\n",
        DEFAULT + "    test_secrets: [TOKEN]\n",
        "    tests: [tests/web/]\n    fixtures: {data: seed}\n",  # a test entry less
        "    tests: [tests/web/, tests/test_top.py]\n",  # no fixture
    ],
)
def test_a_change_to_a_test_setting_changes_the_key(root: Path, extra: str) -> None:
    assert _key(root, extra) != _key(root)


def test_a_new_public_port_keeps_the_key(root: Path) -> None:
    # A test environment's edge publishes on a port of its own: a new-user trial's port
    # change was refused by the gate ("test settings changed") for nothing.
    assert _key(root, DEFAULT + "    public: 8080\n") == _key(root, DEFAULT + "    public: 9090\n")


def test_the_run_config_is_in_the_key(root: Path) -> None:
    before = _key(root)
    (root / "corral.yaml").write_text(SPEC.format(extra=DEFAULT).replace("MODE: a", "MODE: b"))
    role = load_spec(root / "corral.yaml").fleet.roles["web"]
    assert key_of(root, "web", role, ()) != before


def test_live_secrets_in_tests_are_in_the_key(root: Path) -> None:
    extra = DEFAULT + "    test_secrets: [TOKEN]\n"
    assert _key(root, extra, live=("TOKEN",)) != _key(root, extra)


@pytest.mark.parametrize(
    "extra",
    [
        DEFAULT + "    replicas: 0\n",  # scaling is no reason to test again
        DEFAULT + "    deploy: {max_surge: 2}\n",  # how it rolls is no reason either
        DEFAULT + "    deploy: {strategy: blue-green}\n",
    ],
)
def test_what_a_test_run_does_not_see_keeps_the_key(root: Path, extra: str) -> None:
    assert _key(root, extra) == _key(root)


def test_a_test_file_linking_out_of_the_spec_folder_is_refused(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("SECRET\n")
    (root / "tests" / "web" / "test_link.py").symlink_to(outside)
    with pytest.raises(BuildError, match="outside the copied folder"):
        _key(root)


def test_a_fixture_link_is_hashed_by_its_text_wherever_it_points(root: Path) -> None:
    # The seeding copies a fixture's links as links (cp -a), never following them.
    (root / "seed" / "abs").symlink_to("/etc/shadow")
    first = _key(root)
    (root / "seed" / "abs").unlink()
    (root / "seed" / "abs").symlink_to("/etc/passwd")
    assert _key(root) != first
