"""State backend benchmark: what a PostgreSQL state costs a deploy, against SQLite.

Two copies of the example's ``web`` role run side by side, one with the default SQLite
state on the host, one with its state in a private PostgreSQL cluster (initdb in a
temporary folder, its own socket, as the tests start it). Each run replaces every
instance of both by an env change (a new run configuration, no rebuild), one fleet after
the other, alternating which goes first, so both see the same machine. The report gives
each backend's deploy times, their medians and the ratio of medians (PostgreSQL over
SQLite; goal: at most 1.05). Then both fleets are brought to ``--status-size`` instances
(default 100) and ``corral status`` and ``corral plan`` are timed ``--reads`` times on each
(goal: under 0.5 s of corral's own work; the engine listing is most of it).

    .venv/bin/python benchmarks/state_backend.py [--replicas 3] [--runs 7]
        [--status-size 100] [--reads 5] [--json-only]

It needs root, Podman, Debian's postgresql and the cached Debian base. Everything it makes
is removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy import CORRAL
from scale import ScaleFleet
from tests.pgcluster import private_cluster


class BackendFleet(ScaleFleet):
    """The scale benchmark's fleet with its state where ``state`` says (None: default)."""

    def __init__(self, folder: Path, state: str | None) -> None:
        super().__init__(folder)
        self.env = {**os.environ}
        if state is not None:
            self.env["CORRAL_STATE"] = state

    def timed(self, *args: str) -> tuple[float, int, dict[str, Any]]:
        """Run the CLI with this fleet's state: (seconds, 0, JSON answer)."""
        if args[0] == "deploy":
            args = (*args, "--skip-tests", "--reason", "state backend benchmark")
        started = time.perf_counter()
        proc = subprocess.run(
            [*CORRAL, "-f", str(self.spec), "--json", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
            env=self.env,
        )
        seconds = time.perf_counter() - started
        # plan exits 3 when there are changes; status 1 while a replica is not yet up
        if proc.returncode not in (0, 3) and not (args[0] == "status" and proc.returncode == 1):
            said = proc.stdout[-2000:] + proc.stderr[-2000:]
            raise RuntimeError(f"corral {args[0]} failed ({proc.returncode}): {said}")
        return seconds, 0, json.loads(proc.stdout) if proc.stdout.strip() else {}

    def cleanup(self) -> None:
        os.environ.update(self.env)  # destroy reaches this fleet's state
        try:
            super().cleanup()
        finally:
            os.environ.pop("CORRAL_STATE", None)


def replace(fleet: BackendFleet, replicas: int, greeting: str) -> float:
    fleet.write(replicas, 1, greeting)
    seconds, _, result = fleet.timed("deploy")
    if result.get("status") != "active":
        raise RuntimeError(f"the deploy of {fleet.name} changed nothing: {result}")
    return seconds


def reads(fleet: BackendFleet, times: int) -> dict[str, float]:
    status = [fleet.timed("status")[0] for _ in range(times)]
    plan = [fleet.timed("plan")[0] for _ in range(times)]
    return {
        "status_median_s": round(statistics.median(status), 3),
        "plan_median_s": round(statistics.median(plan), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--status-size", type=int, default=100)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminated)  # a timeout's kill cleans up as Ctrl-C does
    report: dict[str, Any] = {
        "change": "an env change: every instance replaced, no rebuild, --skip-tests",
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        "replicas": args.replicas,
    }
    greetings = iter(f"hello {n}" for n in range(1, 100000))
    with tempfile.TemporaryDirectory(prefix="corral-backend-") as tmp, private_cluster() as pg:
        fleets = {
            "sqlite": BackendFleet(Path(tmp) / "sqlite", None),
            "postgresql": BackendFleet(Path(tmp) / "pg", pg.new_database()),
        }
        try:
            for fleet in fleets.values():
                replace(fleet, args.replicas, next(greetings))  # the first deploy, untimed
            times: dict[str, list[float]] = {name: [] for name in fleets}
            for run in range(args.runs):
                order = list(fleets) if run % 2 == 0 else list(reversed(fleets))
                for name in order:
                    times[name].append(replace(fleets[name], args.replicas, next(greetings)))
                print(json.dumps({k: v[-1] for k, v in times.items()}), file=sys.stderr)
            medians = {name: statistics.median(t) for name, t in times.items()}
            report["deploy_s"] = {name: [round(t, 2) for t in ts] for name, ts in times.items()}
            report["deploy_median_s"] = {k: round(v, 2) for k, v in medians.items()}
            report["ratio_of_medians"] = round(medians["postgresql"] / medians["sqlite"], 3)
            if args.status_size:
                report["reads"] = {"instances": args.status_size}
                for name, fleet in fleets.items():
                    fleet.write(args.status_size, "25%", next(greetings))
                    fleet.timed("deploy")
                    report["reads"][name] = reads(fleet, args.reads)
                    fleet.write(args.replicas, "25%", next(greetings))
                    fleet.timed("deploy")  # back down: the two never run 200 at once
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            for fleet in fleets.values():
                fleet.cleanup()
    print(json.dumps(report, indent=2))


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
