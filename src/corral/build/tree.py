"""What a role copies into its image, confined to the spec's folder.

A spec names the files to copy; what lies inside a copied folder is not spec text, but it
is just as untrusted: a symlink to ``/etc/shadow`` in a copied folder must never make a
bake read the host's file. One walk decides what a source holds, and both the content hash
and the build context are made from it, so what is hashed is exactly what is copied.

The rules: a source is relative and stays inside the spec's folder once every symlink on
its way is resolved; inside a copied folder, a symlink is copied as a symlink only when its
target is relative and stays inside that folder (anything else is refused, naming the
file); devices, FIFOs and sockets are refused; VCS and cache folders are skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from corral.errors import BuildError

SKIPPED_NAMES = frozenset({".git", ".corral", "__pycache__", ".venv"})

EntryKind = Literal["dir", "file", "link"]


@dataclass(frozen=True)
class TreeEntry:
    """One thing a copied source holds.

    ``relative`` is its POSIX path below the source (a single-file source: its name);
    ``target`` is a link's text; ``executable`` is true when any execute bit is set.
    """

    path: Path
    relative: str
    kind: EntryKind
    executable: bool = False
    target: str = ""


def confined(root: Path, relative: str, field: str) -> Path:
    """``relative`` resolved against ``root``, every symlink on the way followed.

    Raises:
        BuildError: the path is absolute or leads outside ``root`` (``..``, a symlink).
    """
    base = root.resolve()
    if PurePosixPath(relative).is_absolute():
        raise BuildError(
            f"{field}: {relative!r} is absolute; paths in a spec are relative to its folder"
        )
    path = _resolve(base / relative, field)
    if not path.is_relative_to(base):
        raise BuildError(
            f"{field}: {relative!r} leads to {path}, outside the spec's folder {base}; "
            "a spec may only use files inside its own folder"
        )
    return path


def tree_entries(source: Path, any_links: bool = False) -> list[TreeEntry]:
    """Everything under ``source`` (an already confined path), in a stable order.

    Args:
        source: the file or folder.
        any_links: list every symlink by its text, wherever it points, instead of
            refusing those that leave ``source``. For what is read but never copied into
            an image nor followed (a fixture, which ``cp -a`` copies link by link).

    Raises:
        BuildError: a symlink points outside ``source`` or is absolute (unless
            ``any_links``), or an entry is a device, FIFO or socket.
    """
    if not source.exists():
        raise BuildError(f"{source} does not exist")
    if not source.is_dir():
        return [_entry(source, source.name, source, any_links)]
    root = source.resolve()
    found: list[TreeEntry] = []
    for folder, dirs, files in os.walk(root):  # links to folders are listed, never entered
        here = Path(folder)
        names = [n for n in (*dirs, *files) if n not in SKIPPED_NAMES]
        dirs[:] = [d for d in dirs if d not in SKIPPED_NAMES and not (here / d).is_symlink()]
        found += [
            _entry(here / n, (here / n).relative_to(root).as_posix(), root, any_links)
            for n in names
        ]
    # A path sorts before every path below it: folders come before what they hold.
    return sorted(found, key=lambda e: e.relative)


def _entry(path: Path, relative: str, root: Path, any_links: bool = False) -> TreeEntry:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode) and any_links:
        return TreeEntry(path, relative, "link", target=os.readlink(path))
    if stat.S_ISLNK(mode):
        return _link(path, relative, root)
    if stat.S_ISDIR(mode):
        return TreeEntry(path, relative, "dir")
    if stat.S_ISREG(mode):
        return TreeEntry(path, relative, "file", executable=bool(mode & 0o111))
    raise BuildError(
        f"{path} is a device, FIFO or socket: corral copies only files, folders and symlinks"
    )


def _link(path: Path, relative: str, root: Path) -> TreeEntry:
    target = os.readlink(path)
    if os.path.isabs(target) or not _resolve(path, str(path)).is_relative_to(root):
        raise BuildError(
            f"{path} is a symlink to {target}, outside the copied folder {root}: a symlink "
            "is copied only when its target is relative and stays inside the folder (copy "
            "the file it points to instead)"
        )
    return TreeEntry(path, relative, "link", target=target)


def _resolve(path: Path, field: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise BuildError(f"{field}: cannot resolve {path}: {exc}") from exc


def copy_entries(entries: Sequence[TreeEntry], dest: Path) -> None:
    """Recreate ``entries`` below ``dest``: files with their modes, symlinks as symlinks."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        out = dest / entry.relative
        if entry.kind == "dir":
            out.mkdir()
        elif entry.kind == "link":
            os.symlink(entry.target, out)
        else:
            shutil.copy2(entry.path, out, follow_symlinks=False)
    for entry in reversed(entries):  # folder modes last: a read-only folder stays fillable
        if entry.kind == "dir":
            shutil.copystat(entry.path, dest / entry.relative, follow_symlinks=False)


def read_file(entry: TreeEntry) -> bytes:
    """The bytes of a file entry, refusing to follow a symlink put there since the walk."""
    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()
