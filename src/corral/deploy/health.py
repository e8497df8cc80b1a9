"""Health checks, always observed from outside the instance (never by exec into it).

HTTP and TCP checks are made by corral itself. A command check (``pg_isready``) runs in a
throwaway container of the role's image on the fleet's network, locked down as an
instance is, and never inside the instance.
"""

from __future__ import annotations

import functools
import http.client
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from secrets import token_hex

from corral.engines.base import ContainerSpec, Engine
from corral.spec.model import CommandHealth, Health, HttpHealth, TcpHealth

FAST_PAUSE = 0.02  # seconds between probes in the first FAST_PERIOD
FAST_PERIOD = 1.0
LIVENESS_EVERY = 0.5  # seconds between two asks whether the instance still runs
# What a probe container may take beyond ``timeout`` to be started and removed: a
# container start costs 0.3-2 s on a loaded machine, and the command's own time is
# what ``timeout`` bounds.
PROBE_START_ALLOWANCE = 10.0

#: One check of one instance: None when healthy, else what was wrong.
Probe = Callable[[], str | None]


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    detail: str
    attempts: int


def probe_once(address: str, port: int, health: HttpHealth | TcpHealth) -> str | None:
    """One check; None when healthy, else what was wrong."""
    if isinstance(health, HttpHealth):
        return _http(address, port, health.http, health.timeout)
    return _tcp(address, port, health.timeout)


def network_check(health: Health) -> HttpHealth | TcpHealth:
    """The check that can be made without running anything: a command check's is a TCP
    connection to the port (what the edge's HAProxy and ``status`` check between deploys)."""
    if isinstance(health, CommandHealth):
        return TcpHealth(
            tcp=True, interval=health.interval, timeout=health.timeout, retries=health.retries
        )
    return health


def probe_command(command: Sequence[str], host: str, port: int) -> tuple[str, ...]:
    """``command`` with each ``{host}`` and ``{port}`` argument replaced, whole, by the
    instance's address and port; no other text is touched (the spec refuses a
    placeholder inside a longer argument)."""
    values = {"{host}": host, "{port}": str(port)}
    return tuple(values.get(argument, argument) for argument in command)


@dataclass(frozen=True)
class CommandProbe:
    """A command check: each call runs ``spec`` in a new throwaway container.

    ``spec`` is the probe's container (see ``corral.deploy.instances.probe_spec``); each
    run gets a name of its own, so a probe killed while it hung never blocks the next.
    """

    engine: Engine
    spec: ContainerSpec
    timeout: float

    def __call__(self) -> str | None:
        spec = replace(self.spec, name=f"{self.spec.name}-{token_hex(4)}")
        result = self.engine.run_probe(spec, self.timeout + PROBE_START_ALLOWANCE)
        if result.exit_code == 0:
            return None
        program = spec.command[0].rsplit("/", 1)[-1]
        if result.exit_code is None:
            return f"{program}: no answer within {self.timeout:g}s (the probe was killed)"
        said = _last_line(result.output)
        return f"{program}: exit {result.exit_code}" + (f": {said}" if said else "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _http(address: str, port: int, path: str, timeout: float) -> str | None:
    # The standard library's plain-HTTP client: a probe is one GET on a private network,
    # and a deploy makes one per new instance, so it must cost no TLS set-up or import.
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        if 200 <= response.status < 400:
            return None
        body = response.read(ANSWER_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        return f"GET {path}: {_exception_words(exc, timeout)}"
    finally:
        connection.close()
    return f"GET {path}: HTTP {response.status} {response.reason}".rstrip() + _quoted(body)


ANSWER_BYTES = 200  # of a failing answer's body, kept with the failure


def _quoted(body: bytes) -> str:
    """The first bytes of an answer as one printable line (``: "..."``), or nothing."""
    text = " ".join(body.decode("utf-8", "replace").split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return f': "{text}"' if text else ""


def _exception_words(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on the port)"
    if isinstance(exc, TimeoutError):
        return f"timed out (no answer within {timeout:g}s)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the instance closed the connection without answering"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _tcp(address: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"TCP {port}: {exc.strerror or exc}"


def wait_healthy(
    address: str,
    port: int,
    health: Health,
    still_running: Callable[[], bool] = lambda: True,
    probe: Probe | None = None,
) -> HealthResult:
    """Probe until a check passes, the instance exits, or ``retries x interval`` is over.

    A deploy waits on every new instance, and most are ready well within a second: the
    first second is probed every 20 ms (a refused connection costs nothing), then the
    pause doubles up to ``interval``. Whether the instance still runs costs an engine
    call, so it is asked at most every ``LIVENESS_EVERY`` seconds.

    Args:
        probe: the check to make (a ``CommandProbe``); HTTP and TCP checks are made
            here. A command check has no default: it is never replaced by a weaker one.

    Raises:
        ValueError: ``health`` is a command check and no ``probe`` was given.
    """
    if probe is None:
        if isinstance(health, CommandHealth):
            raise ValueError("a command check runs in a probe container: pass its probe")
        probe = functools.partial(probe_once, address, port, health)
    started = time.monotonic()
    deadline = started + health.retries * health.interval
    next_liveness = started + LIVENESS_EVERY
    pause, attempts, detail = FAST_PAUSE, 0, "never checked"
    while True:
        attempts += 1
        problem = probe()
        if problem is None:
            return HealthResult(True, "healthy", attempts)
        detail = problem
        now = time.monotonic()
        if now >= next_liveness:
            if not still_running():
                return HealthResult(False, f"the instance exited ({detail})", attempts)
            next_liveness = now + max(LIVENESS_EVERY, health.interval)
        if now + pause > deadline:
            allowed = health.retries * health.interval
            return HealthResult(False, f"{detail} (still failing after {allowed:g}s)", attempts)
        time.sleep(pause)
        if now - started >= FAST_PERIOD:
            pause = min(max(pause * 2, FAST_PAUSE), health.interval)
