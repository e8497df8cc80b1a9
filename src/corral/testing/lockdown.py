"""The checks corral runs on every instance of every role in a test environment.

Read-only root, a non-root user, no capabilities beyond those the role names, no host
ports, no SSH server, and nothing listening but the declared port. Looking inside an
instance (``exec_in``) is allowed here only: this is a throwaway environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from corral.deploy.desired import RoleRelease
from corral.engines.base import Engine
from corral.engines.capabilities import Capability, require
from corral.errors import CorralError
from corral.testing.runner import CheckResult

SSH_PROCESSES = ("sshd", "dropbear", "tinysshd")
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def lockdown_checks(engine: Engine, instance: str, rr: RoleRelease) -> list[CheckResult]:
    """One CheckResult per lockdown property of ``instance``.

    Raises:
        NotSupportedError: the engine cannot report security settings or exec: corral
            test cannot check lockdown there, and says so instead of failing every check.
    """
    require(engine, Capability.SECURITY, "corral test's lockdown checks")
    require(engine, Capability.EXEC, "corral test's lockdown checks")
    checks = [
        ("read-only root", lambda: _read_only(engine, instance, rr)),
        ("non-root user", lambda: _non_root(engine, instance)),
        ("no capabilities", lambda: _capabilities(engine, instance, rr)),
        ("no host ports", lambda: _no_host_ports(engine, instance)),
        ("no SSH server", lambda: _no_ssh(engine, instance)),
        ("only declared ports listen", lambda: _only_declared(engine, instance, rr)),
    ]
    return [_run(f"lockdown: {name} ({instance})", check) for name, check in checks]


def _run(name: str, check: Callable[[], str | None]) -> CheckResult:
    started = time.monotonic()
    try:
        problem = check()
    except CorralError as exc:
        problem = f"could not check: {exc.message}"
    outcome = "passed" if problem is None else "failed"
    return CheckResult(name, "lockdown", outcome, time.monotonic() - started, problem or "")


def _read_only(engine: Engine, name: str, rr: RoleRelease) -> str | None:
    if engine.security(name).read_only_root or not rr.lockdown.read_only_root:
        return None  # read-only, or writable as the role declares (lockdown.read_only_root)
    return "the root filesystem is writable"


def _non_root(engine: Engine, name: str) -> str | None:
    user = engine.security(name).user
    if user in ("", "0", "root") or user.startswith(("0:", "root:")):
        return f"runs as {user or 'root (no user set)'}"
    uid = engine.exec_in(name, ["id", "-u"]).checked().strip()
    return f"the process runs as uid {uid}" if uid == "0" else None


def _capabilities(engine: Engine, name: str, rr: RoleRelease) -> str | None:
    allowed = {f"CAP_{c}" if not c.startswith("CAP_") else c for c in rr.lockdown.capabilities}
    extra = sorted(set(engine.security(name).capabilities) - allowed)
    return f"has capabilities the role does not name: {', '.join(extra)}" if extra else None


def _no_host_ports(engine: Engine, name: str) -> str | None:
    ports = engine.security(name).published_ports
    return f"publishes host ports {ports}; only the edge may" if ports else None


def _no_ssh(engine: Engine, name: str) -> str | None:
    listening = listening_ports(engine, name)
    if 22 in listening:
        return "something listens on port 22"
    command = ["sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null"]
    names = engine.exec_in(name, command).checked().split()
    found = sorted(set(names) & set(SSH_PROCESSES))
    return f"an SSH server runs: {', '.join(found)}" if found else None


def _only_declared(engine: Engine, name: str, rr: RoleRelease) -> str | None:
    declared = {rr.run.port} if rr.run.port else set()
    extra = sorted(listening_ports(engine, name) - declared)
    return f"undeclared listening port(s): {extra}" if extra else None


def listening_ports(engine: Engine, name: str) -> set[int]:
    """TCP ports in LISTEN state inside the instance, read from /proc/net/tcp{,6}."""
    command = ["sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"]
    text = engine.exec_in(name, command).checked()
    ports = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == _LISTEN and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
