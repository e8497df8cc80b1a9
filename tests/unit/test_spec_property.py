"""Property tests for the spec loader.

1. Any spec the schema allows, written out as YAML, loads and means what was written.
2. Whatever the input (random bytes, random YAML, a valid spec with keys deleted or values
   replaced), ``load_spec`` returns or raises ``SpecError``, never anything else, and every
   diagnostic for a file that parsed as a YAML mapping has a real line number.
"""

from __future__ import annotations

import io
import operator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from corral.errors import SpecError
from corral.spec.load import LoadedSpec, load_spec
from corral.spec.model import Fleet

SETTINGS = settings(
    max_examples=200,
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


@st.composite
def roles(draw: st.DrawFn, earlier: list[str], public: int | None) -> dict[str, Any]:
    port = draw(st.integers(1, 65535)) if public or draw(st.booleans()) else None
    role: dict[str, Any] = {"base": draw(bases()), "run": draw(runs(port))}
    if port is not None:
        maybe(draw, "health", healths(), role)
    if public is not None:
        role["public"] = public
    copies = st.lists(
        st.builds(lambda s, d: {"src": s, "dest": d}, st.sampled_from(FILES["copy"]), abs_paths),
        max_size=2,
    )
    maybe(
        draw,
        "build",
        st.builds(lambda c, r: {"copy": c, "run": r}, copies, st.lists(text, max_size=2)),
        role,
    )
    maybe(draw, "replicas", st.integers(0, 100), role)
    maybe(draw, "volumes", st.dictionaries(names, mount_paths, max_size=1), role)
    maybe(draw, "tests", st.lists(st.just(FILES["test"]), max_size=1), role)
    maybe(
        draw,
        "after",
        st.lists(st.sampled_from(earlier), unique=True) if earlier else st.builds(list),
        role,
    )
    maybe(
        draw,
        "deploy",
        st.builds(
            lambda s, k, d: {"strategy": s, "max_surge": 1, "keep_old": k, "drain": d},
            st.sampled_from(["rolling", "blue-green"]),
            durations,
            durations,
        ),
        role,
    )
    maybe(
        draw,
        "lockdown",
        st.builds(
            lambda c, a: {"capabilities": c, "allow_ssh": a},
            st.lists(capabilities, max_size=2, unique=True),
            st.booleans(),
        ),
        role,
    )
    maybe(
        draw,
        "resources",
        st.builds(
            lambda m, c, p: {"memory": m, "cpus": c, "pids": p},
            memory_sizes,
            st.floats(0.01, 64),
            st.integers(16, 100000),
        ),
        role,
    )
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


# --- strategies for junk -----------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    text,
    st.sampled_from(["", "500ms", "/x", "root", "bookworm", "web", "1", "true"]),
)
KEYS = [
    "fleet",
    "roles",
    "version",
    "state",
    "web",
    "db",
    "base",
    "debian",
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
    "health",
    "http",
    "tcp",
    "after",
    "replicas",
    "tests",
    "public",
    "deploy",
]
keys = st.one_of(st.sampled_from(KEYS), text, st.integers(), st.booleans())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)
yaml_ish = st.text(
    st.sampled_from(list("abc:-[]{}#&*!|>'\"%@`,? \t\n0123456789.~\\")), max_size=200
)


def dump(data: Any, flow: bool | None = False) -> str:
    yaml = YAML(typ="rt")
    yaml.default_flow_style = flow
    yaml.representer.ignore_aliases = lambda *args: True
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


def reads_back(text: str, data: Any) -> bool:
    """Whether ``text`` reads back as ``data``. ruamel's emitter has rare quoting bugs (it
    writes '?0' or ':s' bare in flow style); such examples test ruamel, not the loader."""
    try:
        return bool(YAML(typ="safe", pure=True).load(text) == data)
    except YAMLError:
        return False


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "files").mkdir()
    (root / "t").mkdir()
    for name in ("files/app.py", "Containerfile", "t/smoke.sh"):
        (root / name).write_text("x\n")
    return root / "corral.yaml"


def load_or_diagnose(path: Path, parsed_as_mapping: bool) -> LoadedSpec | None:
    """Load ``path``; only SpecError may escape, with sensibly located diagnostics."""
    try:
        return load_spec(path)
    except SpecError as error:
        assert error.diagnostics
        for diagnostic in error.diagnostics:
            assert diagnostic.message
            assert diagnostic.line >= 0 and diagnostic.column >= 0
            if parsed_as_mapping or diagnostic.line == 0:
                assert diagnostic.line >= 1 or len(error.diagnostics) == 1, str(diagnostic)
            if parsed_as_mapping:
                assert diagnostic.line >= 1 and diagnostic.column >= 1, str(diagnostic)
        return None


# --- properties --------------------------------------------------------------------


@SETTINGS
@given(spec=specs(), flow=st.sampled_from([False, None, True]))
def test_valid_specs_load_and_round_trip(
    project: Path, spec: dict[str, Any], flow: bool | None
) -> None:
    text = dump(spec, flow)
    assume(reads_back(text, spec))
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


@SETTINGS
@given(data=st.binary(max_size=1000))
def test_random_bytes(project: Path, data: bytes) -> None:
    project.write_bytes(data)
    load_or_diagnose(project, parsed_as_mapping=False)


@SETTINGS
@given(data=yaml_ish)
def test_random_yaml_looking_text(project: Path, data: str) -> None:
    project.write_text(data, encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=False)


@SETTINGS
@given(data=st.dictionaries(keys, junk, max_size=6), flow=st.sampled_from([False, None, True]))
def test_random_yaml_structure(project: Path, data: dict[Any, Any], flow: bool | None) -> None:
    project.write_text(dump(data, flow), encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=True)


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


@SETTINGS
@given(spec=specs(), data=st.data())
def test_mutated_specs(project: Path, spec: dict[str, Any], data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 4))):
        places = slots(spec)
        container, key = data.draw(st.sampled_from(places))
        action = data.draw(st.sampled_from(["delete", "replace", "rename"]))
        if action == "delete":
            del container[key]
        elif action == "replace":
            container[key] = data.draw(junk)
        elif isinstance(container, dict):
            container[data.draw(keys)] = container.pop(key)
        if not spec:
            break
    project.write_text(dump(spec), encoding="utf-8")
    load_or_diagnose(project, parsed_as_mapping=True)
