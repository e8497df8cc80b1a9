"""Files corral keeps on the host, private to their owner: 0700 folders, 0600 files.

The state database, its lock files, the owner files of test runs and the edge's runtime
folders all go through here, so their modes never depend on the umask, and a symbolic
link planted where one of them belongs is refused (``O_NOFOLLOW``), never followed:
corral usually runs as root, and root writing through a planted link can overwrite any
file on the host. Existing files and folders with looser modes (made by an older corral)
are tightened rather than refused, so an upgrade needs no manual step.

Only the last component of a path is checked for links; the folders above it are the
operator's choice (``state: /srv/corral/state.db`` may go through a link in ``/srv``).
What closes the remaining race (a link swapped in after the check) is the private folder:
nobody but its owner can create anything in it.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from pathlib import Path

from corral.errors import StateError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_LOOSE = 0o077  # any permission for the group or the others


def private_dir(path: Path, take_over: bool = True) -> Path:
    """Make sure ``path`` is a folder that only its owner may change.

    A missing folder is created 0700, and so are its missing parents (existing parents
    are left as they are). An existing folder is tightened to 0700 with ``take_over``;
    without it (a folder that also holds what is not corral's, such as ``/etc`` for
    ``state: /etc/corral.db``) its mode is left alone, and it is refused if others may
    write to it. corral's own files in it are 0600 either way.

    Returns:
        ``path``.

    Raises:
        StateError: ``path`` is a symbolic link, not a folder, or a folder every user may
            write to (such as ``/tmp``: corral will not take over a shared folder).
        OSError: a folder cannot be created or its mode changed (callers say which).
    """
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        # Another corral may make it meanwhile: it is checked below like any other.
        with suppress(FileExistsError):
            os.mkdir(folder, PRIVATE_DIR)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise _refused(path, "is a symbolic link; corral does not follow links to its folders")
    if not stat.S_ISDIR(info.st_mode):
        raise _refused(path, "is not a folder")
    made = path in missing
    if not made and info.st_mode & (stat.S_IWOTH if take_over else stat.S_IWGRP | stat.S_IWOTH):
        raise _refused(path, "is writable by other users: give corral a folder of its own")
    if (made or take_over) and stat.S_IMODE(info.st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR, follow_symlinks=False)
    return path


def open_private(path: Path, flags: int, create: bool = True) -> int:
    """Open a private file without following a link; create it 0600 with ``create``.

    An existing file with looser modes is tightened to 0600.

    Args:
        path: the file; its folder should come from :func:`private_dir`.
        flags: ``os.O_RDWR``, ``os.O_RDONLY``...; ``O_NOFOLLOW`` and ``O_CLOEXEC`` are added.
        create: create the file if it is missing (else ``FileNotFoundError``).

    Returns:
        An open descriptor; the caller closes it.

    Raises:
        StateError: ``path`` is a symbolic link, not a regular file, or has other hard links.
        OSError: it cannot be opened for another reason (callers say which).
    """
    # O_NONBLOCK: a FIFO planted at the path must not hang corral in open().
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(path, "is a symbolic link; corral never follows links here") from exc
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, or a socket
            raise _refused(path, "is not a regular file") from exc
        raise
    try:
        _check_private(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_kind(info: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise _refused(path, "is not a regular file")
    if info.st_nlink > 1:
        raise _refused(path, "has other hard links; corral writes only files of its own")


def _check_private(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    _check_kind(info, path)
    if info.st_mode & _LOOSE:
        os.fchmod(fd, PRIVATE_FILE)
    os.set_blocking(fd, True)


def create_private(path: Path) -> bool:
    """Create ``path`` as an empty 0600 file if nothing is there; True if it was made.

    Raises:
        StateError: a symbolic link (even a dangling one) is at ``path``.
        OSError: it cannot be created.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except FileExistsError:
        if os.path.islink(path):
            raise _refused(path, "is a symbolic link; corral never follows links here") from None
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken bits from the owner
    finally:
        os.close(fd)  # a brand-new file: no connection of this process holds a lock on it
    return True


def tighten_private(path: Path) -> os.stat_result:
    """Check an existing private file and make it 0600, without opening it for I/O.

    It is looked at through an ``O_PATH`` descriptor: closing one never releases the
    POSIX locks the process holds on the file (closing any ordinary descriptor would drop
    the locks of SQLite connections to it in this process).

    Returns:
        The file's status (its ``st_dev`` and ``st_ino`` say which file it is).

    Raises:
        StateError: ``path`` is a symbolic link, not a regular file, or has other hard links.
        OSError: it is missing (``FileNotFoundError``) or its mode cannot be changed.
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISLNK(info.st_mode):
            raise _refused(path, "is a symbolic link; corral never follows links here")
        _check_kind(info, path)
        if info.st_mode & _LOOSE:
            os.chmod(f"/proc/self/fd/{fd}", PRIVATE_FILE)  # fchmod refuses O_PATH
    finally:
        os.close(fd)
    return info


def write_private(path: Path, data: bytes) -> None:
    """Replace the contents of the private file ``path`` (created 0600 if missing).

    Raises:
        StateError: as :func:`open_private`.
        OSError: the file cannot be written.
    """
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_private(path: Path) -> bytes:
    """The contents of the private file ``path``, read without following a link.

    Raises:
        StateError: as :func:`open_private`.
        OSError: the file is missing (``FileNotFoundError``) or unreadable.
    """
    fd = open_private(path, os.O_RDONLY, create=False)
    try:
        chunks = []
        while chunk := os.read(fd, 64 * 1024):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _refused(path: Path, why: str) -> StateError:
    return StateError(f"{path} {why}", path=str(path))
