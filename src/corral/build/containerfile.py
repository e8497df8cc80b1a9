"""The Containerfile and build context of a role image, made from the spec.

Run steps use the JSON (exec) form so no step is re-parsed by the builder; the last
step of every image shuts the door: no set-uid programs, no SSH host keys, an
unprivileged user.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

from corral.spec.model import Role

SHUT_THE_DOOR = (
    "find / -xdev -type f -perm /6000 -exec chmod a-s {} + ; "
    "rm -f /etc/ssh/ssh_host_* ; "
    "mkdir -p /usr/share/corral && date -u -d @${SOURCE_DATE_EPOCH:-0} > /usr/share/corral/sealed"
)


def _shell(step: str) -> str:
    return "RUN " + json.dumps(["/bin/sh", "-ec", step])


def render(role: Role, base_ref: str, labels: Mapping[str, str] | None = None) -> str:
    """The Containerfile text for ``role`` on top of ``base_ref`` (an image id).

    ``labels`` come last: a label that changes with every build (the build number) placed
    before the steps would defeat the builder's layer cache for all of them.
    """
    user = role.run.user
    lines = [
        f"FROM {base_ref}",
        _shell(
            f"id -u {user} >/dev/null 2>&1 || useradd --system --user-group "
            f"--home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin {user}"
        ),
    ]
    # Volume mount points belong to the user: a new volume copies this ownership up.
    for path in sorted(role.volumes.values()):
        lines.append(
            _shell(f"mkdir -p {shlex.quote(path)} && chown {user}:{user} {shlex.quote(path)}")
        )
    for index, step in enumerate(role.build.copy_):
        lines.append(f"COPY {json.dumps([f'copy-{index}', step.dest])}")
    lines += [_shell(step) for step in role.build.run]
    lines.append(_shell(SHUT_THE_DOOR))
    lines.append(f"USER {user}")
    if role.run.workdir:
        lines.append(f"WORKDIR {role.run.workdir}")
    if labels:
        lines.append(
            "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
        )
    return "\n".join(lines) + "\n"


def stage_context(role: Role, spec_root: Path, context: Path) -> Path:
    """Copy the role's ``build.copy`` sources into ``context``; return the Containerfile path.

    Each source goes to ``copy-N`` so that two sources with the same name never collide.
    """
    context.mkdir(parents=True, exist_ok=True)
    for index, step in enumerate(role.build.copy_):
        source = (spec_root / step.src).resolve()
        target = context / f"copy-{index}"
        if source.is_dir():
            shutil.copytree(
                source,
                target,
                symlinks=True,
                ignore=shutil.ignore_patterns(".git", "__pycache__", ".corral"),
            )
        elif step.dest.endswith("/"):  # a file into a folder keeps its name
            target.mkdir()
            shutil.copy2(source, target / source.name)
        else:
            shutil.copy2(source, target)
    return context / "Containerfile"
