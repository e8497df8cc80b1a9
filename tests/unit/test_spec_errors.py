"""Broken specs: each gives a SpecError whose diagnostic says what is wrong, and where.

The fixtures live in ``specs/bad/NAME.yaml``; the table below pairs each with a substring
of the expected message and the expected 1-based line and column (0, 0 for problems with
the file as a whole).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.errors import Diagnostic, SpecError
from corral.spec.load import MAX_BYTES, load_spec

BAD = Path(__file__).parent / "specs" / "bad"

# name: (expected substring, line, column, field path)
CASES: dict[str, tuple[str, int, int, str]] = {
    "bad_yaml": ("invalid YAML: expected ',' or ']'", 7, 11, ""),
    "tab_indent": ("indent YAML with spaces, not tabs", 5, 1, ""),
    "duplicate_key": ("duplicate key 'port'", 8, 7, ""),
    "unknown_key": ("unknown key 'replcas'; did you mean 'replicas'?", 5, 5, "roles.web.replcas"),
    "bool_for_int": ("expected an integer from 0 to 100, got true", 7, 15, "roles.web.replicas"),
    "float_for_int": ("expected an integer from 0 to 100, got 1.5", 7, 15, "roles.web.replicas"),
    "port_range": ("expected an integer from 1 to 65535, got 70000", 7, 13, "roles.web.run.port"),
    "port_text": ("expected an integer from 1 to 65535, got 'abc'", 7, 13, "roles.web.run.port"),
    "missing_field": ("required key 'command' is missing", 5, 5, "roles.web.run.command"),
    "missing_roles": ("required key 'roles' is missing", 1, 1, "roles"),
    "bad_base": ("expected one of: debian, image, containerfile", 4, 5, "roles.web.base"),
    "bad_health": ("expected one of: http, tcp", 8, 5, "roles.web.health"),
    "health_no_port": ("a health check needs run.port", 3, 3, "roles.web"),
    "tcp_not_true": ("expected true, got 1", 6, 19, "roles.web.health.tcp"),
    "cycle": ("cycle: web -> db -> web", 6, 5, "roles.web.after"),
    "unknown_after": ("is after unknown role(s): cache", 6, 5, "roles.web.after"),
    "public_port_twice": ("two roles claim the same public port", 2, 1, "roles"),
    "version2": ("schema version 2 is not supported by this corral (supports 1)", 1, 10, "version"),
    "binary_junk": ("not valid UTF-8", 4, 20, ""),
    "control_chars": ("a character YAML does not allow (U+0001)", 2, 8, ""),
    "empty": ("the spec is empty", 0, 0, ""),
    "comment_only": ("the spec is empty", 0, 0, ""),
    "top_list": ("expected a mapping with 'fleet' and 'roles' at the top, got a list", 1, 1, ""),
    "top_scalar": ("at the top, got 'just a string'", 1, 1, ""),
    "two_documents": ("invalid YAML", 2, 1, ""),
    "missing_copy": ("file 'app.py' does not exist", 7, 16, "roles.web.build.copy[0].src"),
    "alias_bomb": ("YAML aliases (*a) are not allowed", 2, 8, ""),
    "root_user": ("never run as root", 7, 13, "roles.web.run.user"),
    "non_string_key": ("expected a text key, got 42", 8, 9, "roles.web.run.env"),
    "bad_role_name": ("expected a name of lowercase letters", 3, 3, "roles.Web_1"),
    "bad_duration": ("expected a duration such as", 6, 33, "roles.web.health.interval"),
}


def problems(path: Path) -> list[Diagnostic]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.diagnostics, "a SpecError must carry at least one diagnostic"
    return caught.value.diagnostics


def test_every_fixture_is_in_the_table() -> None:
    assert sorted(p.stem for p in BAD.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_spec(name: str) -> None:
    expected, line, column, path = CASES[name]
    found = problems(BAD / f"{name}.yaml")
    assert len(found) == 1, [str(d) for d in found]
    [diagnostic] = found
    assert expected in diagnostic.message
    assert (diagnostic.line, diagnostic.column) == (line, column), str(diagnostic)
    assert diagnostic.path == path
    assert diagnostic.file == str((BAD / f"{name}.yaml").absolute())
    assert expected in str(diagnostic)


def test_all_problems_reported_sorted(tmp_path: Path) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        "fleet: shop\n"
        "roles:\n"
        "  web:\n"
        "    base: {debain: bookworm}\n"
        "    replcas: 2\n"
        "    run:\n"
        "      command: [web]\n"
        "      port: 0\n"
        "      user: root\n"
        "    tests: [missing.sh]\n"
        "    resources: {cpus: true}\n"
    )
    found = problems(spec)
    assert [(d.line, d.path) for d in found] == [
        (4, "roles.web.base"),
        (5, "roles.web.replcas"),
        (8, "roles.web.run.port"),
        (9, "roles.web.run.user"),
        (10, "roles.web.tests[0]"),
        (11, "roles.web.resources.cpus"),
    ]
    assert "did you mean 'debian'?" in found[0].message
    assert "greater than 0 and at most 64, got true" in found[5].message
    error = SpecError(found)
    assert error.exit_code == 2
    assert error.to_dict()["diagnostics"][0]["line"] == 4


def test_huge_file_is_refused_unread(tmp_path: Path) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text("fleet: shop\n" + "#" * MAX_BYTES + "\n")
    [diagnostic] = problems(spec)
    assert "larger than 1024 KiB" in diagnostic.message
    assert diagnostic.line == 0


@pytest.mark.parametrize(
    "text",
    [
        "fleet: x\nroles: " + "[" * 5000 + "]" * 5000 + "\n",
        "fleet: x\nroles:\n" + "".join("  " * i + "a:\n" for i in range(1, 300)),
        "fleet: x\nroles: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
    ],
    ids=["flow-lists", "block-maps", "flow-maps"],
)
def test_deep_nesting(tmp_path: Path, text: str) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(text)
    [diagnostic] = problems(spec)
    assert "nested too deeply" in diagnostic.message
    assert diagnostic.line >= 2


def test_missing_file(tmp_path: Path) -> None:
    [diagnostic] = problems(tmp_path / "nope.yaml")
    assert "does not exist" in diagnostic.message
    assert diagnostic.line == 0
    assert str(diagnostic) == f"{tmp_path / 'nope.yaml'}: the spec does not exist"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("bad\x00name.yaml", "does not exist"), ("x" * 5000 + ".yaml", "cannot read the spec")],
    ids=["nul-byte", "name-too-long"],
)
def test_impossible_paths(tmp_path: Path, name: str, expected: str) -> None:
    [diagnostic] = problems(tmp_path / name)
    assert expected in diagnostic.message


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "corral.yaml"
    os.mkfifo(fifo)
    [diagnostic] = problems(fifo)
    assert "is not a file" in diagnostic.message


def test_directory(tmp_path: Path) -> None:
    [diagnostic] = problems(tmp_path)
    assert "is not a file" in diagnostic.message


def test_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text("fleet: x\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    [diagnostic] = problems(spec)
    assert diagnostic.message == "cannot read the spec: Permission denied"


@pytest.mark.parametrize(
    ("text", "expected", "line"),
    [
        ("fleet: !!binary aGVsbG8=\nroles: {}\n", "YAML tags (!!binary) are not allowed", 1),
        ("fleet: x\nroles: !!set {a, b}\n", "YAML tags (!!set)", 2),
        ("fleet: x\nroles: {web: {replicas: " + "9" * 5000 + "}}\n", "cannot read this value", 2),
        # YAML 1.2's core schema has no dates: this is text, not an unreadable date.
        ("fleet: x\nroles: {web: {replicas: 2024-13-45}}\n", "got '2024-13-45'", 2),
        ("fleet: x\n? [a, b]\n: 1\nroles: {}\n", "expected a text key, got a list", 2),
        ("fleet: x\nversion: true\nroles: {}\n", "expected the schema version 1, got true", 2),
        ("fleet: x\nversion: '1'\nroles: {}\n", "expected the schema version 1, got '1'", 2),
        ("fleet: x\nroles: {}\n", "expected at least 1 entry", 2),
        ("fleet: x\nedge: {address: here}\nroles: {}\n", "expected an IP address", 2),
        (
            "fleet: x\nroles:\n  corral-edge: {base: {image: x}, run: {command: [a]}}\n",
            "role names starting with 'corral-' are corral's own",
            3,
        ),
        ("fleet: x\nroles: [web]\n", "expected a mapping of keys to values, got a list", 2),
        (
            "\ufefffleet: 3\nroles: {a: {base: {image: x}, run: {command: [a]}}}\n",
            "expected text",
            1,
        ),
    ],
)
def test_more_problems(tmp_path: Path, text: str, expected: str, line: int) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(text)
    found = problems(spec)
    assert any(expected in d.message and d.line == line for d in found), [str(d) for d in found]


def test_env_bool_asks_for_quotes(tmp_path: Path) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        "fleet: x\nroles:\n  a:\n    base: {image: x}\n    run:\n      command: [a]\n"
        "      env: {DEBUG: true}\n"
    )
    [diagnostic] = problems(spec)
    assert diagnostic.path == "roles.a.run.env.DEBUG"
    assert "quote it" in diagnostic.message
    assert (diagnostic.line, diagnostic.column) == (7, 20)
