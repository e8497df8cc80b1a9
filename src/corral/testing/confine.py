"""``python -m corral.testing.confine COMMAND...``: run COMMAND in a Landlock domain.

The test sandbox shares the host's network namespace (the tests talk to the environment's
edge and instances), and with it the host's *abstract* Unix sockets, which have no file
for the sandbox's view to leave out. A Landlock domain that scopes them (Linux 6.12,
Landlock ABI 6) leaves a process able to reach only the abstract sockets made inside its
own domain, and to signal only processes in it. The domain is inherited by everything
COMMAND starts and cannot be left. On an older kernel the command runs without it, and
one line on standard error says so (it lands in the tests' log).
"""

from __future__ import annotations

import ctypes
import os
import sys

#: System call numbers, the same on every architecture (the unified syscall table).
_CREATE_RULESET = 444
_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_PR_SET_NO_NEW_PRIVS = 38
#: Landlock scopes (ABI 6).
SCOPE_ABSTRACT_UNIX_SOCKET = 1
SCOPE_SIGNAL = 2
SCOPES_ABI = 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or it is disabled)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def confine() -> bool:
    """Scope this process's abstract Unix sockets and signals to its own Landlock domain;
    False when the kernel cannot (then nothing changed).

    Raises:
        OSError: the kernel offers the scopes but refused to apply them.
    """
    if landlock_abi() < SCOPES_ABI:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _RulesetAttr(0, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    fd = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    return True


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m corral.testing.confine COMMAND...")
    if not confine():
        print(
            "corral: this kernel has no Landlock scopes (Linux 6.12): the host's abstract "
            "Unix sockets stay reachable from the tests",
            file=sys.stderr,
            flush=True,
        )
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
