"""Read a fleet spec file into a validated ``Fleet``, or explain every problem in it.

The file is parsed with ruamel.yaml's round-trip loader, which remembers where each key
and value sits, then validated with pydantic. Every pydantic error is mapped back to the
YAML node it came from and reworded in plain language. Whatever the input, ``load_spec``
either returns a ``LoadedSpec`` or raises ``SpecError`` listing all the problems it found.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, BeforeValidator, Tag, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from corral.errors import Diagnostic, SpecError, UsageError
from corral.spec.model import (
    ENV_NAME_PATTERN,
    NAME_PATTERN,
    SCHEMA_VERSION,
    Fleet,
)

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
Loc = tuple[str | int, ...]
_TOO_BIG = f"the spec is larger than {MAX_BYTES // 1024} KiB (1 MiB); refusing to read it"

__all__ = ["MAX_BYTES", "LoadedSpec", "check_files", "load_spec"]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated fleet with where it came from; relative paths resolve against ``root``."""

    fleet: Fleet
    path: Path
    root: Path
    document: Any = field(default=None, repr=False, compare=False)  # ruamel tree: positions

    def role_section(self, role: str) -> dict[str, Any]:
        """The role's validated settings as plain JSON-able data, keys sorted (for hashing)."""
        if role not in self.fleet.roles:
            known = ", ".join(self.fleet.roles)
            raise UsageError(f"no role named {role!r} in the spec (roles: {known})")
        data = self.fleet.roles[role].model_dump(mode="json", by_alias=True)
        plain: dict[str, Any] = json.loads(json.dumps(data, sort_keys=True))
        return plain

    @property
    def state_path(self) -> Path:
        """Where corral keeps its state database for this fleet."""
        if self.fleet.state is None:
            return self.root / ".corral" / "state.db"
        return self.root / Path(self.fleet.state).expanduser()


def load_spec(path: Path) -> LoadedSpec:
    """Read, parse and validate the spec at ``path``; raise ``SpecError`` with every problem."""
    path = _absolute(Path(path))
    file = str(path)
    text = _read(path, file)
    document = _parse(text, file)
    data = _top_level(document, file)
    fleet, diagnostics = _validate(document, data, file)
    diagnostics += _check_refs(document, path.parent, file)
    if diagnostics or fleet is None:
        raise SpecError(_sorted(diagnostics))
    return LoadedSpec(fleet=fleet, path=path, root=path.parent, document=document)


def check_files(spec: LoadedSpec) -> list[Diagnostic]:
    """Problems with files the spec names: copied sources, containerfiles, test scripts."""
    document = spec.document
    if document is None:
        document = spec.fleet.model_dump(by_alias=True)
    return _check_refs(document, spec.root, str(spec.path))


# --- reading and parsing -------------------------------------------------------------


def _fail(file: str, message: str, line: int = 0, column: int = 0, path: str = "") -> SpecError:
    return SpecError([Diagnostic(file, line, column, path, message)])


def _absolute(path: Path) -> Path:
    try:
        return path.expanduser().absolute()
    except (RuntimeError, OSError) as exc:  # '~nobody/x', or the current folder is gone
        raise _fail(str(path), f"cannot find the spec: {exc}") from exc


def _read(path: Path, file: str) -> str:
    """The file's text; refuses what is missing, not a file, too big or not UTF-8."""
    try:
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise _fail(file, f"the spec {what}")
        if path.stat().st_size > MAX_BYTES:
            raise _fail(file, _TOO_BIG)
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(file, f"cannot read the spec: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise _fail(file, f"cannot read the spec: {exc}") from exc
    if len(raw) > MAX_BYTES:
        raise _fail(file, _TOO_BIG)
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line, column = _offset_position(raw, exc.start)
        message = f"the spec is not valid UTF-8 text (byte 0x{raw[exc.start]:02x})"
        raise _fail(file, message, line, column) from exc


def _offset_position(data: bytes | str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``data`` (columns count bytes in bytes)."""
    head = data[:offset]
    if isinstance(head, bytes):
        return head.count(b"\n") + 1, offset - head.rfind(b"\n")
    return head.count("\n") + 1, offset - head.rfind("\n")


class _Refused(ComposerError):
    """A YAML feature a spec may not use (aliases, tags): refused while composing."""


class _StrictComposer(Composer):
    """Refuses aliases (so nothing can expand into something huge) and explicit tags."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            problem = f"YAML aliases (*{event.anchor}) are not allowed in a spec; write it out"
            raise _Refused(None, None, problem, event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = str(tag).replace("tag:yaml.org,2002:", "!!")
            problem = f"YAML tags ({shown}) are not allowed in a spec; quote the value instead"
            raise _Refused(None, None, problem, event.start_mark)
        return super().compose_node(parent, index)


class _Constructor(RoundTripConstructor):
    """Gives values YAML resolves but Python cannot build (a bad date...) a position."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            problem = f"cannot read this value: {str(exc)[:80]}"
            raise ConstructorError(None, None, problem, node.start_mark) from exc


def _parse(text: str, file: str) -> Any:
    """The round-trip YAML tree of ``text``; any YAML problem becomes a ``SpecError``."""
    yaml = YAML(typ="rt", pure=True)
    yaml.Composer = _StrictComposer
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_DEPTH
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise _yaml_error(exc, file) from None
    except ReaderError as exc:
        line, column = _offset_position(text, exc.position)
        char = exc.character
        code = char if isinstance(char, int) else ord(str(char)[:1] or " ")
        message = f"the spec contains a character YAML does not allow (U+{code:04X})"
        raise _fail(file, message, line, column) from None
    except RecursionError:
        raise _fail(file, f"the spec is nested too deeply (limit {MAX_DEPTH} levels)") from None
    except (YAMLError, ValueError, TypeError, OverflowError, AttributeError) as exc:
        # The parser turns some odd scalars (a 5000-digit integer, a bad date) into these.
        raise _fail(file, f"invalid YAML: {exc}") from None


def _yaml_error(exc: MarkedYAMLError, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    problem = str(exc.problem or exc.context or "unreadable YAML")
    if isinstance(exc, DuplicateKeyError):
        first = exc.context_mark
        key = re.sub(r'^found duplicate key "(.*?)" with value.*$', r"\1", problem, flags=re.S)
        message = f"duplicate key '{key}'"
        if first is not None:
            message += f" in the mapping starting on line {first.line + 1}"
        return _fail(file, message, line, column)
    if isinstance(exc, _Refused):
        return _fail(file, problem, line, column)
    if "'\\t'" in problem or "\t" in problem:
        return _fail(file, "found a tab character; indent YAML with spaces, not tabs", line, column)
    if "maximum depth" in problem:
        return _fail(file, f"the spec is nested too deeply (over {MAX_DEPTH} levels)", line, column)
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    return _fail(file, f"invalid YAML: {problem}{context}", line, column)


def _top_level(document: Any, file: str) -> dict[str, Any]:
    """The document as plain data; it must be a mapping."""
    if document is None:
        raise _fail(file, "the spec is empty; expected a mapping with 'fleet' and 'roles'")
    if not isinstance(document, CommentedMap):
        line, column = _start(document)
        got = _describe(document)
        message = f"expected a mapping with 'fleet' and 'roles' at the top, got {got}"
        raise _fail(file, message, line or 1, column or 1)
    return document  # still ruamel types; _plain converts it


# --- validation ----------------------------------------------------------------------


def _validate(document: Any, data: Any, file: str) -> tuple[Fleet | None, list[Diagnostic]]:
    """The validated fleet (or None) and every problem found, located in the document."""
    diagnostics: list[Diagnostic] = []
    plain = _plain(data, (), document, file, diagnostics)
    version_problem = _check_version(document, plain, file)
    if version_problem is not None:
        return None, [version_problem]
    try:
        fleet = Fleet.model_validate(plain)
    except ValidationError as exc:
        diagnostics += [_diagnose(error, document, file) for error in exc.errors()]
        return None, diagnostics
    except RecursionError:
        return None, [Diagnostic(file, 0, 0, "", "the spec is nested too deeply")]
    return (fleet if not diagnostics else None), diagnostics


def _plain(node: Any, loc: Loc, document: Any, file: str, out: list[Diagnostic]) -> Any:
    """Ruamel values as plain Python ones; non-text keys are reported and dropped."""
    if isinstance(node, dict):
        result: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(key, str):
                result[str(key)] = _plain(value, (*loc, str(key)), document, file, out)
            else:
                line, column = _key_position(node, key)
                message = f"expected a text key, got {_describe(key)}"
                out.append(Diagnostic(file, line, column, _dotted(loc), message))
        return result
    if isinstance(node, list | tuple):
        return [_plain(item, (*loc, i), document, file, out) for i, item in enumerate(node)]
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _check_version(document: Any, data: dict[str, Any], file: str) -> Diagnostic | None:
    """A diagnostic when ``version`` is present and not the supported schema version."""
    if "version" not in data:
        return None
    value = data["version"]
    if value == SCHEMA_VERSION and type(value) is int:
        return None
    line, column = _locate(document, ("version",))
    if type(value) is int:
        message = (
            f"schema version {value} is not supported by this corral (supports {SCHEMA_VERSION})"
        )
    else:
        message = f"expected the schema version {SCHEMA_VERSION}, got {_describe(value)}"
    return Diagnostic(file, line, column, "version", message)


def _diagnose(error: ErrorDetails, document: Any, file: str) -> Diagnostic:
    """One pydantic error as a located, plainly worded diagnostic."""
    loc: Loc = tuple(error["loc"])
    if not loc and error["type"] == "value_error":
        loc = _fleet_error_loc(str(error["msg"]), document)
    slot = _resolve(loc)
    line, column = _locate(document, slot.yaml_loc, want_key=error["type"] == "extra_forbidden")
    return Diagnostic(file, line, column, _dotted(slot.yaml_loc), _message(error, slot))


def _fleet_error_loc(message: str, document: Any) -> Loc:
    """Where a fleet-wide check points: the ``after`` of the role it names, else ``roles``."""
    roles = document.get("roles") if isinstance(document, dict) else None
    match = re.search(r"role '([^']+)' is after|cycle: (\S+) ->", message)
    if match and isinstance(roles, dict) and (match.group(1) or match.group(2)) in roles:
        return ("roles", match.group(1) or match.group(2), "after")
    match = re.search(r"are corral's own: ([^,\s]+)", message)
    if match and isinstance(roles, dict) and match.group(1) in roles:
        return ("roles", match.group(1), "[key]")
    return ("roles",)


# --- walking the model alongside an error's loc --------------------------------------


@dataclass
class _Slot:
    """What an error's ``loc`` refers to: its YAML path, owning model and constraints."""

    yaml_loc: Loc
    owner: type[BaseModel] | None = None
    metadata: list[Any] = field(default_factory=list)


def _resolve(loc: Loc) -> _Slot:
    """Follow ``loc`` through the model types; union tags are dropped from the YAML path."""
    slot = _Slot(())
    current: Any = Fleet
    for element in loc:
        current, _ = _unwrap(current)
        tagged = _tagged_members(current)
        if tagged:
            current, slot.metadata = tagged.get(str(element)), []
            continue
        slot.yaml_loc += (element,)
        slot.owner = current if _is_model(current) else None
        current, slot.metadata = _child(current, element)
    return slot


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` and ``Optional``, collecting constraint metadata."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp, *extra = typing.get_args(tp)
            for item in extra:
                metadata += item.metadata if isinstance(item, FieldInfo) else [item]
            continue
        members = [m for m in _union_members(tp) if m is not type(None)]
        if len(members) == 1 and len(_union_members(tp)) == 2:
            tp = members[0]
            continue
        return tp, metadata


def _union_members(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin in (typing.Union, types.UnionType) else ()


def _tagged_members(tp: Any) -> dict[str, Any]:
    """For a discriminated union, its members by tag; else empty."""
    tagged: dict[str, Any] = {}
    for member in _union_members(tp):
        tags = [m for m in typing.get_args(member)[1:] if isinstance(m, Tag)]
        if tags:
            tagged[tags[0].tag] = typing.get_args(member)[0]
    return tagged


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _child(tp: Any, element: str | int) -> tuple[Any, list[Any]]:
    """The type (and its constraints) found under ``element`` of a value of type ``tp``."""
    if _is_model(tp):
        info = _field(tp, str(element))
        if info is None:
            return None, []
        child, metadata = _unwrap(info.annotation)
        return child, info.metadata + metadata
    args = typing.get_args(tp)
    if typing.get_origin(tp) is dict and len(args) == 2:
        child, metadata = _unwrap(args[0] if element == "[key]" else args[1])
        return child, metadata
    if typing.get_origin(tp) in (tuple, list) and args:
        return _unwrap(args[0])
    return None, []


def _field(model: Any, name: str) -> FieldInfo | None:
    fields: dict[str, FieldInfo] = model.model_fields
    for field_name, info in fields.items():
        if name in (field_name, info.alias):
            return info
    return None


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


# --- wording -------------------------------------------------------------------------

_PATTERNS = {
    NAME_PATTERN: "a name of lowercase letters, digits and '-' that starts with a letter "
    "(at most 30 characters)",
    ENV_NAME_PATTERN: "an environment variable name (letters, digits and '_', "
    "not starting with a digit)",
    r"^/": "an absolute path starting with '/'",
    r"^[a-z0-9][a-z0-9+.-]+$": "a Debian package name such as 'curl'",
    r"^[a-z_][a-z0-9_-]{0,31}$": "a user name of lowercase letters, digits, '_' and '-'",
    r"^[A-Z_]+$": "a capability name in capitals such as 'NET_BIND_SERVICE'",
    r"^\d+[kmg]?$": "a memory size such as '512m' or '2g'",
    r"^[0-9.]+$|^[0-9a-fA-F:]+$": "an IP address such as '127.0.0.1' or '::1'",
}
_INT_ERRORS = {"int_type", "int_parsing", "int_from_float"}
_FLOAT_ERRORS = {"float_type", "float_parsing"}
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _message(error: ErrorDetails, slot: _Slot) -> str:
    """The plain-language explanation of one pydantic error."""
    kind, value = error["type"], error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = f", got {_describe(value)}"
    if kind in ("too_short", "too_long") and isinstance(value, list | dict):
        got = f", got {len(value) or 'none'}"
    if kind == "missing":
        return f"required key '{_slot_name(error)}' is missing"
    if kind == "extra_forbidden":
        return _unknown_key(str(error["loc"][-1]), slot.owner)
    if kind in _INT_ERRORS or kind in _FLOAT_ERRORS or kind in _BOUND_ERRORS:
        return f"expected {_number_words(slot.metadata, kind, value)}{got}"
    if kind in ("base_kind", "health_kind"):
        return _union_kind(str(error["msg"]), value)
    simple = _simple_message(kind, ctx, value)
    if simple is not None:
        return simple + ("" if kind in ("value_error", "assertion_error") else got)
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}{got}"


def _slot_name(error: ErrorDetails) -> str:
    return str(error["loc"][-1]) if error["loc"] else "fleet"


def _simple_message(kind: str, ctx: dict[str, Any], value: Any) -> str | None:
    """Wording for errors that need no knowledge of the field."""
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", "invalid value"))
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind == "string_type":
        hint = " (quote it to make it text)" if isinstance(value, bool | int | float) else ""
        return f"expected text{hint}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"expected {_PATTERNS.get(pattern, f'text matching {pattern}')}"
    if kind == "string_too_short":
        return "expected non-empty text"
    if kind == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} entry"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} entries"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return "expected a mapping of keys to values"
    if kind in ("tuple_type", "list_type", "iterable_type", "set_type"):
        return "expected a list"
    return None


def _number_words(metadata: list[Any], kind: str, value: Any) -> str:
    """E.g. 'an integer from 1 to 65535' or 'a duration from 0 to 86400 seconds'."""
    bounds = {
        type(m).__name__.lower(): _num(getattr(m, type(m).__name__.lower()))
        for m in metadata
        if isinstance(m, Ge | Gt | Le | Lt)
    }
    is_duration = any(isinstance(m, BeforeValidator) for m in metadata)
    is_int = kind in _INT_ERRORS or (kind in _BOUND_ERRORS and isinstance(value, int))
    noun = "a duration" if is_duration else "an integer" if is_int else "a number"
    unit = " seconds" if is_duration and bounds else ""
    ge, gt, le, lt = (bounds.get(k) for k in ("ge", "gt", "le", "lt"))
    if ge is not None and le is not None:
        return f"{noun} from {ge} to {le}{unit}"
    parts = [f"at least {ge}" if ge is not None else f"greater than {gt}" if gt else ""]
    parts.append(f"at most {le}" if le is not None else f"below {lt}" if lt else "")
    limits = " and ".join(p for p in parts if p)
    return f"{noun} {limits}{unit}" if limits else noun


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unknown_key(key: str, owner: type[BaseModel] | None) -> str:
    """'unknown key 'replcas'; did you mean 'replicas'?' (or the list of known keys)."""
    if owner is None:
        return f"unknown key '{key}'"
    known = _known_keys(owner)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'?"
    return f"unknown key '{key}'; expected one of: {', '.join(known)}"


def _union_kind(message: str, value: Any) -> str:
    """The one error for a base/health without its distinguishing key."""
    if not isinstance(value, dict):
        return f"{message}, got {_describe(value)}"
    kinds = message.rsplit(": ", 1)[-1].split(", ")
    for key in value:
        close = difflib.get_close_matches(str(key), kinds, n=1, cutoff=0.6)
        if close:
            return f"{message}; found '{key}', did you mean '{close[0]}'?"
    return message


def _describe(value: Any) -> str:
    """A short, human rendering of a YAML value for 'got ...'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = repr(float(value)) if isinstance(value, float) else _int_text(int(value))
    elif isinstance(value, str):
        text = repr(str(value))
    else:
        text = f"a {type(value).__name__} value"
    return text if len(text) <= 60 else text[:57] + "..."


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond Python's digit limit
        return "a very large integer"


def _dotted(loc: Sequence[str | int]) -> str:
    """'roles.web.build.copy[0].src' for ('roles', 'web', 'build', 'copy', 0, 'src')."""
    text = ""
    for element in loc:
        if isinstance(element, int):
            text += f"[{element}]"
        elif element != "[key]":
            text += f".{element}" if text else str(element)
    return text


# --- positions -----------------------------------------------------------------------


def _start(node: Any) -> tuple[int, int]:
    """1-based start of a ruamel node, or (0, 0) when it carries no position."""
    lc = getattr(node, "lc", None)
    if lc is None or getattr(lc, "line", None) is None:
        return 0, 0
    return int(lc.line) + 1, int(lc.col) + 1


def _key_position(node: Any, key: Any) -> tuple[int, int]:
    try:
        line, column = node.lc.key(key)
    except (AttributeError, KeyError, TypeError):
        return _start(node)
    return int(line) + 1, int(column) + 1


def _locate(document: Any, loc: Loc, want_key: bool = False) -> tuple[int, int]:
    """Position of the deepest node of ``loc`` present in the document.

    A mapping entry is shown at its value when that is a scalar, else at its key;
    ``want_key`` forces the key (for unknown keys).
    """
    position = _start(document)
    node = document
    for index, element in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, CommentedMap) and _has_key(node, element):
            child = node[element]
            data = node.lc.data.get(element)
            if data is not None:
                use_value = last and not want_key and not isinstance(child, dict | list)
                position = (data[2] + 1, data[3] + 1) if use_value else (data[0] + 1, data[1] + 1)
            node = child
        elif isinstance(node, CommentedSeq) and isinstance(element, int) and element < len(node):
            data = node.lc.data.get(element) if element >= 0 else None
            if data is not None:
                position = (data[0] + 1, data[1] + 1)
            node = node[element]
        else:
            break
    return position


def _has_key(node: CommentedMap, key: Any) -> bool:
    try:
        return key in node
    except TypeError:
        return False


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    unique = {(d.line, d.column, d.path, d.message): d for d in diagnostics}
    return [unique[k] for k in sorted(unique)]


# --- referenced files ----------------------------------------------------------------


def _check_refs(document: Any, root: Path, file: str) -> list[Diagnostic]:
    diagnostics = []
    for loc, value, must_be_file in _file_refs(document):
        problem = _file_problem(root, value, must_be_file)
        if problem is not None:
            line, column = _locate(document, loc)
            diagnostics.append(Diagnostic(file, line, column, _dotted(loc), problem))
    return diagnostics


def _file_refs(document: Any) -> Iterator[tuple[Loc, str, bool]]:
    """(loc, path text, must be a regular file) for each file the spec refers to."""
    roles = document.get("roles") if isinstance(document, dict) else None
    if not isinstance(roles, dict):
        return
    for name, role in roles.items():
        if not isinstance(role, dict) or not isinstance(name, str):
            continue
        base, build, tests = role.get("base"), role.get("build"), role.get("tests")
        if isinstance(base, dict) and isinstance(base.get("containerfile"), str):
            yield ("roles", name, "base", "containerfile"), base["containerfile"], True
        steps = build.get("copy") if isinstance(build, dict) else None
        for i, step in enumerate(steps if isinstance(steps, list | tuple) else ()):
            if isinstance(step, dict) and isinstance(step.get("src"), str):
                yield ("roles", name, "build", "copy", i, "src"), step["src"], False
        for i, test in enumerate(tests if isinstance(tests, list | tuple) else ()):
            if isinstance(test, str):
                yield ("roles", name, "tests", i), test, False  # a file or a folder
        fixtures = role.get("fixtures")
        for volume, source in fixtures.items() if isinstance(fixtures, dict) else ():
            if isinstance(source, str):
                yield ("roles", name, "fixtures", volume), source, False


def _file_problem(root: Path, value: str, must_be_file: bool) -> str | None:
    if not value:
        return None  # the empty string is already a validation error
    target = root / value
    try:
        if not target.exists():
            return f"file '{value}' does not exist (looked for {target})"
        if must_be_file and not target.is_file():
            return f"'{value}' is not a regular file ({target})"
    except (OSError, ValueError) as exc:
        return f"cannot check file '{value}': {exc}"
    return None
