"""Kinds of spec values and what each may contain: a spec can only describe, never inject.

A spec is untrusted input: anyone with commit rights can change it. Every value that
reaches a Containerfile, an argv, a path, a label or HAProxy's configuration is checked
here for its kind (a path inside the image, a path on the host, a capability, an image
reference, a URL path...). Each check returns the value (normalised where documented in
docs/spec.md) or raises ``ValueError`` with a plain message; pydantic turns that into a
located diagnostic. The checks that need the file system (symlinks, file types) live
in ``corral.spec.load`` and reuse ``host_path_problem`` so that a value is reported once.
"""

from __future__ import annotations

import ipaddress
import re

MAX_PATH = 4096  # PATH_MAX
MAX_SEGMENT = 255  # NAME_MAX
MAX_URL_PATH = 1024  # HAProxy reads lines of at most 2048 characters
MAX_IMAGE_REF = 512
MAX_IMAGE_NAME = 255  # the registry's limit on a repository name

# --- text ----------------------------------------------------------------------------


def printable(value: str) -> str:
    """``value`` when it has no control, format or other invisible character.

    Raises:
        ValueError: it contains one (a newline, NUL, U+202E...); names it and where.
    """
    if not value.isprintable():
        index, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        raise ValueError(
            f"the control or invisible character U+{ord(char):04X} (character {index + 1}) "
            "is not allowed here"
        )
    return value


def no_nul(value: str) -> str:
    """``value`` when it has no NUL character: an argv or an environment cannot carry one.

    Raises:
        ValueError: it contains NUL.
    """
    if "\x00" in value:
        raise ValueError(
            f"the NUL character (U+0000, character {value.index(chr(0)) + 1}) cannot be "
            "passed to a program"
        )
    return value


# --- paths inside the image ----------------------------------------------------------

# Portable file name characters and a few more. Excluded on purpose: '$' and '\' (a
# Containerfile expands and escapes them), ':' and ',' (mount option separators), spaces,
# quotes and anything outside ASCII.
_IMAGE_SEGMENT = re.compile(r"[A-Za-z0-9._+@%=~-]+", re.ASCII)
_IMAGE_CHARS = "letters, digits and . _ - + @ % = ~"

# Kernel and runtime file systems, refused with everything under them.
_RUNTIME_TREES = {
    "/proc": "is the kernel's process file system",
    "/sys": "is the kernel's sysfs",
    "/dev": "holds the container's devices",
    "/run": "is a tmpfs corral mounts (it holds /run/secrets)",
}
# Folders whose files the system needs: a volume mounted there would hide them.
_SYSTEM_FOLDERS = frozenset(
    {"/", "/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/usr"}
    | {"/usr/bin", "/usr/lib", "/usr/lib64", "/usr/sbin", "/var"}
)
_CORRAL_MOUNTS = {"/tmp": "is a tmpfs corral mounts"}


def image_path(value: str, folder_slash: bool = False) -> str:
    """``value`` when it is an absolute path in normal form, of portable characters.

    Non-normal forms ('//', '/./', '/../', a trailing '/') are refused, never rewritten,
    so the spec shows the path that is used. ``folder_slash`` allows one trailing '/'
    where it has a meaning (a ``build.copy`` destination that is a folder).

    Raises:
        ValueError: the path is relative, too long, not in normal form or has a
            character outside the portable set.
    """
    printable(value)
    if not value.startswith("/"):
        raise ValueError("expected an absolute path in the image, starting with '/'")
    if len(value) > MAX_PATH:
        raise ValueError(f"expected a path of at most {MAX_PATH} characters")
    body = value[1:]
    if folder_slash and body.endswith("/"):
        body = body[:-1]
    if body:
        for segment in body.split("/"):
            _check_segment(segment)
    return value


def _check_segment(segment: str) -> None:
    if segment == "":
        raise ValueError("write the path in normal form: no '//' and no trailing '/'")
    if segment in (".", ".."):
        raise ValueError(f"write the path in normal form: no '{segment}' segments")
    if len(segment) > MAX_SEGMENT:
        raise ValueError(f"a path segment may have at most {MAX_SEGMENT} characters")
    if not _IMAGE_SEGMENT.fullmatch(segment):
        bad = next(c for c in segment if not _IMAGE_SEGMENT.fullmatch(c))
        raise ValueError(f"{bad!r} is not allowed in a path in the image (use {_IMAGE_CHARS})")


def copy_dest(value: str) -> str:
    """A ``build.copy`` destination: an image path; a trailing '/' means 'into this folder'."""
    return image_path(value, folder_slash=True)


def mount_path(value: str) -> str:
    """A volume's mount path: an image path that neither breaks nor hides the system.

    Raises:
        ValueError: as ``image_path``, or the path is one of the refused mount points.
    """
    image_path(value)
    for tree, why in _RUNTIME_TREES.items():
        if value == tree or value.startswith(tree + "/"):
            raise ValueError(f"a volume cannot be mounted at {value}: {tree} {why}")
    if value in _CORRAL_MOUNTS:
        raise ValueError(f"a volume cannot be mounted at {value}: it {_CORRAL_MOUNTS[value]}")
    if value in _SYSTEM_FOLDERS:
        raise ValueError(f"a volume at {value} would hide the system's own files there")
    return value


# Folders every instance gets as a tmpfs already, and corral's own folder of secrets.
_TMPFS_TAKEN = {
    "/tmp": "is a tmpfs every instance gets already",
    "/run": "is a tmpfs every instance gets already, owned by its user",
    "/var/run": "is Debian's link to /run, a tmpfs every instance gets already",
}
_SECRET_TREES = ("/run/secrets", "/var/run/secrets")


def tmpfs_path(value: str) -> str:
    """A ``run.tmpfs`` folder: an image path for a writable, empty folder on a read-only root.

    Raises:
        ValueError: as ``image_path``; or the path is in the kernel's or the runtime's
            trees, is a tmpfs instances get already (``/tmp``, ``/run``), is corral's
            folder of secrets or under it, or would hide the system's files.
    """
    image_path(value)
    for tree in (*_SECRET_TREES, "/proc", "/sys", "/dev"):
        if value == tree or value.startswith(tree + "/"):
            why = _RUNTIME_TREES.get(tree, "holds the instance's secrets")
            raise ValueError(f"a tmpfs cannot be mounted at {value}: {tree} {why}")
    if value in _TMPFS_TAKEN:
        raise ValueError(f"{value} {_TMPFS_TAKEN[value]}: name a folder inside it")
    if value in _SYSTEM_FOLDERS:
        raise ValueError(f"a tmpfs at {value} would hide the system's own files there")
    return value


# Where a health command gets the instance's address and port: whole arguments only.
PROBE_PLACEHOLDERS = ("{host}", "{port}")


def probe_argument(value: str) -> str:
    """An argument of a health command: ``{host}`` and ``{port}`` only as whole arguments.

    Each placeholder is replaced by the instance's address or port as one whole argument
    (never spliced into a longer text), so a refused spelling is refused, not ignored.

    Raises:
        ValueError: a placeholder is part of a longer argument (``-h{host}``).
    """
    for placeholder in PROBE_PLACEHOLDERS:
        if placeholder in value and value != placeholder:
            raise ValueError(
                f"{placeholder} must be a whole argument (write '-h', '{placeholder}', "
                f"not '-h{placeholder}'): it is replaced as one argument, never inside text"
            )
    return value


# --- paths on the host ---------------------------------------------------------------


def host_path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file in the spec's folder, or None when its text can.

    Only the text is judged here; ``corral.spec.load`` resolves symlinks and confines the
    result to the spec's folder.
    """
    try:
        printable(value)
    except ValueError as exc:
        return str(exc)
    if len(value) > MAX_PATH:
        return f"expected a path of at most {MAX_PATH} characters"
    if value.startswith("/"):
        return "expected a path relative to the spec's folder, not an absolute path"
    if ".." in value.split("/"):
        return "'..' is not allowed: name the file from the spec's folder, inside it"
    return None


def host_path(value: str) -> str:
    """A path on the host, relative to the spec's folder (``build.copy[].src``, ``tests``...).

    Raises:
        ValueError: see ``host_path_problem``.
    """
    problem = host_path_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def state_path(value: str) -> str:
    """The state database's path: anywhere (a later release moves it), but plain text.

    Raises:
        ValueError: it is empty, too long or has a control character.
    """
    printable(value)
    if not value:
        raise ValueError("expected a file path; leave 'state' out for the default")
    if len(value) > MAX_PATH:
        raise ValueError(f"expected a path of at most {MAX_PATH} characters")
    return value


# --- capabilities --------------------------------------------------------------------

# Every capability of Linux 6.x (include/uapi/linux/capability.h), without "CAP_".
LINUX_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    }
)
# Capabilities that reach past the container: the host's kernel, clock, logs or
# security modules, or known ways out of a container. docs/spec.md says why for each.
REFUSED_CAPABILITIES = {
    "ALL": "would grant every capability",
    "SYS_ADMIN": "is nearly root on the host (mounts, namespaces)",
    "SYS_MODULE": "loads kernel modules into the host's kernel",
    "SYS_RAWIO": "gives raw access to devices and memory",
    "SYS_PTRACE": "can trace and inject into other processes",
    "DAC_READ_SEARCH": "opens host files by handle (a known container escape)",
    "SYS_BOOT": "can reboot or load a new kernel",
    "SYS_TIME": "sets the host's clock",
    "SYS_PACCT": "switches the host's process accounting",
    "SYSLOG": "reads and clears the kernel log (it leaks kernel addresses)",
    "AUDIT_CONTROL": "changes the host's audit rules",
    "MAC_ADMIN": "changes the host's security module policy",
    "MAC_OVERRIDE": "overrides the host's security module policy",
    "BPF": "loads programs into the host's kernel",
    "PERFMON": "observes the host's kernel and other processes",
    "WAKE_ALARM": "sets alarms that wake the host",
    "BLOCK_SUSPEND": "keeps the host from suspending",
}
_CAPABILITY = re.compile(r"(?:CAP_)?([A-Z][A-Z_]*)", re.ASCII)


def capability(value: str) -> str:
    """A grantable Linux capability, normalised to its name without ``CAP_`` in capitals.

    Raises:
        ValueError: it is no Linux capability, or one corral refuses to grant.
    """
    match = _CAPABILITY.fullmatch(value.upper()) if len(value) <= 64 else None
    name = match.group(1) if match else ""
    if name in REFUSED_CAPABILITIES:
        raise ValueError(f"capability {name} is refused: it {REFUSED_CAPABILITIES[name]}")
    if name not in LINUX_CAPABILITIES:
        raise ValueError(
            f"expected a Linux capability such as 'NET_BIND_SERVICE', got {value[:60]!r}"
        )
    return name


def distinct_capabilities(values: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` when no capability is named twice (``CAP_X`` and ``X`` are one).

    Raises:
        ValueError: one is listed twice.
    """
    seen: set[str] = set()
    for name in values:
        if name in seen:
            raise ValueError(f"capability {name} is listed twice")
        seen.add(name)
    return values


# --- image references ----------------------------------------------------------------

# The reference grammar of the distribution project (docker and podman read the same).
_ALNUM = r"[a-z0-9]+"
_COMPONENT = rf"{_ALNUM}(?:(?:[_.]|__|-+){_ALNUM})*"
_HOST_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)


def image_reference(value: str) -> str:
    """An image reference such as ``localhost/base:12`` (never an option like ``--x``).

    Raises:
        ValueError: it is too long or does not follow the reference grammar.
    """
    if value.startswith("-"):
        raise ValueError("an image reference cannot start with '-' (it would read as an option)")
    match = _REFERENCE.fullmatch(value) if len(value) <= MAX_IMAGE_REF else None
    if match is None or len(match.group(1)) > MAX_IMAGE_NAME:
        raise ValueError(
            "expected an image reference such as 'localhost/base:12' (lowercase name, "
            f"optional :tag and @digest, at most {MAX_IMAGE_NAME} characters in the name)"
        )
    return value


# --- URLs, sizes, addresses ----------------------------------------------------------

# RFC 3986 path characters and an optional query, less "'" and "$": the path is written
# into HAProxy's configuration, where a quote starts a quoted word and "$" a variable.
_PCHAR = r"(?:[A-Za-z0-9\-._~!&()*+,;=:@]|%[0-9A-Fa-f]{2})"
_URL_PATH = re.compile(rf"/(?:{_PCHAR}|/)*(?:\?(?:{_PCHAR}|[/?])*)?", re.ASCII)


def url_path(value: str) -> str:
    """An HTTP request path such as ``/healthz`` or ``/ready?full=1``.

    Raises:
        ValueError: not an absolute URL path of RFC 3986 characters, or too long.
    """
    if not value.startswith("/"):
        raise ValueError("expected a URL path starting with '/', such as '/healthz'")
    if len(value) > MAX_URL_PATH:
        raise ValueError(f"expected a URL path of at most {MAX_URL_PATH} characters")
    if not _URL_PATH.fullmatch(value):
        raise ValueError(
            "expected a URL path of RFC 3986 characters (no spaces, quotes, '$', '#' or "
            "control characters; write others %-encoded)"
        )
    return value


_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 6 * 1024**2  # podman refuses less
MAX_MEMORY = 1024**4
_MEMORY = re.compile(r"([0-9]{1,16})([kmg]?)", re.ASCII)


def memory(value: str) -> str:
    """A memory size such as ``512m`` or ``2g``, from 6m to 1024g.

    Raises:
        ValueError: not a size, or outside the bounds.
    """
    match = _MEMORY.fullmatch(value)
    if match is None:
        raise ValueError(f"expected a memory size such as '512m' or '2g', got {value[:40]!r}")
    size = int(match.group(1)) * _UNIT[match.group(2)]
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(f"expected a memory size from 6m to 1024g, got {value!r}")
    return value


def edge_address(value: str) -> str:
    """An IPv4 address the edge can publish on, in its normal form.

    IPv6 is refused for now: the engine writes the address into ``--publish`` without the
    brackets an IPv6 address needs there.

    Raises:
        ValueError: not an IP address, IPv6, multicast or reserved.
    """
    try:
        address = ipaddress.ip_address(value) if value.isascii() else None
    except ValueError:
        address = None
    if address is None:
        raise ValueError(f"expected an IP address such as '127.0.0.1', got {value[:60]!r}")
    if address.version == 6:
        raise ValueError("the edge publishes on IPv4 addresses only, such as '127.0.0.1'")
    if address.is_multicast or address.is_reserved:
        raise ValueError(f"{value} is a multicast or reserved address; the edge cannot bind it")
    return str(address)
