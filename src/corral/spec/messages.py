"""Plain-language messages for pydantic's validation errors on a fleet spec.

Walks the spec's models alongside an error's location, so a message can name what was
expected there (the field's bounds, pattern, or the keys a mapping knows), and words it
for a person: "expected an integer from 1 to 65535, got 'abc'".
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, BeforeValidator, Tag
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from corral.spec.model import ENV_NAME_PATTERN, NAME_PATTERN, Fleet

Loc = tuple[str | int, ...]

# --- walking the model alongside an error's loc --------------------------------------


@dataclass
class Slot:
    """What an error's ``loc`` refers to: its YAML path, owning model and constraints."""

    yaml_loc: Loc
    owner: type[BaseModel] | None = None
    metadata: list[Any] = field(default_factory=list)


def resolve(loc: Loc) -> Slot:
    """Follow ``loc`` through the model types; union tags are dropped from the YAML path."""
    slot = Slot(())
    current: Any = Fleet
    for element in loc:
        current, _ = _unwrap(current)
        tagged = _tagged_members(current)
        if str(element) in tagged:  # "[key]" after a union (a volume's name) is no tag
            current, slot.metadata = tagged[str(element)], []
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
}
_INT_ERRORS = {"int_type", "int_parsing", "int_from_float"}
_FLOAT_ERRORS = {"float_type", "float_parsing"}
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def message_for(error: ErrorDetails, slot: Slot) -> str:
    """The plain-language explanation of one pydantic error."""
    kind, value = error["type"], error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = f", got {describe(value)}"
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
        return f"{message}, got {describe(value)}"
    kinds = message.rsplit(": ", 1)[-1].split(", ")
    for key in value:
        close = difflib.get_close_matches(str(key), kinds, n=1, cutoff=0.6)
        if close:
            return f"{message}; found '{key}', did you mean '{close[0]}'?"
    return message


def describe(value: Any) -> str:
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


def dotted(loc: Sequence[str | int]) -> str:
    """'roles.web.build.copy[0].src' for ('roles', 'web', 'build', 'copy', 0, 'src')."""
    text = ""
    for element in loc:
        if isinstance(element, int):
            text += f"[{element}]"
        elif element != "[key]":
            text += f".{element}" if text else str(element)
    return text
