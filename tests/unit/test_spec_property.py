"""Property tests for the spec loader.

1. Any spec the schema allows, written out as YAML, loads and means what was written.
2. Whatever the input, ``load_spec`` returns or raises ``SpecError``, never anything else,
   and every diagnostic for a file that parsed as a YAML mapping has a real position. The
   inputs: random bytes, arbitrary unicode text, YAML-looking text, generated YAML
   documents, valid specs with keys deleted, renamed or given hostile values (control
   characters, NUL, unicode digits, huge numbers, nan, very long text, deep nesting), and
   the example spec ``examples/corral.yaml`` mutated as text and as data.

Each test is sized to run in about a second: they run in CI every time.
"""

from __future__ import annotations

import json
import math
import operator
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from corral.errors import SpecError
from corral.spec.load import LoadedSpec, load_spec
from corral.spec.model import Fleet
from corral.spec.parse import parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sized(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


FILES = {"copy": ["files/app.py", "files"], "containerfile": "Containerfile", "test": "t/smoke.sh"}

# --- strategies for valid specs ----------------------------------------------------

LOWER, DIGITS, UPPER = "abcdefghijklmnopqrstuvwxyz", "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def word(first: str, rest: str, low: int, high: int) -> st.SearchStrategy[str]:
    """Text whose first character is from ``first`` and the others from ``rest``.

    (Cheaper to generate than ``st.from_regex``.)
    """
    return st.builds(
        operator.add, st.sampled_from(first), st.text(rest, min_size=low, max_size=high)
    )


names = word(LOWER, LOWER + DIGITS + "-", 0, 12).filter(lambda n: not n.startswith("corral-"))
env_names = word(LOWER + UPPER + "_", LOWER + UPPER + DIGITS + "_", 0, 10)
text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")),
    min_size=1,
    max_size=20,
)
# Paths in the image are in normal form: no '.' or '..' segments, no '//'.
segments = word(LOWER + DIGITS + "_", LOWER + DIGITS + "_.-", 0, 6)
abs_paths = st.lists(segments, max_size=3).map(lambda parts: "/" + "/".join(parts))
mount_paths = st.lists(segments, min_size=1, max_size=2).map(lambda p: "/srv/" + "/".join(p))
url_paths = st.text(LOWER + DIGITS + "-._~!&()*+,;=:@/", max_size=20).map(lambda p: "/" + p)
images = st.builds(
    operator.add,
    word(LOWER + DIGITS, LOWER + DIGITS, 0, 8),
    st.sampled_from(["", ":12", ":latest", ":v1.2-rc_3"]),
)
capabilities = st.sampled_from(["NET_BIND_SERVICE", "CAP_NET_RAW", "chown", "KILL"])
memory_sizes = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(6, 999), st.sampled_from(["m", "g"])),
    st.integers(6 * 1024, 10**6).map(lambda n: f"{n}k"),
)
users = word(LOWER + "_", LOWER + DIGITS + "_-", 0, 10).filter(lambda u: u != "root")
durations = st.one_of(
    st.integers(0, 86400),
    st.floats(0, 86400, allow_nan=False),
    st.sampled_from(["500ms", "2s", "5m", "1h", "0.5s", " 3 s"]),
)


def maybe(draw: st.DrawFn, key: str, strategy: st.SearchStrategy[Any], out: dict[str, Any]) -> None:
    """Set ``out[key]`` from ``strategy`` half of the time (optional fields)."""
    if draw(st.booleans()):
        out[key] = draw(strategy)


@st.composite
def bases(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["debian", "image", "containerfile"]))
    if kind == "image":
        return {"image": draw(images)}
    if kind == "containerfile":
        return {"containerfile": FILES["containerfile"]}
    base: dict[str, Any] = {"debian": draw(st.sampled_from(["bookworm", "trixie", "bullseye"]))}
    maybe(
        draw,
        "packages",
        st.lists(word(LOWER + DIGITS, LOWER + DIGITS + "+.-", 1, 10)),
        base,
    )
    maybe(draw, "variant", st.sampled_from(["apt", "minbase", "essential"]), base)
    return base


@st.composite
def healths(draw: st.DrawFn) -> dict[str, Any]:
    health: dict[str, Any] = {"http": draw(url_paths)} if draw(st.booleans()) else {"tcp": True}
    maybe(draw, "interval", durations, health)
    maybe(draw, "timeout", durations, health)
    maybe(draw, "retries", st.integers(1, 1000), health)
    return health


@st.composite
def runs(draw: st.DrawFn, port: int | None) -> dict[str, Any]:
    run: dict[str, Any] = {"command": draw(st.lists(text, min_size=1, max_size=4))}
    if port is not None:
        run["port"] = port
    maybe(draw, "user", users, run)
    maybe(draw, "env", st.dictionaries(env_names, st.one_of(text, st.integers()), max_size=4), run)
    maybe(draw, "secrets", st.lists(env_names, max_size=3), run)
    maybe(draw, "workdir", abs_paths, run)
    return run


# Built once: strategies made inside a composite on every draw cost hypothesis a lot of
# bookkeeping (it describes each lambda by compiling its source).
BUILDS = st.builds(
    lambda c, r: {"copy": c, "run": r},
    st.lists(
        st.builds(lambda s, d: {"src": s, "dest": d}, st.sampled_from(FILES["copy"]), abs_paths),
        max_size=2,
    ),
    st.lists(text, max_size=2),
)
# A volume is its mount path, or a mapping with the path and whether it is shareable.
VOLUMES = st.dictionaries(
    names,
    mount_paths | st.builds(lambda p, s: {"path": p, "shareable": s}, mount_paths, st.booleans()),
    max_size=1,
)
TESTS = st.lists(st.just(FILES["test"]), max_size=1)
DEPLOYS = st.builds(
    lambda s, k, d: {"strategy": s, "max_surge": 1, "keep_old": k, "drain": d},
    st.sampled_from(["rolling", "blue-green"]),
    durations,
    durations,
)
LOCKDOWNS = st.builds(
    lambda c, a: {"capabilities": c, "allow_ssh": a},
    st.lists(capabilities, max_size=2, unique=True),
    st.booleans(),
)
RESOURCES = st.builds(
    lambda m, c, p: {"memory": m, "cpus": c, "pids": p},
    memory_sizes,
    st.floats(0.01, 64),
    st.integers(16, 100000),
)


@st.composite
def roles(draw: st.DrawFn, earlier: list[str], public: int | None) -> dict[str, Any]:
    port = draw(st.integers(1, 65535)) if public or draw(st.booleans()) else None
    role: dict[str, Any] = {"base": draw(bases()), "run": draw(runs(port))}
    if port is not None:
        maybe(draw, "health", healths(), role)
    if public is not None:
        role["public"] = public
    maybe(draw, "build", BUILDS, role)
    maybe(draw, "replicas", st.integers(0, 100), role)
    maybe(draw, "volumes", VOLUMES, role)
    if role.get("replicas", 1) > 1:  # replicas share a volume only when it says they may
        role["volumes"] = {
            name: {"path": v if isinstance(v, str) else v["path"], "shareable": True}
            for name, v in role.get("volumes", {}).items()
        }
    maybe(draw, "tests", TESTS, role)
    if earlier:
        maybe(draw, "after", st.lists(st.sampled_from(earlier), unique=True), role)
    maybe(draw, "deploy", DEPLOYS, role)
    maybe(draw, "lockdown", LOCKDOWNS, role)
    maybe(draw, "resources", RESOURCES, role)
    return role


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    fleet = draw(names)
    # A role named '<fleet>-...' could shadow a container's name on the fleet's network.
    role_names = draw(
        st.lists(
            names.filter(lambda n: not n.startswith(fleet + "-")), min_size=1, max_size=4
        ).filter(lambda found: len(set(found)) == len(found))
    )
    ports = draw(
        st.lists(
            st.integers(1, 65535), min_size=len(role_names), max_size=len(role_names), unique=True
        )
    )
    spec: dict[str, Any] = {"fleet": fleet}
    maybe(draw, "version", st.just(1), spec)
    maybe(draw, "state", st.sampled_from(["state.db", "var/corral.db", "/tmp/x.db"]), spec)
    spec["roles"] = {
        name: draw(roles(role_names[:i], ports[i] if draw(st.booleans()) else None))
        for i, name in enumerate(role_names)
    }
    # Role 'a-b' volume 'c' and role 'a' volume 'b-c' would share an engine volume name.
    volumes = [f"{n}-{v}" for n, r in spec["roles"].items() for v in r.get("volumes", {})]
    assume(len(set(volumes)) == len(volumes))
    return spec


# --- strategies for junk and hostile values ------------------------------------------

any_text = st.text(max_size=40)  # every code point but surrogates, control characters too
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t",
    "\n",
    "\r\n",
    "\x1b[2J",
    "\x7f",
    "\u0085",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\U0010ffff",
    "١٢",
    "\u0663",
    "\uff11\uff12",
    "[/oops]",
    "--privileged",
    "../../etc/shadow",
    "/",
    "/dev/null",
    "~root",
    "ALL",
    "1:20",
    "yes",
    "0x1F",
    "1e400",
    ".nan",
    "<<",
    "*a",
    "&a",
    "!tag",
    "%YAML 1.1",
    "x" * 5000,
    "é" * 3000,
]
hostile_text = st.one_of(st.sampled_from(HOSTILE_TEXT), any_text)
hostile_numbers = st.one_of(
    st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**63, 2**64, -(2**63), 10**100]),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 0.5, 100.5]),
    st.integers(),
    st.floats(),
)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


hostile_shapes = st.one_of(
    st.builds(nested, st.integers(1, 80)),
    st.builds(lambda n: ["p"] * n, st.integers(0, 3000)),
    st.builds(lambda n: {f"K{i}": "v" for i in range(n)}, st.integers(0, 300)),
    st.just({}),
    st.just([]),
    st.none(),
    st.booleans(),
)
hostile = st.one_of(hostile_text, hostile_numbers, hostile_shapes)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    text,
    hostile_text,
    st.sampled_from(["", "500ms", "/x", "root", "bookworm", "web", "1", "true"]),
)
KEYS = [
    "fleet",
    "roles",
    "version",
    "state",
    "edge",
    "web",
    "db",
    "base",
    "debian",
    "packages",
    "image",
    "containerfile",
    "build",
    "copy",
    "src",
    "dest",
    "run",
    "command",
    "port",
    "user",
    "env",
    "secrets",
    "workdir",
    "health",
    "http",
    "tcp",
    "after",
    "replicas",
    "volumes",
    "fixtures",
    "tests",
    "public",
    "deploy",
    "lockdown",
    "capabilities",
    "resources",
    "<<",
]
keys = st.one_of(st.sampled_from(KEYS), text, any_text, st.integers(), st.booleans(), st.none())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)
yaml_ish = st.text(
    st.sampled_from(list("abc:-[]{}#&*!|>'\"%@`,? \t\n0123456789.~\\<=")), max_size=200
)


class CoreDumper(yaml.CSafeDumper):
    """PyYAML's dumper, quoting every text YAML 1.2's core schema would read as a number.

    PyYAML resolves as YAML 1.1, so on its own it would write '0o17' or '1e5' bare."""


CoreDumper.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
CoreDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def dump(data: Any, flow: bool | None = False) -> str:
    return yaml.dump(
        data, Dumper=CoreDumper, default_flow_style=flow, allow_unicode=True, sort_keys=False
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "files").mkdir()
    (root / "t").mkdir()
    for name in ("files/app.py", "Containerfile", "t/smoke.sh"):
        (root / name).write_text("x\n")
    return root / "corral.yaml"


def load_or_diagnose(path: Path, parsed_as_mapping: bool) -> LoadedSpec | None:
    """Load ``path``; only SpecError may escape, with sensibly located diagnostics.

    A spec that loads must hold no NUL anywhere and give JSON-able role sections.
    """
    try:
        loaded = load_spec(path)
    except SpecError as error:
        assert error.diagnostics
        for diagnostic in error.diagnostics:
            assert diagnostic.message and str(diagnostic)
            assert diagnostic.line >= 0 and diagnostic.column >= 0
            if diagnostic.message.endswith("not shown"):
                continue  # the count of problems past the cap belongs to no position
            if parsed_as_mapping or diagnostic.line == 0:
                assert diagnostic.line >= 1 or len(error.diagnostics) == 1, str(diagnostic)
            if parsed_as_mapping:
                assert diagnostic.line >= 1 and diagnostic.column >= 1, str(diagnostic)
        return None
    for role in loaded.fleet.roles:
        assert "\\u0000" not in json.dumps(loaded.role_section(role))
    assert "\x00" not in loaded.fleet.model_dump_json()
    return loaded


def slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) pair inside ``node``."""
    found: list[tuple[Any, Any]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        found.append((node, key))
        found += slots(value)
    return found


def mutate(tree: Any, data: st.DataObject, values: st.SearchStrategy[Any]) -> None:
    """Delete, replace (with a draw from ``values``) or rename 1 to 4 entries of ``tree``."""
    for _ in range(data.draw(st.integers(1, 4))):
        places = slots(tree)
        if not places:
            return
        container, key = data.draw(st.sampled_from(places))
        action = data.draw(st.sampled_from(["delete", "replace", "rename"]))
        if action == "delete":
            del container[key]
        elif action == "replace":
            container[key] = data.draw(values)
        elif isinstance(container, dict):
            container[data.draw(keys)] = container.pop(key)


# --- valid specs mean what they say ---------------------------------------------------


@sized(100)
@given(spec=specs(), flow=st.sampled_from([False, None, True]))
def test_valid_specs_load_and_round_trip(
    project: Path, spec: dict[str, Any], flow: bool | None
) -> None:
    text = dump(spec, flow)
    project.write_text(text, encoding="utf-8")
    loaded = load_spec(project)
    assert loaded.fleet == Fleet.model_validate(spec)
    assert loaded.fleet.fleet == spec["fleet"]
    assert list(loaded.fleet.roles) == list(spec["roles"])
    for name, role in spec["roles"].items():
        got = loaded.fleet.roles[name]
        assert list(got.run.command) == role["run"]["command"]
        assert got.run.port == role["run"].get("port")
        assert got.replicas == role.get("replicas", 1)
        assert loaded.role_section(name) == loaded.role_section(name)


# --- whatever the input, only SpecError ---------------------------------------------


@sized(150)
@given(data=st.binary(max_size=1000))
def test_random_bytes(project: Path, data: bytes) -> None:
    project.write_bytes(data)
    load_or_diagnose(project, parsed_as_mapping=False)


@sized(150)
@given(data=st.text(max_size=300))
def test_arbitrary_unicode_text(project: Path, data: str) -> None:
    project.write_text(data, encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=False)


@sized(150)
@given(data=yaml_ish)
def test_random_yaml_looking_text(project: Path, data: str) -> None:
    project.write_text(data, encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=False)


@sized(100)
@given(data=st.dictionaries(keys, junk, max_size=6), flow=st.sampled_from([False, None, True]))
def test_generated_yaml_documents(project: Path, data: dict[Any, Any], flow: bool | None) -> None:
    text = dump(data, flow)
    assume("\u2028" not in text and "\u2029" not in text)  # refused: no position to check
    project.write_text(text, encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=bool(data))


@sized(100)
@given(spec=specs(), data=st.data())
def test_mutated_specs(project: Path, spec: dict[str, Any], data: st.DataObject) -> None:
    mutate(spec, data, junk)
    project.write_text(dump(spec), encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=bool(spec))


@sized(100)
@given(spec=specs(), data=st.data())
def test_every_field_with_hostile_values(
    project: Path, spec: dict[str, Any], data: st.DataObject
) -> None:
    container, key = data.draw(st.sampled_from(slots(spec)))
    container[key] = data.draw(hostile)
    project.write_text(dump(spec, data.draw(st.sampled_from([False, None]))), encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=True)


# --- the example spec, mutated --------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/ (the spec and the files it names) to overwrite the spec in."""
    root = tmp_path_factory.mktemp("example") / "examples"
    shutil.copytree(EXAMPLES, root)
    return root / "corral.yaml"


EXAMPLE_TEXT = (EXAMPLES / "corral.yaml").read_text(encoding="utf-8")
SNIPPETS = [
    "\n",
    " ",
    "  ",
    "\t",
    "#",
    "# c\n",
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "'",
    '"',
    "&a ",
    "*a",
    "!",
    "%YAML 1.1\n",
    "%YAML 1.3\n---\n",
    "    # c\n        # d\n",
    "---\n",
    "<<: ",
    "? ",
    "|",
    ">",
    "\x00",
    "\u2028",
    "\u0661",
]


KEY_VALUE = re.compile(r"^( *)([\w-]+): +([^#\n]+)$", re.M)


def comment_between_key_and_value(text: str, index: int) -> str:
    """Move one 'key: value' line's value below comment lines (YAML test suite P94K)."""
    found = list(KEY_VALUE.finditer(text))
    if not found:
        return text
    match = found[index % len(found)]
    indent, key, value = match.groups()
    split = f"{indent}{key}:    # c\n{indent}        # d\n\n{indent}  {value}"
    return text[: match.start()] + split + text[match.end() :]


def line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]


@sized(150)
@given(data=st.data())
def test_example_mutated_as_text(example: Path, data: st.DataObject) -> None:
    text = EXAMPLE_TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.integers(0, 4)) == 0:
            text = comment_between_key_and_value(text, data.draw(st.integers(0, 100)))
            continue
        anywhere = st.integers(0, len(text))
        at = data.draw(st.one_of(anywhere, st.sampled_from(line_starts(text))))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=3)))
        text = text[:at] + insert + text[at + cut :]
    example.write_text(text, encoding="utf-8")
    load_or_diagnose(example, parsed_as_mapping=False)


@sized(100)
@given(data=st.data())
def test_example_mutated_as_data(example: Path, data: st.DataObject) -> None:
    tree = parse(EXAMPLE_TEXT, str(example))
    tree = json.loads(json.dumps(tree))  # plain dicts and lists
    mutate(tree, data, st.one_of(junk, hostile))
    example.write_text(dump(tree, data.draw(st.sampled_from([False, None]))), encoding="utf-8")
    load_or_diagnose(example, parsed_as_mapping=bool(tree))


def test_the_example_loads(example: Path) -> None:
    example.write_text(EXAMPLE_TEXT, encoding="utf-8")
    assert load_or_diagnose(example, parsed_as_mapping=True) is not None
