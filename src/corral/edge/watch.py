"""The edge's own counters watched over a stretch of time: what clients cannot see.

HAProxy retries and redispatches a request that met a dead or closing instance, so a
client gets its 200 while capacity was lost; only ``show stat`` shows it. A deleted
server's counters vanish with it, so the counters are read at the start, every ``every``
seconds and at the end, and the last reading of every row is kept.
"""

from __future__ import annotations

import threading

from corral.edge.runtime import ProxyCounters, RuntimeAPI, failure_growth
from corral.errors import EngineError

Key = tuple[str, str]  # (proxy, name) of a show stat row


class CounterWatch:
    """Readings of one edge's counters between ``start`` and ``stop``.

    Args:
        api: the edge's runtime API.
        every: seconds between two readings while watching.
    """

    def __init__(self, api: RuntimeAPI, every: float = 0.1) -> None:
        self.api = api
        self.every = every
        self.first: dict[Key, ProxyCounters] = {}
        self.last: dict[Key, ProxyCounters] = {}
        self.readings = 0
        self.errors: list[str] = []  # readings that failed (the edge replaced or killed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        """Take the first reading (which must work) and keep reading in the background."""
        self.first = {row.key: row for row in self.api.counters()}
        self.last = dict(self.first)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading, after one last reading."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._read()

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            self._read()

    def _read(self) -> None:
        try:
            rows = self.api.counters()
        except EngineError as exc:  # say so and keep going: the next reading may work
            self.errors.append(str(exc))
            return
        self.readings += 1
        self.last.update((row.key, row) for row in rows)

    def growth(self) -> dict[Key, dict[str, int]]:
        """Per row, the failure counters that grew (see ``failure_growth``)."""
        return failure_growth(self.first, self.last)

    def problems(self) -> list[str]:
        """``proxy/name: counter=growth`` for every row where a failure counter grew."""
        return [
            f"{proxy}/{name}: " + " ".join(f"{k}={v}" for k, v in counters.items())
            for (proxy, name), counters in sorted(self.growth().items())
        ]

    def frontend_requests(self) -> int:
        """HTTP requests every frontend got meanwhile (edge restarts aside)."""
        return sum(
            row.requests - (self.first[key].requests if key in self.first else 0)
            for key, row in self.last.items()
            if row.kind == "frontend"
        )
