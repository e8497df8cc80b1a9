"""Where a role's test files run: a bubblewrap sandbox that sees almost nothing of the host.

A role's tests are code from the spec, as untrusted as its build scripts, but they run on
corral's host, as corral's user. :func:`sandboxed` wraps their command in ``bwrap``
(Debian's bubblewrap) so that they:

- see a read-only view built from an allow list: ``/usr`` (and the merged-``/usr`` links),
  the few ``/etc`` files a Python program needs (:data:`ETC_ENTRIES`), the Python that runs
  corral and the folders on its import path, and the folders the caller names (the tests);
  nothing else of the host: not corral's state, the backup repository or its password
  files, not Podman's socket or storage, not the home folder;
- write only to a private, empty ``/tmp`` and to the folders the caller names (the run's
  report files); the rest of the view, its root included, is read-only;
- run with no capabilities, in their own user, mount, PID, IPC and UTS namespaces, unable to
  make more user namespaces; when the run ends, everything they started is killed with it
  (the PID namespace's init goes, and the kernel takes the rest);
- share the host's network: the tests talk to the environment's edge and instances. The
  services corral runs on that network ask for what the sandbox does not hold (the backup
  server is append-only and wants the repository's credentials). The host's abstract Unix
  sockets, which belong to the network namespace, are kept out by a Landlock scope
  (:mod:`corral.testing.confine`, Linux 6.12 and later);
- reach an instance's container only through the exec broker (:mod:`corral.testing.broker`),
  which runs a command in one of the environment's instances and nowhere else.

``hidden`` paths that fall inside the view (a state folder or a password file beside the
tests, say) are covered: an empty folder over a folder, the null device (which cannot be
opened there) over a file.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from corral.errors import UsageError

BWRAP = "bwrap"
INSTALL_HINT = "role tests run in a bubblewrap sandbox: install it (apt-get install bubblewrap)"

#: The top-level entries of a merged-/usr system, bound (or linked) as the host has them.
SYSTEM_ENTRIES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: What a Python program (name lookups, TLS, time zones, users) reads in /etc; no more.
#: Bound where their links lead (resolv.conf is often one into /run).
ETC_ENTRIES = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl/certs",  # not /etc/ssl: its private/ holds the host's TLS keys
    "/etc/ssl/openssl.cnf",
    "/etc/timezone",
)
#: The sandbox's home and temporary folder (a private tmpfs).
SANDBOX_TMP = "/tmp"
#: Engine programs the view shows (they live in /usr) but that cannot work in it: each is
#: covered by :data:`NO_ENGINE`, which says why instead of failing obscurely.
ENGINE_PROGRAMS = ("podman", "docker")
NO_ENGINE = """#!/bin/sh
echo "corral: ${0##*/} is not available to role tests: they run in a sandbox without the \
engine (docs/testing.md, Where the tests run); reach an instance through the host or hosts \
fixture, or its URL" >&2
exit 125
"""


def bwrap_path() -> str:
    """The ``bwrap`` executable.

    Raises:
        UsageError: bubblewrap is not installed.
    """
    found = shutil.which(BWRAP)
    if found is None:
        raise UsageError(INSTALL_HINT)
    return found


def sandboxed(
    command: Sequence[str],
    *,
    readable: Iterable[Path],
    writable: Iterable[Path],
    hidden: Iterable[Path] = (),
    cwd: Path,
    no_engine: Path | None = None,
) -> list[str]:
    """``command`` wrapped in a ``bwrap`` sandbox (see the module's docstring), and in
    the Landlock domain of :mod:`corral.testing.confine` inside it.

    Args:
        command: the argv to run inside; its program must be in the view.
        readable: folders or files the command may read (bound read-only, at the same
            path, after ``writable``: a readable path inside a writable one stays
            read-only).
        writable: folders the command may write (bound read-write, at the same path).
        hidden: paths covered wherever they fall inside the view, unless covering one
            would hide a readable path.
        cwd: the command's working folder (one of the paths above).
        no_engine: an executable file (:data:`NO_ENGINE`) shown in place of each of
            :data:`ENGINE_PROGRAMS` the host has.
    """
    readable, hidden = list(readable), [h.absolute() for h in hidden]
    binds = _Binds()
    for entry in SYSTEM_ENTRIES:
        binds.system(Path(entry))
    for entry in ETC_ENTRIES:
        binds.add("--ro-bind", Path(entry))
    for path in python_paths(keep_out=[*hidden, *readable]):
        binds.add("--ro-bind", path)
    for path in writable:
        binds.add("--bind", path)
    for path in readable:
        binds.add("--ro-bind", path)
    return [
        bwrap_path(),
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        SANDBOX_TMP,
        *binds.args,
        *_covers(hidden, binds.roots, readable),
        *_engine_notices(no_engine),
        "--remount-ro",
        "/",
        "--chdir",
        str(cwd),
        "--",
        sys.executable,
        "-m",
        "corral.testing.confine",
        *command,
    ]


def sandbox_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the home and temporary folder inside the sandbox, and
    ``PYTHONPATH`` absolute (the sandbox's working folder is not corral's)."""
    found = {**environ, "HOME": SANDBOX_TMP, "TMPDIR": SANDBOX_TMP}
    if environ.get("PYTHONPATH"):
        found["PYTHONPATH"] = _absolute_path_list(environ["PYTHONPATH"])
    return found


def _absolute_path_list(value: str) -> str:
    return os.pathsep.join(str(Path(p).absolute()) for p in value.split(os.pathsep) if p)


class _Binds:
    """bwrap's bind arguments, each path once, in order; ``roots`` pairs each path bound
    with where it leads on the host."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.roots: list[tuple[Path, Path]] = []

    def system(self, path: Path) -> None:
        if path.is_symlink():  # /bin -> usr/bin on a merged-/usr system: keep it a link
            self.args += ["--symlink", os.readlink(path), str(path)]
        elif path.exists():
            self.add("--ro-bind", path)

    def add(self, how: str, path: Path) -> None:
        path = path.absolute()
        if not path.exists():
            return
        self.roots = [(b, r) for b, r in self.roots if b != path]  # the last bind wins
        self.roots.append((path, path.resolve()))
        self.args += [how, str(path), str(path)]


def _covers(
    hidden: Iterable[Path], roots: Sequence[tuple[Path, Path]], readable: Sequence[Path]
) -> list[str]:
    """bwrap arguments that cover each hidden path where it shows in the view, compared
    by where paths lead (a spec reached through a link, a hidden path that is one)."""
    shown = [p.resolve() for p in readable]
    args: list[str] = []
    for path in hidden:
        target = path.resolve()
        if not target.exists() or any(_within(s, target) for s in shown):
            continue  # nothing to cover, or covering it would hide the tests
        for bound, leads_to in roots:
            if _within(target, leads_to):
                where = bound / target.relative_to(leads_to)
                if target.is_dir():
                    args += ["--tmpfs", str(where)]
                else:
                    args += ["--ro-bind", os.devnull, str(where)]
    return args


def _engine_notices(no_engine: Path | None) -> list[str]:
    args: list[str] = []
    for name in ENGINE_PROGRAMS if no_engine is not None else ():
        found = shutil.which(name)
        if found is not None:
            args += ["--ro-bind", str(no_engine), found]
    return args


def _within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def python_paths(keep_out: Iterable[Path] = ()) -> list[Path]:
    """What the Python running corral needs to run pytest and corral's plugin: its
    prefixes and every folder on its import path (an editable install's source too), but
    none that holds one of ``keep_out`` or the home folder (a checkout or home on the
    path would show the spec folder around the tests, or rootless Podman's storage)."""
    pythonpath = os.environ.get("PYTHONPATH", "")
    found = [Path(p) for p in _python_paths(sys.executable, _absolute_path_list(pythonpath))]
    outside = [p.resolve() for p in keep_out] + [Path.home().resolve()]
    return [p for p in found if not any(_within(o, p.resolve()) for o in outside)]


@functools.cache
def _python_paths(executable: str, pythonpath: str) -> tuple[str, ...]:
    # Asked of a fresh interpreter, not read off this one: pytest or a caller may have
    # put their own folders on this process's path.
    probe = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, *sys.path]))"
    env = {"PATH": os.defpath, "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        out = subprocess.run(
            [executable, "-c", probe],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"cannot ask {executable} for its import path: {exc}") from exc
    found = [str(Path(executable).absolute().parent)]
    found += [p for p in json.loads(out) if p and p != "/" and Path(p).exists()]
    return tuple(dict.fromkeys(found))
