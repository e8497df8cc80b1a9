"""One YAML meaning: a spec is read as YAML 1.2 with the core schema, and nothing else.

Each class of input has its own test: what the core schema makes of plain scalars, the
refused YAML features (directives, tags, merge keys, a second document, characters YAML
versions read differently), env values kept as written, NUL bytes, limits. The files in
``specs/bad/yaml/`` pair with ``CORPUS`` below.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from corral.errors import Diagnostic, SpecError
from corral.spec.load import MAX_DIAGNOSTICS, load_spec
from corral.spec.parse import MAX_NODES, SourceFloat, SourceInt, parse, resolve_plain

CORPUS_DIR = Path(__file__).parent / "specs" / "bad" / "yaml"

HEAD = "fleet: shop\nroles:\n  web:\n    base: {image: localhost/web}\n    run:\n"


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[Diagnostic]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return caught.value.diagnostics


def one_problem(tmp_path: Path, text: str) -> Diagnostic:
    found = problems(spec_file(tmp_path, text))
    assert len(found) == 1, [str(d) for d in found]
    return found[0]


# --- the core schema ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", None),
        ("~", None),
        ("null", None),
        ("NULL", None),
        ("true", True),
        ("False", False),
        ("TRUE", True),
        ("0", 0),
        ("-17", -17),
        ("+5", 5),
        ("012", 12),  # decimal in YAML 1.2, octal (10) in 1.1
        ("0o17", 15),
        ("0x1F", 31),
        ("1.5", 1.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("-1.5E-2", -0.015),
        ("1e400", math.inf),
        (".inf", math.inf),
        ("-.Inf", -math.inf),
    ],
)
def test_core_schema_values(text: str, value: object) -> None:
    got = resolve_plain(text)
    assert got == value and type(got) in (type(value), SourceInt, SourceFloat)
    if isinstance(got, SourceInt | SourceFloat):
        assert got.text == text


@pytest.mark.parametrize(
    "text",
    [
        # YAML 1.1 booleans, sexagesimals, timestamps, binary, underscores: all text in 1.2
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "1:20",
        "190:20:30.15",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "0b101",
        "1_000",
        "0x_1F",
        "=",
        "<<",
        "+0x1F",  # the core schema gives hex and octal no sign
        "0o",
        "0x",
        "1e",
        ".",
        "-",
        "+.nan",
        "nan",
        "inf",
        "١٢",  # Arabic-Indic digits: text, never a number
        "\uff11\uff12",  # fullwidth digits
        "Null ",
        "12\n",
    ],
)
def test_everything_else_is_text(text: str) -> None:
    assert resolve_plain(text) == text


def test_nan_is_a_float() -> None:
    value = resolve_plain(".NaN")
    assert isinstance(value, float) and math.isnan(value)


def test_quoted_scalars_are_always_text(tmp_path: Path) -> None:
    tree = parse("a: '1'\nb: \"true\"\nc: |\n  null\nd: >-\n  0x1F\n", "x")
    assert tree == {"a": "1", "b": "true", "c": "null\n", "d": "0x1F"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    replicas: 0x10\n", 16),
        ("    replicas: 0o10\n", 8),
        ("    replicas: 010\n", 10),
        ("    replicas: +3\n", 3),
    ],
)
def test_integers_in_integer_fields(tmp_path: Path, line: str, expected: int) -> None:
    spec = load_spec(spec_file(tmp_path, HEAD + "      command: [serve]\n" + line))
    assert spec.fleet.roles["web"].replicas == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    replicas: 1_000\n", "got '1_000'"),
        ("    replicas: 0b11\n", "got '0b11'"),
        ("    replicas: 1:20\n", "got '1:20'"),
        ("    replicas: ١٢\n", "got '١٢'"),
        ("    replicas: 2001-12-14\n", "got '2001-12-14'"),
        ("    lockdown: {allow_ssh: yes}\n", "expected true or false, got 'yes'"),
        ("    lockdown: {allow_ssh: on}\n", "expected true or false, got 'on'"),
        ("    resources: {cpus: 1e400}\n", "got inf"),
        ("    resources: {cpus: .nan}\n", "got nan"),
        ("    resources: {cpus: .inf}\n", "got inf"),
        ("    deploy: {drain: .inf}\n", "from 0 to 86400 seconds, got inf"),
        ("    deploy: {drain: .nan}\n", "from 0 to 86400 seconds, got nan"),
    ],
)
def test_what_yaml_11_would_convert_is_refused_as_text(
    tmp_path: Path, line: str, expected: str
) -> None:
    found = one_problem(tmp_path, HEAD + "      command: [serve]\n" + line)
    assert expected in found.message
    assert found.line == 7


def test_booleans_in_boolean_fields(tmp_path: Path) -> None:
    for word, value in (("true", True), ("False", False), ("TRUE", True)):
        text = HEAD + f"      command: [serve]\n    lockdown: {{allow_ssh: {word}}}\n"
        spec = load_spec(spec_file(tmp_path, text))
        assert spec.fleet.roles["web"].lockdown.allow_ssh is value


# --- env values keep their text --------------------------------------------------------

ENV_TEXTS = ["1.10", "01234", "0x1F", "0o17", "1e400", "-0", "+1", ".inf", "1.0", "007.50"]


def test_env_values_keep_their_exact_text(tmp_path: Path) -> None:
    env = "".join(f"        V{i}: {text}\n" for i, text in enumerate(ENV_TEXTS))
    spec = load_spec(spec_file(tmp_path, HEAD + "      command: [serve]\n      env:\n" + env))
    got = spec.fleet.roles["web"].run.env
    assert got == {f"V{i}": text for i, text in enumerate(ENV_TEXTS)}
    assert spec.role_section("web")["run"]["env"]["V0"] == "1.10"


def test_env_text_the_11_way_stays_text(tmp_path: Path) -> None:
    text = HEAD + "      command: [serve]\n      env: {A: yes, B: 1:20, C: 2001-12-14, D: 1_0}\n"
    env = load_spec(spec_file(tmp_path, text)).fleet.roles["web"].run.env
    assert env == {"A": "yes", "B": "1:20", "C": "2001-12-14", "D": "1_0"}


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        ("true", 'quote it ("true")'),
        ("FALSE", 'quote it ("false")'),
        ("~", 'write "" for empty text'),
        ("null", 'write "" for empty text'),
        ("", 'write "" for empty text'),
    ],
)
def test_env_booleans_and_null_are_refused_with_advice(
    tmp_path: Path, value: str, advice: str
) -> None:
    text = HEAD + f"      command: [serve]\n      env:\n        FLAG: {value}\n"
    found = one_problem(tmp_path, text.replace("FLAG: \n", "FLAG:\n"))
    assert advice in found.message
    assert found.path == "roles.web.run.env.FLAG"
    assert found.line == 8


def test_a_number_outside_env_is_still_a_number(tmp_path: Path) -> None:
    found = one_problem(tmp_path, HEAD + "      command: [serve, 1.10]\n")
    assert "expected text" in found.message and found.path == "roles.web.run.command[1]"


# --- refused YAML features ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("%YAML 1.1", "only YAML 1.2 is read; found '%YAML 1.1' (YAML 1.1 reads yes as true"),
        ("%YAML 1.3", "only YAML 1.2 is read; found '%YAML 1.3'"),
        ("%YAML 2.0", "only YAML 1.2 is read; found '%YAML 2.0'"),
        ("%YAML 1.0", "only YAML 1.2 is read"),
        ("%TAG ! tag:example.com,2026:", "%TAG directives are not allowed"),
    ],
)
def test_directives_other_than_yaml_12_are_refused(
    tmp_path: Path, directive: str, expected: str
) -> None:
    found = one_problem(tmp_path, f"{directive}\n---\n" + HEAD + "      command: [serve]\n")
    assert expected in found.message
    assert (found.line, found.column) == (1, 1)


def test_yaml_12_directive_is_accepted(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, "%YAML 1.2\n---\n" + HEAD + "      command: [serve]\n"))
    assert spec.fleet.fleet == "shop"


@pytest.mark.parametrize(
    ("text", "expected", "line"),
    [
        ("fleet: shop\n<<: {roles: {}}\n", "merge keys (<<) are not allowed", 2),
        ("fleet: shop\nroles: {<<: {}}\n", "merge keys (<<) are not allowed", 2),
        ("fleet: !!str shop\n", "YAML tags (!!str) are not allowed", 1),
        ("fleet: ! shop\n", "YAML tags (!) are not allowed", 1),
        ("fleet: !local shop\n", "YAML tags (!local) are not allowed", 1),
        ("fleet: &a shop\nroles: *a\n", "YAML aliases (*a) are not allowed", 2),
        ("fleet: shop\n---\nfleet: again\n", "a spec is one document", 2),
        ("fleet: shop\n...\n---\n", "a spec is one document", 3),
        ("fleet: shop\nfleet: again\n", "duplicate key 'fleet' (first on line 1)", 2),
        ("fleet: shop\n? [a]\n: 1\n", "expected a text key, got a list", 2),
        ("fleet: shop\n? {a: 1}\n: 1\n", "expected a text key, got a mapping", 2),
        ("fleet: shop\n1: x\n", "expected a text key, got 1", 2),
        ("fleet: shop\n~: x\n", "expected a text key, got nothing (null)", 2),
    ],
)
def test_refused_features(tmp_path: Path, text: str, expected: str, line: int) -> None:
    found = problems(spec_file(tmp_path, text))
    assert any(expected in d.message and d.line == line for d in found), [str(d) for d in found]


def test_a_quoted_merge_key_is_only_a_key(tmp_path: Path) -> None:
    text = HEAD.replace("    base:", '    "<<": {replicas: 3}\n    base:') + "      command: [a]\n"
    found = one_problem(tmp_path, text)
    assert found.message.startswith("unknown key '<<'")


@pytest.mark.parametrize(
    ("char", "name"),
    [("\x85", "U+0085"), ("\u2028", "U+2028"), ("\u2029", "U+2029"), ("\ufeff", "U+FEFF")],
)
def test_characters_yaml_versions_read_differently(tmp_path: Path, char: str, name: str) -> None:
    found = one_problem(tmp_path, HEAD + f"      command: [serve{char}now]\n")
    assert name in found.message and "read differently" in found.message
    assert (found.line, found.column) == (6, 22)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_control_characters_in_the_file(tmp_path: Path, char: str) -> None:
    found = one_problem(tmp_path, HEAD + f"      command: [serve{char}]\n")
    assert f"U+{ord(char):04X}" in found.message
    assert (found.line, found.column) == (6, 22)


def test_nul_escapes_are_refused_wherever_they_are(tmp_path: Path) -> None:
    text = HEAD + '      command: [serve, "a\\0b"]\n      env: {"X\\0": "1", Y: "a\\x00"}\n'
    found = problems(spec_file(tmp_path, text))
    assert [(d.path, d.line) for d in found if "NUL" in d.message] == [
        ("roles.web.run.command[1]", 6),
        ("roles.web.run.env", 7),
        ("roles.web.run.env.Y", 7),
    ]


def test_escaped_line_separator_is_fine(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, HEAD + '      command: ["a\\u2028b", "\\tc"]\n'))
    assert spec.fleet.roles["web"].run.command == ("a\u2028b", "\tc")


# --- what used to crash ----------------------------------------------------------------


def test_comment_lines_between_a_key_and_its_value(tmp_path: Path) -> None:
    # YAML test suite P94K; ruamel's round-trip loader raised NotImplementedError here
    text = (
        "fleet:    # the fleet\n        # is named\n  shop\nroles:\n  web:\n"
        "    base:\n    # comment\n\n      # comment\n      image: localhost/web\n"
        "    run:\n      command:\n# at column 1\n      - serve\n"
    )
    spec = load_spec(spec_file(tmp_path, text))
    assert spec.fleet.fleet == "shop"
    assert spec.fleet.roles["web"].run.command == ("serve",)


def test_health_path_with_a_space(tmp_path: Path) -> None:
    text = HEAD + "      command: [serve]\n      port: 80\n    health: {http: /a b}\n"
    found = one_problem(tmp_path, text)
    assert "path" in found.message and "%" in found.message  # says to %-encode the space
    assert (found.path, found.line) == ("roles.web.health.http", 8)


@pytest.mark.parametrize("path", ["/a#b", "/a'b", '/a"b', "/a\\b", "/$x", "/é"])
def test_health_paths_haproxy_would_misread(tmp_path: Path, path: str) -> None:
    text = HEAD + f"      command: [serve]\n      port: 80\n    health: {{http: '{path}'}}\n"
    text = text.replace("'/a'b'", '"/a\'b"')
    found = one_problem(tmp_path, text)
    assert (found.path, found.line) == ("roles.web.health.http", 8)


def test_health_path_with_query_is_fine(tmp_path: Path) -> None:
    text = HEAD + "      command: [serve]\n      port: 80\n    health: {http: '/h?deep=1&x=%20'}\n"
    assert load_spec(spec_file(tmp_path, text)).fleet.roles["web"].health is not None


# --- positions ---------------------------------------------------------------------------


def test_positions_with_windows_line_endings(tmp_path: Path) -> None:
    text = (HEAD + "      command: [serve]\n    replicas: 500\n").replace("\n", "\r\n")
    found = one_problem(tmp_path, text)
    assert (found.line, found.column) == (7, 15)


def test_positions_count_characters_not_bytes(tmp_path: Path) -> None:
    text = HEAD + "      command: [sérvé, 1]\n"
    found = one_problem(tmp_path, text)
    assert (found.line, found.column, found.path) == (6, 24, "roles.web.run.command[1]")


def test_an_empty_value_points_at_its_key_line(tmp_path: Path) -> None:
    found = one_problem(
        tmp_path,
        "fleet:\n# note\n\n# more\nroles: {web: {}}\n".replace(
            "roles: {web: {}}", "roles:\n  web: {base: {image: x}, run: {command: [a]}}"
        ),
    )
    assert (found.path, found.line) == ("fleet", 1)


# --- limits ------------------------------------------------------------------------------


def test_too_many_values(tmp_path: Path) -> None:
    items = ", ".join("p" for _ in range(MAX_NODES))
    found = one_problem(tmp_path, HEAD + f"      command: [{items}]\n")
    assert f"more than {MAX_NODES} values" in found.message and found.line == 6


def test_diagnostics_are_capped(tmp_path: Path) -> None:
    env = "".join(f"        bad-{i}: x\n" for i in range(MAX_DIAGNOSTICS + 50))
    found = problems(spec_file(tmp_path, HEAD + "      command: [serve]\n      env:\n" + env))
    assert len(found) == MAX_DIAGNOSTICS + 1
    assert found[-1].message == "50 more problems not shown" and found[-1].line == 0
    assert all(d.line >= 8 for d in found[:-1])


def test_huge_integer(tmp_path: Path) -> None:
    found = one_problem(tmp_path, HEAD + "      command: [serve]\n    replicas: " + "9" * 5000)
    assert "an integer of 5000 digits" in found.message and found.line == 7


def test_huge_hex_integer_is_just_out_of_range(tmp_path: Path) -> None:
    found = one_problem(tmp_path, HEAD + "      command: [serve]\n    replicas: 0x" + "f" * 5000)
    assert "a very large integer" in found.message


# --- the corpus of bad specs --------------------------------------------------------------

# name: (expected substring, line, column, field path)
CORPUS: dict[str, tuple[str, int, int, str]] = {
    "yaml11_directive": ("only YAML 1.2 is read; found '%YAML 1.1'", 1, 1, ""),
    "yaml13_directive": ("only YAML 1.2 is read; found '%YAML 1.3'", 1, 1, ""),
    "tag_directive": ("%TAG directives are not allowed", 1, 1, ""),
    "merge_key": ("merge keys (<<) are not allowed", 4, 5, ""),
    "nul_in_command": ("NUL character", 6, 24, "roles.web.run.command[1]"),
    "env_null": ('write "" for empty text', 8, 14, "roles.web.run.env.MODE"),
    "env_false": ('quote it ("false")', 7, 22, "roles.web.run.env.VERBOSE"),
    "health_path_space": ("path", 8, 20, "roles.web.health.http"),
    "unicode_digits_port": (
        "expected an integer from 1 to 65535, got '١٢'",
        7,
        13,
        "roles.web.run.port",
    ),
    "complex_key": ("expected a text key, got a mapping", 2, 3, ""),
    "markup_in_name": ("got '[/oops]'", 1, 8, "fleet"),
    "second_document_empty": ("a spec is one document", 7, 1, ""),
    "bool_yes_is_text": (
        "expected true or false, got 'yes'",
        7,
        27,
        "roles.web.lockdown.allow_ssh",
    ),
    "sexagesimal_is_text": ("got '1:20'", 7, 15, "roles.web.replicas"),
    "underscore_number_is_text": ("got '1_000'", 7, 15, "roles.web.replicas"),
    "next_line_char": ("U+0085", 6, 22, ""),
    "line_separator": ("U+2028", 6, 22, ""),
}


def test_every_corpus_file_is_in_the_table() -> None:
    assert sorted(p.stem for p in CORPUS_DIR.glob("*.yaml")) == sorted(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus(name: str) -> None:
    expected, line, column, path = CORPUS[name]
    found = problems(CORPUS_DIR / f"{name}.yaml")
    assert len(found) == 1, [str(d) for d in found]
    assert expected in found[0].message
    assert (found[0].line, found[0].column, found[0].path) == (line, column, path), str(found[0])


# --- without libyaml -----------------------------------------------------------------------

SAME_EITHER_WAY = [
    HEAD + "      command: [serve, '1.10', 0x1F]\n      env: {A: 1.10, B: ~}\n",
    "%YAML 1.3\n---\nfleet: x\n",
    "%YAML 1.1\n---\nfleet: x\n",
    "fleet: x\nroles: {<<: {}}\n",
    "fleet: x\nfleet: y\n",
    "fleet: [a, {b: *c}]\n",
    "fleet: x\n---\nb: 1\n",
    "key:    # comment\n        # lines\n  value\n",
]


@pytest.mark.parametrize("text", SAME_EITHER_WAY)
def test_pure_python_parser_means_the_same(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Where PyYAML has no libyaml, its pure-Python parser gives the same tree or refusal."""

    def outcome() -> object:
        try:
            return parse(text, "f")
        except SpecError as error:
            return [(d.line, d.column, d.message.split(";")[0]) for d in error.diagnostics]

    with_libyaml = outcome()
    monkeypatch.setattr("yaml.__with_libyaml__", False)
    assert outcome() == with_libyaml


# --- where libyaml and YAML 1.2 disagree (found with the YAML test suite) -----------------


@pytest.mark.parametrize(
    ("text", "expected", "line"),
    [
        # 652Z, HM87: YAML 1.2 reads '?foo' in flow style as text, libyaml as the key foo
        ("fleet: {?foo: bar}\n", "a '?' glued to a value in flow style", 1),
        ("fleet: [?x]\n", "a '?' glued to a value in flow style", 1),
        ('fleet: [\n  ?"x"]\n', "a '?' glued to a value in flow style", 2),
        # Y2GN: YAML 1.2 reads the anchor 'an:chor', libyaml the anchor 'an' and ':chor value'
        ("fleet: &an:chor value\n", "YAML anchors (&an) are not allowed", 1),
        ("fleet: x\nroles: &r {}\n", "YAML anchors (&r) are not allowed", 2),
        # JEF9, L24T: a last line of spaces with no line break
        ("fleet: |\n  x\n   ", "the file ends in a line of only spaces", 3),
        ("fleet: x\n  ", "the file ends in a line of only spaces", 2),
    ],
)
def test_where_yaml_readers_disagree(tmp_path: Path, text: str, expected: str, line: int) -> None:
    found = one_problem(tmp_path, text)
    assert expected in found.message and found.line == line, str(found)


def test_an_alias_is_reported_before_its_anchor(tmp_path: Path) -> None:
    found = one_problem(tmp_path, "fleet: &a x\nroles: *a\n")
    assert "aliases (*a)" in found.message and found.line == 2


@pytest.mark.parametrize("text", ["fleet: {? foo: bar}\n", "fleet: ['?x', a?b]\n", "f: x\n"])
def test_question_marks_that_mean_one_thing(text: str) -> None:
    assert parse(text, "f") is not None
