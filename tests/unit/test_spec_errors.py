"""Broken specs: each gives a SpecError whose diagnostic says what is wrong, and where.

The fixtures live in ``specs/bad/NAME.yaml``; the table below pairs each with a substring
of the expected message and the expected 1-based line and column (0, 0 for problems with
the file as a whole).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.cli.exitcodes import ExitCode, for_error
from corral.errors import Diagnostic, SpecError
from corral.spec.load import MAX_BYTES, LoadedSpec, check_files, load_spec
from corral.spec.model import ContainerfileBase

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
    "bad_health": ("expected one of: http, tcp, command", 8, 5, "roles.web.health"),
    "health_no_port": ("a health check needs run.port", 3, 3, "roles.web"),
    "tcp_not_true": ("expected true, got 1", 6, 19, "roles.web.health.tcp"),
    "cycle": ("cycle: web -> db -> web", 6, 5, "roles.web.after"),
    "unknown_after": ("is after unknown role(s): cache", 6, 5, "roles.web.after"),
    "public_port_twice": (
        "roles 'web' and 'api' both claim public port 443",
        10,
        13,
        "roles.api.public",
    ),
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
    # Paths inside the image: absolute, normal form, portable characters, no system mounts.
    "workdir_newline": (
        "character U+000A (character 5) is not allowed",
        7,
        16,
        "roles.web.run.workdir",
    ),
    "workdir_dotdot": ("normal form: no '..' segments", 7, 16, "roles.web.run.workdir"),
    "copy_dest_relative": (
        "expected an absolute path in the image",
        7,
        26,
        "roles.web.build.copy[0].dest",
    ),
    "copy_dest_dollar": (
        "'$' is not allowed in a path in the image",
        7,
        26,
        "roles.web.build.copy[0].dest",
    ),
    "volume_colon": ("':' is not allowed in a path in the image", 7, 13, "roles.web.volumes.data"),
    "volume_at_proc": (
        "cannot be mounted at /proc/sys: /proc is the kernel's",
        7,
        13,
        "roles.web.volumes.data",
    ),
    "volume_at_secrets": ("cannot be mounted at /run/secrets", 7, 13, "roles.web.volumes.data"),
    "volume_at_root": (
        "a volume at / would hide the system's own files",
        7,
        13,
        "roles.web.volumes.data",
    ),
    # Paths on the host: relative to the spec's folder, never leaving it.
    "copy_src_dotdot": ("'..' is not allowed", 7, 17, "roles.web.build.copy[0].src"),
    "copy_src_absolute": ("not an absolute path", 7, 17, "roles.web.build.copy[0].src"),
    "containerfile_absolute": ("not an absolute path", 4, 27, "roles.web.base.containerfile"),
    "tests_outside": ("'..' is not allowed", 6, 13, "roles.web.tests[0]"),
    "fixtures_root": ("not an absolute path", 7, 22, "roles.web.fixtures.data"),
    "state_device": ("the state file '/dev/null' is a device", 2, 8, "state"),
    "state_folder": ("the state file '.' is a folder", 2, 8, "state"),
    "state_control": ("character U+0007 (character 6) is not allowed", 2, 8, "state"),
    # Names and text.
    "fleet_markup": ("expected a name of lowercase letters", 1, 8, "fleet"),
    "command_nul": (
        "may not contain a NUL character",
        6,
        22,
        "roles.web.run.command[1]",
    ),
    "env_nul": (
        "may not contain a NUL character",
        7,
        19,
        "roles.web.run.env.MODE",
    ),
    "health_space": ("expected a URL path of RFC 3986 characters", 6, 20, "roles.web.health.http"),
    # Capabilities.
    "capability_all": ("capability ALL is refused", 7, 31, "roles.web.lockdown.capabilities[1]"),
    "capability_sys_admin": (
        "capability SYS_ADMIN is refused",
        7,
        22,
        "roles.web.lockdown.capabilities[0]",
    ),
    "capability_unknown": (
        "expected a Linux capability such as 'NET_BIND_SERVICE', got 'FLY'",
        7,
        22,
        "roles.web.lockdown.capabilities[0]",
    ),
    "capability_twice": (
        "capability NET_RAW is listed twice",
        7,
        7,
        "roles.web.lockdown.capabilities",
    ),
    # Image references.
    "image_option": (
        "cannot start with '-' (it would read as an option)",
        4,
        19,
        "roles.web.base.image",
    ),
    "image_grammar": ("expected an image reference such as", 4, 19, "roles.web.base.image"),
    # Sizes and numbers.
    "memory_small": (
        "expected a memory size from 6m to 1024g, got '1k'",
        6,
        25,
        "roles.web.resources.memory",
    ),
    "memory_unicode": (
        "expected a memory size such as '512m'",
        6,
        25,
        "roles.web.resources.memory",
    ),
    "duration_unicode": ("expected a duration such as", 6, 35, "roles.web.health.interval"),
    # Engine names that would collide.
    "volume_collision": (
        "role 'a' volume 'b-c' and role 'a-b' volume 'c' would both be the engine volume",
        10,
        15,
        "roles.a.volumes.b-c",
    ),
    "role_fleet_prefix": ("role 'shop-edge' starts with 'shop-'", 3, 3, "roles.shop-edge"),
    # The edge's address.
    "edge_ipv6": ("publishes on IPv4 addresses only", 2, 17, "edge.address"),
    "edge_not_ip": (
        "expected an IP address such as '127.0.0.1', got '999.1.1.1'",
        2,
        17,
        "edge.address",
    ),
    # Health commands and tmpfs folders (issue 10).
    "health_placeholder_inside": (
        "{host} must be a whole argument",
        7,
        29,
        "roles.db.health.command[1]",
    ),
    "tmpfs_at_secrets": (
        "a tmpfs cannot be mounted at /run/secrets: /run/secrets holds the instance's secrets",
        7,
        32,
        "roles.db.run.tmpfs[1]",
    ),
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
    assert for_error(error) == ExitCode.USAGE == 2
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


# --- files the spec names: confined to its folder, symlinks resolved -------------------

ROLE = "fleet: shop\nroles:\n  web:\n    base: {debian: bookworm}\n    run: {command: [web]}\n"


def write_spec(folder: Path, extra: str, head: str = "") -> Path:
    spec = folder / "corral.yaml"
    spec.write_text(head + ROLE + extra)
    return spec


@pytest.mark.parametrize(
    ("extra", "link", "target", "expected", "path"),
    [
        (
            "    build: {copy: [{src: secret, dest: /srv/secret}]}\n",
            "secret",
            "/etc/shadow",
            "'secret' leads outside the spec's folder (to /etc/shadow)",
            "roles.web.build.copy[0].src",
        ),
        (
            "    build: {copy: [{src: app/, dest: /srv/app}]}\n",
            "app",
            "{outside}",
            "'app/' leads outside the spec's folder",
            "roles.web.build.copy[0].src",
        ),
        ("    tests: [tests]\n", "tests", "/", "leads outside", "roles.web.tests[0]"),
        (
            "    volumes: {data: /var/lib/data}\n    fixtures: {data: seed}\n",
            "seed",
            "/",
            "'seed' leads outside",
            "roles.web.fixtures.data",
        ),
    ],
    ids=["file-to-shadow", "folder-outside", "tests-to-root", "fixture-to-root"],
)
def test_symlinks_out_of_the_spec_folder(
    tmp_path: Path, extra: str, link: str, target: str, expected: str, path: str
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "project").mkdir()
    spec = write_spec(tmp_path / "project", extra)
    (tmp_path / "project" / link).symlink_to(target.format(outside=tmp_path / "outside"))
    [diagnostic] = problems(spec)
    assert expected in diagnostic.message
    assert diagnostic.path == path
    assert diagnostic.line == ROLE.count("\n") + extra.count("\n")  # the extra's last line


def test_containerfile_symlinked_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    spec = tmp_path / "project" / "corral.yaml"
    spec.write_text(
        "fleet: shop\nroles:\n  web:\n    base: {containerfile: cf}\n    run: {command: [web]}\n"
    )
    (tmp_path / "project" / "cf").symlink_to(tmp_path / "Containerfile")
    [diagnostic] = problems(spec)
    assert "'cf' leads outside the spec's folder" in diagnostic.message
    assert (diagnostic.line, diagnostic.column, diagnostic.path) == (
        4,
        27,
        "roles.web.base.containerfile",
    )


def test_symlinks_inside_the_spec_folder_are_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "app.py").write_text("print(1)\n")
    (tmp_path / "app").symlink_to("real")
    spec = write_spec(tmp_path, "    build: {copy: [{src: app/app.py, dest: /srv/}]}\n")
    assert load_spec(spec).fleet.roles["web"].build.copy_[0].src == "app/app.py"


@pytest.mark.parametrize(
    ("extra", "make", "expected"),
    [
        (
            "    volumes: {data: /var/lib/data}\n    fixtures: {data: seed}\n",
            "file",
            "not a folder",
        ),
        ("    base: {containerfile: cf}\n", "folder", "'cf' is not a regular file"),
    ],
    ids=["fixture-is-a-file", "containerfile-is-a-folder"],
)
def test_file_kinds(tmp_path: Path, extra: str, make: str, expected: str) -> None:
    text = ROLE.replace("    base: {debian: bookworm}\n", "") if "base" in extra else ROLE
    spec = tmp_path / "corral.yaml"
    spec.write_text(text + extra)
    target = tmp_path / ("seed" if "seed" in extra else "cf")
    if make == "file":
        target.write_text("x\n")
    else:
        target.mkdir()
    [diagnostic] = problems(spec)
    assert expected in diagnostic.message


def test_the_host_root_is_never_a_build_context_or_a_test(tmp_path: Path) -> None:
    """A spec kept in / must not make / a build context, a test folder or a fixture."""
    spec = write_spec(tmp_path, "")
    loaded = load_spec(spec)
    role = loaded.fleet.roles["web"].model_copy(
        update={
            "base": ContainerfileBase(containerfile="Containerfile"),
            "tests": (".",),
        }
    )
    fleet = loaded.fleet.model_copy(update={"roles": {"web": role}})
    at_root = LoadedSpec(fleet=fleet, path=Path("/corral.yaml"), root=Path("/"))
    found = {d.path: d.message for d in check_files(at_root)}
    assert "would hand the host's root folder" in found["roles.web.base.containerfile"]
    assert "would hand the host's root folder" in found["roles.web.tests[0]"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("link.db", "the state file 'link.db' is a symlink"),
        ("fifo.db", "the state file 'fifo.db' is not a regular file"),
        ("~nosuchuser-corral/state.db", "cannot find the state file"),
    ],
)
def test_state_must_be_a_plain_file(tmp_path: Path, state: str, expected: str) -> None:
    (tmp_path / "real.db").write_text("")
    (tmp_path / "link.db").symlink_to(tmp_path / "real.db")
    os.mkfifo(tmp_path / "fifo.db")
    spec = write_spec(tmp_path, "", head=f"state: {state!r}\n")
    [diagnostic] = problems(spec)
    assert expected in diagnostic.message
    assert (diagnostic.line, diagnostic.column, diagnostic.path) == (1, 8, "state")


def test_state_may_live_outside_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    spec = write_spec(tmp_path / "project", "", head=f"state: {tmp_path / 'var' / 'x.db'}\n")
    assert load_spec(spec).state_path == tmp_path / "var" / "x.db"


# --- bounds that keep corral fast ------------------------------------------------------


def items(count: int, make: str) -> str:
    return ", ".join(make.format(i=i) for i in range(count))


@pytest.mark.parametrize(
    ("extra", "path", "limit"),
    [
        (
            "    build: {copy: [" + items(101, "{{src: ., dest: /s{i}}}") + "]}\n",
            "roles.web.build.copy",
            100,
        ),
        ("    build: {run: [" + items(101, "s{i}") + "]}\n", "roles.web.build.run", 100),
        ("    tests: [" + items(101, "t{i}") + "]\n", "roles.web.tests", 100),
        ("    volumes: {" + items(33, "v{i}: /srv/v{i}") + "}\n", "roles.web.volumes", 32),
        ("    after: [" + items(101, "web") + "]\n", "roles.web.after", 100),
    ],
    ids=["copy", "run", "tests", "volumes", "after"],
)
def test_counts_are_bounded(tmp_path: Path, extra: str, path: str, limit: int) -> None:
    spec = write_spec(tmp_path, extra)
    found = problems(spec)
    assert any(
        d.path == path and d.line == 6 and f"expected at most {limit} entries" in d.message
        for d in found
    ), [str(d) for d in found]


def test_run_section_counts_are_bounded(tmp_path: Path) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        "fleet: shop\nroles:\n  web:\n    base: {debian: bookworm}\n    run:\n"
        f"      command: [{items(257, 'a{i}')}]\n"
        f"      env: {{{items(257, 'E{i}: x')}}}\n"
        f"      secrets: [{items(65, 'S{i}')}]\n"
    )
    found = {d.path: (d.line, d.message) for d in problems(spec)}
    assert found == {
        "roles.web.run.command": (6, "expected at most 256 entries, got 257"),
        "roles.web.run.env": (7, "expected at most 256 entries, got 257"),
        "roles.web.run.secrets": (8, "expected at most 64 entries, got 65"),
    }


def test_packages_are_bounded(tmp_path: Path) -> None:
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        "fleet: shop\nroles:\n  web:\n"
        f"    base: {{debian: bookworm, packages: [{items(1001, 'p{i}')}]}}\n"
        "    run: {command: [web]}\n"
    )
    [diagnostic] = problems(spec)
    assert diagnostic.message == "expected at most 1000 entries, got 1001"
    assert (diagnostic.line, diagnostic.path) == (4, "roles.web.base.packages")


def test_roles_are_bounded(tmp_path: Path) -> None:
    roles = "".join(f"  r{i}: {{base: {{image: x}}, run: {{command: [a]}}}}\n" for i in range(101))
    spec = tmp_path / "corral.yaml"
    spec.write_text("fleet: shop\nroles:\n" + roles)
    [diagnostic] = problems(spec)
    assert diagnostic.message == "expected at most 100 entries, got 101"
    assert (diagnostic.line, diagnostic.path) == (2, "roles")
