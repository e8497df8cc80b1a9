"""Health checks, always observed from outside the instance (never by exec into it)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.spec.model import Health, HttpHealth

FAST_PAUSE = 0.02  # seconds between probes in the first FAST_PERIOD
FAST_PERIOD = 1.0
LIVENESS_EVERY = 0.5  # seconds between two asks whether the instance still runs


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    detail: str
    attempts: int


def probe_once(address: str, port: int, health: Health) -> str | None:
    """One check; None when healthy, else what was wrong."""
    if isinstance(health, HttpHealth):
        return _http(address, port, health.http, health.timeout)
    return _tcp(address, port, health.timeout)


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
) -> HealthResult:
    """Probe until a check passes, the instance exits, or ``retries x interval`` is over.

    A deploy waits on every new instance, and most are ready well within a second: the
    first second is probed every 20 ms (a refused connection costs nothing), then the
    pause doubles up to ``interval``. Whether the instance still runs costs an engine
    call, so it is asked at most every ``LIVENESS_EVERY`` seconds.
    """
    started = time.monotonic()
    deadline = started + health.retries * health.interval
    next_liveness = started + LIVENESS_EVERY
    pause, attempts, detail = FAST_PAUSE, 0, "never checked"
    while True:
        attempts += 1
        problem = probe_once(address, port, health)
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
