"""Read a fleet spec file into a validated ``Fleet``, or explain every problem in it.

The file is parsed as YAML 1.2 (core schema only) into a tree that remembers where each key
and value sits (``corral.spec.parse``), then validated with pydantic. Every pydantic error
is mapped back to the YAML node it came from and reworded in plain language. Whatever the
input, ``load_spec`` either returns a ``LoadedSpec`` or raises ``SpecError`` listing all the
problems it found.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from corral.errors import Diagnostic, SpecError, UsageError
from corral.spec import kinds
from corral.spec.messages import Loc, describe, dotted, message_for, resolve
from corral.spec.model import (
    SCHEMA_VERSION,
    Fleet,
    SpecProblem,
)
from corral.spec.parse import (
    ComplexKey,
    PositionedList,
    PositionedMap,
    SourceFloat,
    SourceInt,
    parse,
)
from corral.state.location import StateLocation, is_url, locate

MAX_BYTES = 1024 * 1024
# Beyond this many problems nobody reads on, and wording each one costs time: a 1 MiB spec
# can hold 50,000 bad keys. The rest are counted in one last diagnostic.
MAX_DIAGNOSTICS = 100
_TOO_BIG = f"the spec is larger than {MAX_BYTES // 1024} KiB (1 MiB); refusing to read it"

__all__ = ["MAX_BYTES", "MAX_DIAGNOSTICS", "LoadedSpec", "check_files", "load_spec"]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated fleet with where it came from; relative paths resolve against ``root``."""

    fleet: Fleet
    path: Path
    root: Path
    document: Any = field(default=None, repr=False, compare=False)  # parsed tree: positions

    def role_section(self, role: str) -> dict[str, Any]:
        """The role's validated settings as plain JSON-able data, keys sorted (for hashing)."""
        if role not in self.fleet.roles:
            known = ", ".join(self.fleet.roles)
            raise UsageError(f"no role named {role!r} in the spec (roles: {known})")
        data = self.fleet.roles[role].model_dump(mode="json", by_alias=True)
        plain: dict[str, Any] = json.loads(json.dumps(data, sort_keys=True))
        return plain

    @property
    def state_location(self) -> StateLocation:
        """Where this fleet's state is: the host's, ``CORRAL_STATE`` or the spec's ``state``
        (see :mod:`corral.state.location`)."""
        return locate(self.fleet.fleet, self.root, self.fleet.state)

    @property
    def state_path(self) -> Path:
        """The fleet's state database file.

        Raises:
            StateError: the state is a URL.
        """
        return self.state_location.path


def load_spec(path: Path) -> LoadedSpec:
    """Read, parse and validate the spec at ``path``; raise ``SpecError`` with every problem."""
    path = _absolute(Path(path))
    file = str(path)
    text = _read(path, file)
    document = parse(text, file)
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


def _top_level(document: Any, file: str) -> dict[str, Any]:
    """The document as plain data; it must be a mapping."""
    if document is None:
        raise _fail(file, "the spec is empty; expected a mapping with 'fleet' and 'roles'")
    if not isinstance(document, PositionedMap):
        line, column = _start(document)
        got = describe(document)
        message = f"expected a mapping with 'fleet' and 'roles' at the top, got {got}"
        raise _fail(file, message, line or 1, column or 1)
    return document  # still the positioned tree; _plain converts it


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
        errors = exc.errors(include_url=False)
        diagnostics += [_diagnose(error, document, file) for error in errors[:MAX_DIAGNOSTICS]]
        hidden = len(errors) - MAX_DIAGNOSTICS
        if hidden > 0:
            message = f"{hidden} more problem{'s' if hidden != 1 else ''} not shown"
            diagnostics.append(Diagnostic(file, 0, 0, "", message))
        return None, diagnostics
    except RecursionError:
        return None, [Diagnostic(file, 0, 0, "", "the spec is nested too deeply")]
    return (fleet if not diagnostics else None), diagnostics


def _plain(node: Any, loc: Loc, document: Any, file: str, out: list[Diagnostic]) -> Any:
    """The parsed tree as plain Python values, with the checks no model field can make.

    Keys must be text; no text may hold a NUL character (no argv, path or environment can
    carry one); ``run.env`` values are the text exactly as written (``1.10`` stays "1.10").
    Problems go to ``out``, and the offending entries are dropped.
    """
    if isinstance(node, dict):
        return _plain_map(node, loc, document, file, out)
    if isinstance(node, list):
        return [_plain(item, (*loc, i), document, file, out) for i, item in enumerate(node)]
    if isinstance(node, str):
        if "\x00" in node:
            line, column = _locate(document, loc)
            out.append(Diagnostic(file, line, column, dotted(loc), _NUL))
            return node.replace("\x00", "")  # reported once here, not again by the model
        return str(node)
    if _is_env_value(loc):
        return _env_text(node, loc, document, file, out)
    for kind in (bool, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


_NUL = "text may not contain a NUL character (\\0): no argument, path or variable can hold one"
_DROPPED = object()  # an entry already reported, left out of the plain data


def _plain_map(
    node: dict[Any, Any], loc: Loc, document: Any, file: str, out: list[Diagnostic]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(key, str) and "\x00" not in key:
            plain = _plain(value, (*loc, key), document, file, out)
            if plain is not _DROPPED:
                result[str(key)] = plain
            continue
        line, column = _key_position(node, key)
        got = key.what if isinstance(key, ComplexKey) else describe(key)
        message = _NUL if isinstance(key, str) else f"expected a text key, got {got}"
        out.append(Diagnostic(file, line, column, dotted(loc), message))
    return result


def _is_env_value(loc: Loc) -> bool:
    """Whether ``loc`` is ``roles.NAME.run.env.VARIABLE``."""
    return len(loc) == 5 and loc[0] == "roles" and loc[2] == "run" and loc[3] == "env"


def _env_text(node: Any, loc: Loc, document: Any, file: str, out: list[Diagnostic]) -> Any:
    """An env value that YAML read as a number, as the text it was written as.

    true, false and null have no one text (``True``, ``~``, nothing at all), so they are
    refused with advice to quote them rather than guessed.
    """
    if isinstance(node, SourceInt | SourceFloat):
        return node.text
    if not isinstance(node, bool) and node is not None:
        return node  # not a scalar YAML can write; the model refuses it
    line, column = _locate(document, loc)
    if node is None:
        message = 'expected text, got nothing (null); write "" for empty text, or quote the value'
    else:
        shown = "true" if node else "false"
        message = f'expected text, got {shown}; quote it ("{shown}") to pass the text'
    out.append(Diagnostic(file, line, column, dotted(loc), message))
    return _DROPPED


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
        message = f"expected the schema version {SCHEMA_VERSION}, got {describe(value)}"
    return Diagnostic(file, line, column, "version", message)


def _diagnose(error: ErrorDetails, document: Any, file: str) -> Diagnostic:
    """One pydantic error as a located, plainly worded diagnostic."""
    loc: Loc = tuple(error["loc"])
    if not loc and error["type"] == "value_error":
        loc = _fleet_error_loc(error, document)
    slot = resolve(loc)
    line, column = _locate(document, slot.yaml_loc, want_key=error["type"] == "extra_forbidden")
    return Diagnostic(file, line, column, dotted(slot.yaml_loc), message_for(error, slot))


def _fleet_error_loc(error: ErrorDetails, document: Any) -> Loc:
    """Where a fleet-wide check points: the part of the spec its ``SpecProblem`` names
    when the document has that role, else ``roles``."""
    problem = (error.get("ctx") or {}).get("error")
    roles = document.get("roles") if isinstance(document, dict) else None
    if not isinstance(problem, SpecProblem) or not isinstance(roles, PositionedMap):
        return ("roles",)
    loc: Loc = problem.loc
    return loc if len(loc) > 1 and _has_key(roles, loc[1]) else ("roles",)


# --- positions -----------------------------------------------------------------------


def _start(node: Any) -> tuple[int, int]:
    """1-based start of a parsed collection, or (0, 0) when it carries no position."""
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
        if isinstance(node, PositionedMap) and _has_key(node, element):
            child = node[element]
            data = node.lc.data.get(element)
            if data is not None:
                use_value = last and not want_key and not isinstance(child, dict | list)
                position = (data[2] + 1, data[3] + 1) if use_value else (data[0] + 1, data[1] + 1)
            node = child
        elif isinstance(node, PositionedList) and isinstance(element, int) and element < len(node):
            data = node.lc.data.get(element) if element >= 0 else None
            if data is not None:
                position = (data[0] + 1, data[1] + 1)
            node = node[element]
        else:
            break
    return position


def _has_key(node: PositionedMap, key: Any) -> bool:
    try:
        return key in node
    except TypeError:
        return False


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """In file order, each once; problems of the whole file (line 0) last."""
    unique = {(d.line == 0, d.line, d.column, d.path, d.message): d for d in diagnostics}
    return [unique[k] for k in sorted(unique)]


# --- referenced files ----------------------------------------------------------------


def _check_refs(document: Any, root: Path, file: str) -> list[Diagnostic]:
    """Problems with the files the spec names, each located at the value that names it."""
    diagnostics = []
    real_root = Path(os.path.realpath(root))
    for loc, value, kind in _file_refs(document):
        problem = _file_problem(real_root, value, kind)
        if problem is not None:
            line, column = _locate(document, loc)
            diagnostics.append(Diagnostic(file, line, column, dotted(loc), problem))
    state = document.get("state") if isinstance(document, dict) else None
    problem = _state_problem(root, state) if isinstance(state, str) else None
    if problem is not None:
        line, column = _locate(document, ("state",))
        diagnostics.append(Diagnostic(file, line, column, "state", problem))
    return diagnostics


_FILE, _ANY, _FOLDER, _CONTEXT = "a file", "a file or folder", "a folder", "a containerfile"


def _file_refs(document: Any) -> Iterator[tuple[Loc, str, str]]:
    """(loc, path text, what it must be) for each file or folder the spec refers to."""
    roles = document.get("roles") if isinstance(document, dict) else None
    if not isinstance(roles, dict):
        return
    for name, role in roles.items():
        if not isinstance(role, dict) or not isinstance(name, str):
            continue
        base, build, tests = role.get("base"), role.get("build"), role.get("tests")
        if isinstance(base, dict) and isinstance(base.get("containerfile"), str):
            yield ("roles", name, "base", "containerfile"), base["containerfile"], _CONTEXT
        steps = build.get("copy") if isinstance(build, dict) else None
        for i, step in enumerate(steps if isinstance(steps, list | tuple) else ()):
            if isinstance(step, dict) and isinstance(step.get("src"), str):
                yield ("roles", name, "build", "copy", i, "src"), step["src"], _ANY
        for i, test in enumerate(tests if isinstance(tests, list | tuple) else ()):
            if isinstance(test, str):
                yield ("roles", name, "tests", i), test, _ANY
        fixtures = role.get("fixtures")
        for volume, source in fixtures.items() if isinstance(fixtures, dict) else ():
            if isinstance(source, str):
                yield ("roles", name, "fixtures", volume), source, _FOLDER


def _file_problem(real_root: Path, value: str, kind: str) -> str | None:
    """Why ``value`` cannot be used as ``kind``, or None.

    The path is resolved, symlinks and all, and must stay inside the spec's folder
    (``real_root``, itself resolved): a symlink to /etc/shadow copies nothing into an image.
    """
    if not value or kinds.host_path_problem(value) is not None:
        return None  # the model reports the text itself
    try:
        target = Path(os.path.realpath(real_root / value))
        if target != real_root and not target.is_relative_to(real_root):
            return f"'{value}' leads outside the spec's folder (to {target}); refusing to use it"
        if target == Path("/") or (kind == _CONTEXT and target.parent == Path("/")):
            return f"'{value}' would hand the host's root folder to a build or a test"
        return _type_problem(target, value, kind)
    except (OSError, ValueError) as exc:
        return f"cannot check file '{value}': {exc}"


def _type_problem(target: Path, value: str, kind: str) -> str | None:
    if not target.exists():
        return f"file '{value}' does not exist (looked for {target})"
    if kind in (_FILE, _CONTEXT) and not target.is_file():
        return f"'{value}' is not a regular file ({target})"
    if kind == _FOLDER and not target.is_dir():
        return f"'{value}' is not a folder ({target})"
    return None


def _state_problem(root: Path, value: str) -> str | None:
    """Why the state database cannot live at ``value``, or None.

    It may be outside the spec's folder, but it must be (or become) a regular file of its
    own: not a folder, a device (``/dev/null``), a FIFO or a symlink.
    """
    try:
        kinds.state_path(value)
    except ValueError:
        return None  # the model reports the text itself
    if is_url(value):
        return None
    try:
        target = root / Path(value).expanduser()
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return None
    except RuntimeError as exc:  # '~nobody/x'
        return f"cannot find the state file '{value}': {exc}"
    except (OSError, ValueError) as exc:
        return f"cannot check the state file '{value}': {exc}"
    if stat.S_ISREG(mode):
        return None
    return f"the state file '{value}' is {_not_regular(mode)} ({target}); name a regular file"


def _not_regular(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
