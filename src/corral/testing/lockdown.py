"""The checks corral runs on every instance of every role in a test environment.

Read-only root, a non-root user, no capabilities beyond those the role names, no host
ports, no SSH server, and nothing listening but the declared port. Looking inside an
instance (``exec_in``) is allowed here only: this is a throwaway environment.

Each instance is looked at twice, whatever the number of checks: one inspection (its
security settings) and one command inside it that prints what the other checks read.
Every ``podman exec`` costs a quarter of a second here; one per check made the lockdown
of the example's five instances take 7 s of every ``corral test``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from corral.deploy.desired import RoleRelease
from corral.engines.base import Engine
from corral.engines.capabilities import Capability, require
from corral.engines.values import SecurityFacts
from corral.errors import CorralError
from corral.testing.runner import CheckResult

T = TypeVar("T")

SSH_PROCESSES = ("sshd", "dropbear", "tinysshd")
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
# Between the parts of what the look inside prints. A process name (/proc/N/comm) is at
# most 15 bytes, so no process can print it to pass for one.
_SECTION = "--corral-lockdown-section--"
_LOOK = (
    f"id -u; echo {_SECTION}; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null;"
    f" echo {_SECTION}; cat /proc/[0-9]*/comm 2>/dev/null; true"
)


@dataclass(frozen=True)
class Inside:
    """What the command run inside an instance printed."""

    uid: str
    listening: frozenset[int]  # TCP ports in LISTEN state
    processes: frozenset[str]  # the names of its processes

    @classmethod
    def read(cls, engine: Engine, name: str) -> Inside:
        """Raises CorralError: the command could not run, or printed something else."""
        parts = engine.exec_in(name, ["sh", "-c", _LOOK]).checked().split(f"{_SECTION}\n")
        if len(parts) != 3:
            raise CorralError(f"the look inside {name} printed {len(parts)} parts, not 3")
        uid, tcp, comm = parts
        return cls(uid.strip(), frozenset(listening_ports(tcp)), frozenset(comm.split()))


def lockdown_checks(engine: Engine, instance: str, rr: RoleRelease) -> list[CheckResult]:
    """One CheckResult per lockdown property of ``instance``.

    Raises:
        NotSupportedError: the engine cannot report security settings or exec: corral
            test cannot check lockdown there, and says so instead of failing every check.
    """
    require(engine, Capability.SECURITY, "corral test's lockdown checks")
    require(engine, Capability.EXEC, "corral test's lockdown checks")
    facts = _Looked(lambda: engine.security(instance))
    inside = _Looked(lambda: Inside.read(engine, instance))
    checks = [
        ("read-only root", lambda: _read_only(facts(), rr)),
        ("non-root user", lambda: _non_root(facts(), inside)),
        ("no capabilities", lambda: _capabilities(facts(), rr)),
        ("no host ports", lambda: _no_host_ports(facts())),
        ("no SSH server", lambda: _no_ssh(inside())),
        ("only declared ports listen", lambda: _only_declared(inside(), rr)),
    ]
    return [_run(f"lockdown: {name} ({instance})", check) for name, check in checks]


class _Looked(Generic[T]):
    """A look at an instance made once, when a check first needs it; its error, if it
    failed, is raised again for every check that needs it."""

    def __init__(self, look: Callable[[], T]) -> None:
        self._look = look
        self._answer: T | CorralError | None = None

    def __call__(self) -> T:
        if self._answer is None:
            try:
                self._answer = self._look()
            except CorralError as exc:
                self._answer = exc
        if isinstance(self._answer, CorralError):
            raise self._answer
        return self._answer


def _run(name: str, check: Callable[[], str | None]) -> CheckResult:
    started = time.monotonic()
    try:
        problem = check()
    except CorralError as exc:
        problem = f"could not check: {exc.message}"
    outcome = "passed" if problem is None else "failed"
    return CheckResult(name, "lockdown", outcome, time.monotonic() - started, problem or "")


def _read_only(facts: SecurityFacts, rr: RoleRelease) -> str | None:
    if facts.read_only_root or not rr.lockdown.read_only_root:
        return None  # read-only, or writable as the role declares (lockdown.read_only_root)
    return "the root filesystem is writable"


def _non_root(facts: SecurityFacts, inside: _Looked[Inside]) -> str | None:
    user = facts.user
    if user in ("", "0", "root") or user.startswith(("0:", "root:")):
        return f"runs as {user or 'root (no user set)'}"
    uid = inside().uid
    return f"the process runs as uid {uid}" if uid == "0" else None


def _capabilities(facts: SecurityFacts, rr: RoleRelease) -> str | None:
    allowed = {f"CAP_{c}" if not c.startswith("CAP_") else c for c in rr.lockdown.capabilities}
    extra = sorted(set(facts.capabilities) - allowed)
    return f"has capabilities the role does not name: {', '.join(extra)}" if extra else None


def _no_host_ports(facts: SecurityFacts) -> str | None:
    ports = facts.published_ports
    return f"publishes host ports {ports}; only the edge may" if ports else None


def _no_ssh(inside: Inside) -> str | None:
    if 22 in inside.listening:
        return "something listens on port 22"
    found = sorted(inside.processes & set(SSH_PROCESSES))
    return f"an SSH server runs: {', '.join(found)}" if found else None


def _only_declared(inside: Inside, rr: RoleRelease) -> str | None:
    declared = {rr.run.port} if rr.run.port else set()
    extra = sorted(inside.listening - declared)
    return f"undeclared listening port(s): {extra}" if extra else None


def listening_ports(tcp: str) -> set[int]:
    """TCP ports in LISTEN state in ``tcp``, the text of /proc/net/tcp and tcp6."""
    ports = set()
    for line in tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == _LISTEN and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
