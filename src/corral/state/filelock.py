"""Exclusive, crash-safe locks on this host: ``fcntl.flock`` on ``<dir>/<name>.lock``.

For what only this host's processes share (the fleet's secret key file beside the state).
The locks of the state itself (deploy, build) are leases in the database, which a state
shared by several hosts can hold: see :mod:`corral.state.lock`.

The kernel releases a flock when its holder exits for any reason, kill -9 included, so
a lock can never be left stale. After acquiring, the holder writes who it is (pid,
user, host, purpose, since) into the file as JSON so a refused process can name it.
The file itself is never deleted: deleting a flocked file lets two processes "hold"
different inodes under the same name.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from corral.errors import LockedError, StateError
from corral.hostfiles import open_private, private_dir
from corral.state.records import current_host, current_user, utc_now

_LOCK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_POLL_S = 0.05


def lock_path(directory: Path, name: str) -> Path:
    """The file that backs lock ``name``.

    Raises:
        ValueError: ``name`` is not a plain word (letters, digits, ``_ . -``).
    """
    if not _LOCK_NAME.match(name):
        raise ValueError(f"invalid lock name {name!r}")
    return directory / f"{name}.lock"


def read_holder(fd: int) -> dict[str, Any]:
    """The holder info in an open lock file, or ``{}`` if none (yet) or unreadable."""
    try:
        raw = os.pread(fd, 64 * 1024, 0)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(name: str, holder: dict[str, Any]) -> str:
    """``deploy lock is held by alice (pid 123 on host x) since ...: deploy web``."""
    if not holder:
        return f"{name} lock is held by another process (it has not said who it is yet)"
    text = (
        f"{name} lock is held by {holder.get('user', '?')} "
        f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}) "
        f"since {holder.get('since', '?')}"
    )
    purpose = holder.get("purpose")
    return f"{text}: {purpose}" if purpose else text


def _write_holder(fd: int, purpose: str) -> None:
    holder = {
        "pid": os.getpid(),
        "user": current_user(),
        "host": current_host(),
        "purpose": purpose,
        "since": utc_now(),
    }
    data = json.dumps(holder, sort_keys=True).encode("utf-8") + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(fd: int, name: str, wait: float) -> None:
    deadline = time.monotonic() + max(wait, 0.0)
    while not _try_flock(fd):
        if time.monotonic() >= deadline:
            holder = read_holder(fd)
            if not holder:  # the holder may be between flock() and writing its info
                time.sleep(0.2)
                if _try_flock(fd):
                    return
                holder = read_holder(fd)
            raise LockedError(describe_holder(name, holder), lock=name, holder=holder)
        time.sleep(_POLL_S)


@contextmanager
def file_lock(directory: Path, name: str, wait: float = 0.0, purpose: str = "") -> Iterator[None]:
    """Hold the exclusive lock ``name`` in ``directory`` for the duration of the block.

    Args:
        directory: where the ``<name>.lock`` file lives (created if missing).
        name: the lock's name, e.g. ``"deploy"``.
        wait: seconds to keep retrying before giving up; 0 tries once.
        purpose: a short note for whoever is refused, e.g. ``"deploy web"``.

    Raises:
        LockedError: another process holds the lock after ``wait`` seconds; its
            ``holder`` detail has pid, user, host, purpose and since.
        StateError: the lock file cannot be created or written, or is a symbolic link.
        ValueError: ``name`` is not a plain word.
    """
    path = lock_path(directory, name)
    try:
        # 0600, never through a link: it says who holds it and why. The folder is the
        # state database's, whose mode State.open decided; a new one is made 0700.
        private_dir(directory, take_over=False)
        fd = open_private(path, os.O_RDWR)
    except OSError as exc:
        raise StateError(f"cannot open the lock file {path}: {exc}", path=str(path)) from exc
    try:
        _acquire(fd, name, wait)
        try:
            _write_holder(fd, purpose)
        except OSError as exc:
            raise StateError(f"cannot write the lock file {path}: {exc}", path=str(path)) from exc
        try:
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
