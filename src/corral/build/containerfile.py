"""The Containerfile and build context of a role image, made from the spec.

A spec value never becomes Containerfile or shell text. Steps corral adds are exec-form
``RUN`` with fixed scripts that read the spec's values as positional parameters; values an
instruction needs (``COPY`` destinations, ``USER``, ``WORKDIR``) are build arguments, which
the builder substitutes as data: a quote, a ``$`` or a trailing backslash in a value stays
a character of the value. Only the role's own ``build.run`` steps are shell text: they are
the role's code. The last step of every image shuts the door: no set-uid programs, no SSH
host keys, an unprivileged user.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.build import tree
from corral.errors import BuildError
from corral.spec.model import Role

SHUT_THE_DOOR = (
    "find / -xdev -type f -perm /6000 -exec chmod a-s {} + ; "
    "rm -f /etc/ssh/ssh_host_* ; "
    "mkdir -p /usr/share/corral && date -u -d @${SOURCE_DATE_EPOCH:-0} > /usr/share/corral/sealed"
)
# "$1" is the user name: the script is fixed text, the name is an argument of it.
ADD_USER = (
    'id -u -- "$1" >/dev/null 2>&1 || useradd --system --user-group --home-dir /nonexistent '
    '--no-create-home --shell /usr/sbin/nologin -- "$1"'
)
# Volume mount points belong to the user: a new volume copies this ownership up.
OWN_VOLUMES = 'user="$1"; shift; mkdir -p -- "$@"; chown -- "$user:$user" "$@"'
ARG_USER = "CORRAL_USER"
ARG_WORKDIR = "CORRAL_WORKDIR"


@dataclass(frozen=True)
class Containerfile:
    """A rendered Containerfile and the build arguments its fixed text refers to."""

    text: str
    build_args: Mapping[str, str] = field(default_factory=dict)


def _run(*argv: str) -> str:
    return "RUN " + json.dumps(list(argv))


def _shell(script: str, *args: str) -> str:
    """A shell step; ``args`` become ``$1``, ``$2``... (``$0`` is "sh")."""
    return _run("/bin/sh", "-ec", script, *(("sh", *args) if args else ()))


def copy_arg(index: int) -> str:
    """The build argument that carries ``build.copy[index].dest``."""
    return f"CORRAL_COPY_{index}"


def plain_text(field_path: str, value: str) -> str:
    """``value``, refused if it holds a control character (a newline ends a line).

    The spec refuses such values already; this guard keeps a value that slipped past it
    from ending a Containerfile line or an argv item early.

    Raises:
        BuildError: names the field and the first control character.
    """
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise BuildError(
                f"{field_path}: {value!r} contains the control character "
                f"U+{ord(char):04X}; it cannot be written into a Containerfile"
            )
    return value


def _script(field_path: str, step: str) -> str:
    # A role's step is shell text and may span lines; only NUL can never be in an argv item.
    if "\0" in step:
        raise BuildError(f"{field_path}: the step contains a NUL character")
    return step


def render(role: Role, base_ref: str, labels: Mapping[str, str] | None = None) -> Containerfile:
    """The Containerfile for ``role`` on top of ``base_ref`` (an image id).

    ``labels`` come last: a label that changes with every build (the build number) placed
    before the steps would defeat the builder's layer cache for all of them.

    Raises:
        BuildError: a value holds a control character, or ``base_ref`` is not one word.
    """
    if not base_ref or any(c.isspace() for c in plain_text("base image", base_ref)):
        raise BuildError(f"base image reference {base_ref!r} is not a single word")
    user = plain_text("run.user", role.run.user)
    args: dict[str, str] = {}
    lines = [f"FROM {base_ref}", _shell(ADD_USER, user)]
    paths = [plain_text(f"volumes.{n}", p) for n, p in sorted(role.mounts.items())]
    if paths:
        lines.append(_shell(OWN_VOLUMES, user, *sorted(paths)))
    for index, step in enumerate(role.build.copy_):
        args[copy_arg(index)] = plain_text(f"build.copy[{index}].dest", step.dest)
        lines += [f"ARG {copy_arg(index)}", f'COPY ["copy-{index}", "${{{copy_arg(index)}}}"]']
    lines += [_shell(_script(f"build.run[{i}]", step)) for i, step in enumerate(role.build.run)]
    lines += [_shell(SHUT_THE_DOOR), f"ARG {ARG_USER}", f"USER ${{{ARG_USER}}}"]
    args[ARG_USER] = user
    if role.run.workdir:
        args[ARG_WORKDIR] = plain_text("run.workdir", role.run.workdir)
        lines += [f"ARG {ARG_WORKDIR}", f"WORKDIR ${{{ARG_WORKDIR}}}"]
    if labels:
        lines.append("LABEL " + " ".join(_label(k, v) for k, v in labels.items()))
    return Containerfile("\n".join(lines) + "\n", args)


def _label(key: str, value: str) -> str:
    # corral's own labels (fleet name, build number); JSON quoting keeps each one word.
    for text in (key, value):
        if "$" in plain_text("label", text):
            raise BuildError(f"label {key}={value!r}: a '$' would be expanded by the builder")
    return f"{json.dumps(key)}={json.dumps(value)}"


def stage_context(role: Role, spec_root: Path, context: Path) -> Path:
    """Copy the role's ``build.copy`` sources into ``context``; return the Containerfile path.

    Each source goes to ``copy-N`` so that two sources with the same name never collide.
    What is copied is what ``hashing.hash_tree`` hashed: the same walk decides both.

    Raises:
        BuildError: a source leads outside ``spec_root``, or a copied folder holds a
            symlink that leaves it (see ``corral.build.tree``).
    """
    context.mkdir(parents=True, exist_ok=True)
    for index, step in enumerate(role.build.copy_):
        source = tree.confined(spec_root, step.src, f"build.copy[{index}].src")
        entries = tree.tree_entries(source)
        target = context / f"copy-{index}"
        if source.is_dir() or step.dest.endswith("/"):  # a file into a folder keeps its name
            tree.copy_entries(entries, target)
        else:
            shutil.copy2(entries[0].path, target, follow_symlinks=False)
    return context / "Containerfile"
