"""The key a test result is bound to, besides the image digest: what tested the image.

A pass proves something about an image only for the tests that ran and the environment
they ran in. ``test_key`` hashes both, so the deploy gate can tell a pass of today's tests
from a pass of yesterday's: a new or changed test file, or a changed setting the test
environment used, makes a new key for which nothing has passed yet.

In the key:

- the bytes, names, execute bits and link texts of every file of the role's ``tests``
  (a folder entry: everything under it, through the confined walk of
  :mod:`corral.build.tree`), and the ``conftest.py`` files pytest loads above them;
- the content of every ``fixtures`` folder (a link in it by its text, wherever it points,
  as the seeding copies it), and which volume each seeds;
- the role's ``run`` (command, user, port, env, secret names, workdir), ``health``,
  ``volumes``, ``lockdown``, ``resources``, whether it is ``public`` (not the port: a test
  environment's edge publishes on a port of its own) and ``after`` (the names of the
  roles brought up with it), as the test environment starts it;
- the names of its ``test_secrets``, and which of them get live values
  (``live_secrets_in_tests``).

Not in it: the image (the digest is bound beside the key), ``replicas`` (scaling is no
reason to test again; a test environment runs at least one instance), the ``deploy``
policy, the images and settings of the roles it comes ``after`` (each has its own gate),
secret values (a test value is made per run) and timeouts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from corral.build.hashing import hash_json, hash_tree
from corral.build.tree import confined
from corral.spec.model import Role

#: Changing what goes into the key changes this, so every earlier key stops matching.
#: 2: ``public`` as whether the role is public; a new port asked for a new test run.
KEY_RECIPE = "corral-test-key-2"

#: The fields of a role that its test environment uses, as the spec spells them.
TEST_SETTINGS = frozenset(
    {"run", "health", "volumes", "fixtures", "lockdown", "resources", "public", "after"}
)

MISSING = "missing"  # a test file or fixture that is not there: hashed as such


def test_key(root: Path, name: str, role: Role, live_secrets: Collection[str]) -> str:
    """The sha256 (hex) of role ``name``'s test files and test settings (the arguments and
    errors of :func:`key_data`)."""
    return hash_json(key_data(root, name, role, live_secrets))


def key_parts(data: Mapping[str, Any]) -> dict[str, str]:
    """A short hash of each part of a key's ``data``, by what the operator would call it
    (``run``, ``health``, ``tests/web/test_a.py``, ``fixtures.data``, ``test_secrets``...):
    kept beside a run, so that the gate can name what changed since."""
    parts = {f: hash_json(v)[:16] for f, v in data["settings"].items()}
    for group in ("tests", "conftest"):
        parts.update({path: digest[:16] for path, digest in data[group].items()})
    parts.update({f"fixtures.{v}": digest[:16] for v, digest in data["fixtures"].items()})
    for name in ("test_secrets", "live_secrets"):
        parts[name] = hash_json(data[name])[:16]
    return parts


def changed_parts(was: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The parts whose hash differs, or that only one of them has, sorted."""
    return sorted(k for k in {*was, *now} if was.get(k) != now.get(k))


def key_data(root: Path, name: str, role: Role, live_secrets: Collection[str]) -> dict[str, Any]:
    """What role ``name``'s test key hashes: its test settings and its files' hashes.

    Args:
        root: the spec's folder; the role's tests and fixtures are relative to it.
        name: the role's name.
        role: the role as the spec declares it.
        live_secrets: the fleet's ``live_secrets_in_tests``.

    Raises:
        BuildError: a test file or fixture leads outside the spec's folder, or holds a
            symlink that leaves it, or a device, FIFO or socket.
    """
    field = f"roles.{name}"
    settings = role.model_dump(mode="json", include=set(TEST_SETTINGS))
    settings["public"] = role.public is not None
    data = {
        "recipe": KEY_RECIPE,
        "role": name,
        "settings": settings,
        "test_secrets": sorted(role.test_secrets),
        "live_secrets": sorted(set(role.test_secrets) & set(live_secrets)),
        "tests": {t: _content(root, t, f"{field}.tests") for t in role.tests},
        "conftest": {c: _content(root, c, f"{field}.tests") for c in _conftests(root, role.tests)},
        "fixtures": {
            volume: _content(root, folder, f"{field}.fixtures.{volume}", any_links=True)
            for volume, folder in role.fixtures.items()
        },
    }
    return data


def _content(root: Path, relative: str, field: str, any_links: bool = False) -> str:
    """The hash of what ``relative`` holds. A test file's links must stay inside it (pytest
    would follow them); a fixture's links are hashed by their text wherever they point,
    as the seeding copies them, never followed."""
    path = confined(root, relative, field)
    return hash_tree(path, any_links) if path.exists() else MISSING


def _conftests(root: Path, tests: Sequence[str]) -> list[str]:
    """The ``conftest.py`` files, relative to ``root``, in the folders between the tests'
    common folder (pytest's rootdir in a run, see corral.testing.runner) and each test
    entry's own folder: pytest loads those too. Those below a folder entry are already
    part of that entry's content."""
    base = root.resolve()
    folders = [_folder(base, t) for t in tests]
    if not folders:
        return []
    top = Path(*_common(folders))
    found = {
        (folder / "conftest.py").relative_to(base).as_posix()
        for start in folders
        for folder in _between(top, start)
        if (folder / "conftest.py").is_file()
    }
    return sorted(found)


def _folder(base: Path, entry: str) -> Path:
    path = base / entry
    return path if path.is_dir() else path.parent


def _common(folders: Sequence[Path]) -> tuple[str, ...]:
    parts = [f.parts for f in folders]
    common: list[str] = []
    for items in zip(*parts, strict=False):
        if any(item != items[0] for item in items):
            break
        common.append(items[0])
    return tuple(common)


def _between(top: Path, folder: Path) -> Iterator[Path]:
    """``top`` and every folder below it down to ``folder``, outermost first."""
    yield top
    if folder == top or not folder.is_relative_to(top):
        return
    here = top
    for part in folder.relative_to(top).parts:
        here = here / part
        yield here
