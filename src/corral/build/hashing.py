"""Content hashes of build inputs: the hash half of an image's version number."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corral.build.tree import TreeEntry, read_file, tree_entries


def hash_json(value: Any) -> str:
    """sha256 of the canonical JSON form of ``value`` (sorted keys, no spaces)."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def hash_tree(path: Path, any_links: bool = False) -> str:
    """sha256 over what ``path`` holds: names, kinds, execute bits, bytes and link texts.

    ``path`` must already be confined to the spec's folder (``tree.confined``). A symlink
    is hashed by its text, never by what it points to: no host file is read through one.
    With ``any_links``, a symlink that leaves the tree is hashed so too, not refused.

    Raises:
        BuildError: the tree holds a symlink that leaves it (unless ``any_links``), or a
            device, FIFO or socket.
    """
    digest = hashlib.sha256()
    for entry in tree_entries(path, any_links):
        digest.update(_record(entry))
    return digest.hexdigest()


def _record(entry: TreeEntry) -> bytes:
    if entry.kind == "file":
        mode = "x" if entry.executable else "-"
        body = hashlib.sha256(read_file(entry)).digest()
    else:
        mode, body = entry.kind[0], entry.target.encode(errors="surrogateescape")
    # Length-prefixed: no name or link text can be made to look like another record.
    header = entry.relative.encode(errors="surrogateescape")
    return b"%d:%s\0%s\0%d:" % (len(header), header, mode.encode(), len(body)) + body


def combine(parts: Iterable[str]) -> str:
    """sha256 of ``parts`` joined by newlines (each part is a ``kind:hash`` line)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
