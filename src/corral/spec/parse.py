"""Read spec text as one YAML 1.2 document, core schema only, into a positioned tree.

A spec must mean one thing to every reader, so the rules are YAML 1.2's core schema and
nothing else (https://yaml.org/spec/1.2.2/#1032-tag-resolution): a plain scalar is null,
a boolean, an integer (decimal, ``0o`` octal, ``0x`` hexadecimal) or a float exactly when
it matches that schema's patterns, and text otherwise. So ``yes``, ``1:20``, ``2001-12-14``
and ``1_000`` are text, as YAML 1.2 says, whatever a YAML 1.1 reader would make of them.

libyaml (through PyYAML) only scans and parses the text into events, fast; this module
builds the values itself, which is where the schema is decided, and refuses what a spec
may not use, each with a position: ``%YAML`` directives other than 1.2 and ``%TAG``
directives, tags, aliases (nothing may expand into something huge), merge keys (``<<``),
a second document, nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES`` values, and
characters YAML does not allow or that YAML 1.1 and 1.2 read differently (NEL, U+2028,
U+2029). Integers and floats keep the text they were written as (``SourceInt.text``), so
a caller can use the exact text where the spec wants text (``run.env``).

The tree is ``PositionedMap`` / ``PositionedList`` (a dict and a list with ``lc``
positions, 0-based, shaped like ruamel.yaml's round-trip ``lc``) and plain scalars.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from corral.errors import Diagnostic, SpecError

MAX_DEPTH = 64
MAX_NODES = 100_000

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "ComplexKey",
    "Positioned",
    "PositionedList",
    "PositionedMap",
    "SourceFloat",
    "SourceInt",
    "parse",
]

# --- the tree ------------------------------------------------------------------------


@dataclass
class Positions:
    """Where a collection and its entries start (0-based), as ruamel's ``lc``.

    ``data[key]`` is ``[key line, key column, value line, value column]`` for a mapping
    and ``[line, column]`` for a list item.
    """

    line: int
    col: int
    data: dict[Any, list[int]] = field(default_factory=dict)

    def key(self, key: Any) -> tuple[int, int]:
        """Where ``key`` starts; KeyError when the mapping has no such key."""
        entry = self.data[key]
        return entry[0], entry[1]


class PositionedMap(dict[Any, Any]):
    """A YAML mapping with the positions of its keys and values."""

    lc: Positions


class PositionedList(list[Any]):
    """A YAML sequence with the positions of its items."""

    lc: Positions


Positioned = PositionedMap | PositionedList


class SourceInt(int):
    """An integer that remembers how it was written (``0x1F``, ``01234``)."""

    text: str


class SourceFloat(float):
    """A float that remembers how it was written (``1.10``, ``1e400``)."""

    text: str


@dataclass(frozen=True, eq=False)
class ComplexKey:
    """A mapping or a list used as a mapping key; never valid in a spec, kept to report."""

    what: str  # "a mapping" or "a list"


# --- the YAML 1.2 core schema ----------------------------------------------------------

_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_OCTAL = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = frozenset({".nan", ".NaN", ".NAN"})


class _Unreadable(ValueError):
    """A scalar the schema resolves but Python cannot build (a 5000-digit integer)."""


def resolve_plain(text: str) -> Any:
    """The value of a plain (unquoted, untagged) scalar under the YAML 1.2 core schema."""
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if text[:1] not in "-+.0123456789":
        return text  # the common case, decided without a regular expression
    number = _number(text)
    return text if number is None else number


def _number(text: str) -> SourceInt | SourceFloat | None:
    value: SourceInt | SourceFloat
    if _DECIMAL.fullmatch(text):
        try:
            value = SourceInt(text)
        except ValueError as exc:  # beyond Python's limit on digits
            digits = len(text.lstrip("+-"))
            raise _Unreadable(f"an integer of {digits} digits; quote it if it is text") from exc
    elif _OCTAL.fullmatch(text) or _HEX.fullmatch(text):
        value = SourceInt(text[2:], 8 if text[1] == "o" else 16)
    elif _FLOAT.fullmatch(text):
        value = SourceFloat(text)
    elif _INF.fullmatch(text):
        value = SourceFloat(-math.inf if text[0] == "-" else math.inf)
    elif text in _NAN:
        value = SourceFloat(math.nan)
    else:
        return None
    value.text = text
    return value


# --- reading -----------------------------------------------------------------------------

# What YAML 1.2 allows in a stream (5.1), less NEL, LS and PS: YAML 1.1 (and libyaml) read
# those as line breaks and YAML 1.2 as content, so a spec may not hold them unescaped.
# A byte-order mark is allowed only first, and the loader has removed it.
_FORBIDDEN = re.compile(
    "[^\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


def parse(text: str, file: str) -> Any:
    """The positioned tree of the one YAML document in ``text`` (None when there is none).

    Raises:
        SpecError: for any YAML problem or refused feature, located in ``file``.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # libyaml counts lines the same way
    _check_characters(text, file)
    _check_last_line(text, file)
    loader = yaml.CSafeLoader(text) if yaml.__with_libyaml__ else yaml.SafeLoader(text)
    try:
        return _Builder(file, text.split("\n")).build(loader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, file) from None
    except yaml.YAMLError as exc:  # reader errors; _check_characters should have caught them
        raise _fail(file, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_characters(text: str, file: str) -> None:
    found = _FORBIDDEN.search(text)
    if found is None:
        return
    head = text[: found.start()]
    line, column = head.count("\n") + 1, found.start() - head.rfind("\n")
    code = ord(found.group())
    message = f"the spec contains a character YAML does not allow (U+{code:04X})"
    if code in (0x85, 0x2028, 0x2029, 0xFEFF):
        message = (
            f"the spec contains U+{code:04X}, which YAML versions read differently; "
            "write it as an escape in double quotes"
        )
    raise _fail(file, message, line, column)


def _check_last_line(text: str, file: str) -> None:
    """Refuse a last line of only blanks with no line break: YAML readers disagree on what
    it adds to a block scalar (YAML test suite JEF9, L24T)."""
    last = text.rsplit("\n", 1)[-1]
    if last and not last.strip(" \t"):
        message = "the file ends in a line of only spaces; remove them or end it with a line break"
        raise _fail(file, message, text.count("\n") + 1, 1)


def _fail(file: str, message: str, line: int = 0, column: int = 0) -> SpecError:
    return SpecError([Diagnostic(file, line, column, "", message)])


def _yaml_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    # libyaml's wording, shortened: "did not find expected ':'" -> "expected ':'"
    problem = str(exc.problem or exc.context or "unreadable YAML")
    problem = problem.replace("did not find expected", "expected").replace(
        "could not find", "expected"
    )
    lines = text.split("\n")
    source = lines[line - 1] if 0 < line <= len(lines) else ""  # the mark may be at the end
    if "incompatible YAML document" in problem:
        return _fail(file, _version_message(source.strip()), line, column)
    if "tab" in problem or "'\\t'" in problem or source[column - 1 : column] == "\t":
        return _fail(file, "found a tab character; indent YAML with spaces, not tabs", line, column)
    if "max depth" in problem or "nest" in problem:
        return _fail(file, f"the spec is nested too deeply (over {MAX_DEPTH} levels)", line, column)
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    return _fail(file, f"invalid YAML: {problem}{context}", line, column)


def _version_message(directive: str) -> str:
    why = " (YAML 1.1 reads yes as true and 1:20 as 80)" if "1.1" in directive else ""
    return (
        f"only YAML 1.2 is read; found '{directive[:40]}'{why}: remove the directive "
        "or write '%YAML 1.2'"
    )


# --- building the tree from events ------------------------------------------------------


class _NoKey:
    """No key read yet for the next mapping entry."""


_NO_KEY = _NoKey()


@dataclass
class _Frame:
    """A collection being built, and for a mapping the key waiting for its value."""

    node: Positioned
    flow: bool = False
    key: Any = _NO_KEY
    key_at: tuple[int, int] = (0, 0)


class _Builder:
    """Turns one document's events into the positioned tree, refusing what a spec may not use.

    Iterative (an explicit stack), so no input can exhaust Python's recursion limit.
    """

    def __init__(self, file: str, lines: list[str]) -> None:
        self.file = file
        self.lines = lines
        self.stack: list[_Frame] = []
        self.nodes = 0
        self.root: Any = None
        self.documents = 0
        self.anchor: yaml.NodeEvent | None = None  # the first one, refused at the end

    def build(self, loader: yaml.SafeLoader | yaml.CSafeLoader) -> Any:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                break
            self._event(event)
        if self.anchor is not None:
            # Refused last, so that an alias (the real danger) is what gets reported.
            problem = (
                f"YAML anchors (&{self.anchor.anchor}) are not allowed in a spec: aliases are "
                "not, and YAML readers disagree on some anchor names"
            )
            raise self._refused(problem, self.anchor)
        return self.root

    def _event(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            self._count(event)
            self._refuse_tag(event)
            if event.anchor is not None and self.anchor is None:
                self.anchor = event
        if isinstance(event, yaml.ScalarEvent):
            self._refuse_flow_question_mark(event)
            self._add(self._scalar(event), event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self._refuse_flow_question_mark(event)
            self._open(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = self.stack.pop()
            self._add(frame.node, None, (frame.node.lc.line, frame.node.lc.col))
        elif isinstance(event, yaml.AliasEvent):
            problem = f"YAML aliases (*{event.anchor}) are not allowed in a spec; write it out"
            raise self._refused(problem, event)
        elif isinstance(event, yaml.DocumentStartEvent):
            self._document(event)

    def _document(self, event: yaml.DocumentStartEvent) -> None:
        self.documents += 1
        if self.documents > 1:
            raise self._refused("invalid YAML: a spec is one document; found a second", event)
        if event.version is not None and tuple(event.version) != (1, 2):
            major, minor = event.version
            raise self._refused(_version_message(f"%YAML {major}.{minor}"), event)
        if event.tags:
            raise self._refused("YAML %TAG directives are not allowed in a spec", event)

    def _count(self, event: yaml.NodeEvent) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            problem = f"the spec has more than {MAX_NODES} values; refusing to read further"
            raise self._refused(problem, event)

    def _refuse_tag(self, event: yaml.ScalarEvent | yaml.CollectionStartEvent) -> None:
        if event.tag is not None:
            shown = str(event.tag).replace("tag:yaml.org,2002:", "!!")
            problem = f"YAML tags ({shown}) are not allowed in a spec; quote the value instead"
            raise self._refused(problem, event)

    def _refuse_flow_question_mark(self, event: yaml.NodeEvent) -> None:
        """In flow style, libyaml reads '?x' as the key x and YAML 1.2 as the text '?x'
        (YAML test suite 652Z): refuse the '?' glued to what follows."""
        if not self.stack or not self.stack[-1].flow:
            return
        line, column = _at(event)
        if column > 0 and line < len(self.lines) and self.lines[line][column - 1 : column] == "?":
            problem = "a '?' glued to a value in flow style reads differently in YAML versions"
            raise _fail(self.file, f"{problem}; quote the text or add a space", line + 1, column)

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        if event.style not in (None, ""):
            return event.value  # quoted or block scalars are always text
        text = event.value
        if text == "<<" and self._wants_key():
            problem = "YAML merge keys (<<) are not allowed in a spec; write the keys out"
            raise self._refused(problem, event)
        try:
            return resolve_plain(text)
        except _Unreadable as exc:
            raise self._refused(f"cannot read this value: {exc}", event) from None

    def _open(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        if len(self.stack) >= MAX_DEPTH:
            problem = f"the spec is nested too deeply (over {MAX_DEPTH} levels)"
            raise self._refused(problem, event)
        node: Positioned
        node = PositionedMap() if isinstance(event, yaml.MappingStartEvent) else PositionedList()
        node.lc = Positions(*_at(event))
        self.stack.append(_Frame(node, flow=bool(event.flow_style)))

    def _wants_key(self) -> bool:
        return (
            bool(self.stack)
            and isinstance(self.stack[-1].node, dict)
            and (self.stack[-1].key is _NO_KEY)
        )

    def _add(self, value: Any, event: yaml.Event | None, at: tuple[int, int] = (0, 0)) -> None:
        """Put a finished value into the collection being built (or make it the root)."""
        if event is not None:
            at = _at(event)
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        node = frame.node
        if isinstance(node, PositionedList):
            node.lc.data[len(node)] = [at[0], at[1]]
            node.append(value)
        elif frame.key is _NO_KEY:
            self._set_key(frame, value, at)
        else:
            node[frame.key] = value
            node.lc.data[frame.key] = [*frame.key_at, at[0], at[1]]
            frame.key = _NO_KEY

    def _set_key(self, frame: _Frame, key: Any, at: tuple[int, int]) -> None:
        if isinstance(key, dict | list):
            key = ComplexKey("a mapping" if isinstance(key, dict) else "a list")
        elif key in frame.node:
            first = frame.node.lc.data[key][0] + 1
            message = f"duplicate key '{key}' (first on line {first})"
            raise _fail(self.file, message, at[0] + 1, at[1] + 1)
        frame.key, frame.key_at = key, at

    def _refused(self, problem: str, event: yaml.Event) -> SpecError:
        line, column = _at(event)
        return _fail(self.file, problem, line + 1, column + 1)


def _at(event: yaml.Event) -> tuple[int, int]:
    """Where ``event`` starts (0-based); every event from the parser has a mark."""
    mark = event.start_mark
    return (mark.line, mark.column) if mark is not None else (0, 0)
