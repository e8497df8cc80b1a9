"""Content hashes of build inputs: the hash half of an image's version number."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SKIPPED_DIRS = frozenset({".git", ".corral", "__pycache__", ".venv"})


def hash_json(value: Any) -> str:
    """sha256 of the canonical JSON form of ``value`` (sorted keys, no spaces)."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def tree_files(path: Path) -> list[Path]:
    """Every regular file at or under ``path``, in a stable order, skipping VCS folders."""
    if path.is_file():
        return [path]
    found: list[Path] = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        found += [Path(folder, name) for name in sorted(files)]
    return found


def hash_tree(path: Path) -> str:
    """sha256 over relative names, executable bits and bytes of every file under ``path``."""
    digest = hashlib.sha256()
    root = path if path.is_dir() else path.parent
    for file in tree_files(path):
        digest.update(_file_record(file, root))
    return digest.hexdigest()


def _file_record(file: Path, root: Path) -> bytes:
    mode = "x" if os.access(file, os.X_OK) else "-"
    header = f"{file.relative_to(root).as_posix()}\0{mode}\0".encode()
    return header + hashlib.sha256(file.read_bytes()).digest()


def combine(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
