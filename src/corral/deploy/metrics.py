"""``corral watch --metrics ADDR:PORT``: the watcher seen from outside, as Prometheus'
text format on ``/metrics`` (served by prometheus_client, the reference client).

- ``corral_instances{role,state}``: the fleet's instances by engine state, read when
  scraped (one listing: a scrape never waits for a pass);
- ``corral_burns_total{reason}``: instances burned or removed, by kind of reason
  (``dead``, ``exec``, ``files``, ``break-glass``, ``tainted``, ``orphan``, ``surplus``,
  ``drift``);
- ``corral_replacements_total{reason}``: instances replaced (a burned instance of a role,
  so not an orphan or a surplus one), by the same kinds;
- ``corral_reconcile_passes_total{status}`` and ``corral_reconcile_failures_total``;
- ``corral_replace_seconds``: from the start of a pass that replaced something to its
  replacements serving (the event that woke it came at most one event-loop tick before).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from corral.deploy.reconcile import Burn, Reconciled
from corral.engines.base import ContainerInfo
from corral.errors import UsageError
from corral.formats import LABEL_PREFIX

REPLACE_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_ADDRESS = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]*)):(?P<port>[0-9]{1,5})$"
)


def reason_kind(reason: str) -> str:
    """A burn's reason (the planner's words) as one of a few label values."""
    text = reason.removeprefix("tainted: ")
    kinds = (
        ("exec event", "exec"),
        ("files changed", "files"),
        ("break-glass", "break-glass"),
        ("not running", "dead"),
        ("is no longer in the spec", "orphan"),
        ("is not in release ", "orphan"),
        ("is not in any earlier release", "orphan"),
        ("more than ", "surplus"),
    )
    for words, kind in kinds:
        if words in text:
            return kind
    return "tainted" if reason.startswith("tainted: ") else "drift"


def replaced(burn: Burn) -> bool:
    """Whether a burn was replaced by a new instance (an orphan or surplus one is not)."""
    return bool(burn.role) and reason_kind(burn.reason) not in ("orphan", "surplus")


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[::1]:9100`` for IPv6; an empty ADDR is every address).

    Raises:
        UsageError: it is not one.
    """
    match = _ADDRESS.match(text)
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise UsageError(f"--metrics expects ADDR:PORT such as 127.0.0.1:9464, got {text!r}")
    return match["v6"] or match["host"] or "0.0.0.0", port


class _Instances(Collector):
    def __init__(self, listing: Callable[[], list[ContainerInfo]]) -> None:
        self._listing = listing

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "corral_instances",
            "The fleet's instances, by role and engine state",
            labels=["role", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        for info in self._listing():
            role = info.labels.get(LABEL_PREFIX + "role")
            if role and info.labels.get(LABEL_PREFIX + "kind") == "instance":
                counts[(role, info.state)] = counts.get((role, info.state), 0) + 1
        for (role, state), count in sorted(counts.items()):
            family.add_metric([role, state], count)
        yield family


@dataclass
class WatchMetrics:
    """The watcher's counters, fed by its ``on_pass`` and ``on_failure``."""

    listing: Callable[[], list[ContainerInfo]]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.burns = Counter("corral_burns", "Instances burned or removed", ["reason"], registry=r)
        self.replacements = Counter(
            "corral_replacements", "Burned instances replaced", ["reason"], registry=r
        )
        self.passes = Counter("corral_reconcile_passes", "Reconcile passes", ["status"], registry=r)
        self.failures = Counter(
            "corral_reconcile_failures", "Reconcile passes that failed", registry=r
        )
        self.replace_seconds = Histogram(
            "corral_replace_seconds",
            "From the start of a pass to its replacements serving",
            buckets=REPLACE_BUCKETS,
            registry=r,
        )
        r.register(_Instances(self.listing))
        self._server: Any = None

    def passed(self, result: Reconciled) -> None:
        self.passes.labels(result.status).inc()
        for burn in result.burns:
            kind = reason_kind(burn.reason)
            self.burns.labels(kind).inc()
            if replaced(burn):
                self.replacements.labels(kind).inc()
        if result.status == "converged" and any(replaced(b) for b in result.burns):
            self.replace_seconds.observe(result.seconds)

    def failed(self, error: Exception, delay: float) -> None:
        self.failures.inc()

    def serve(self, address: str, port: int) -> None:
        """Serve ``/metrics`` on ``address:port`` from a daemon thread."""
        self._server, _ = start_http_server(port, address, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
