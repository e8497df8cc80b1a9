"""Watch benchmark: how fast ``corral watch`` replaces what was exec'd into or killed, and
what chaos under load costs the clients and the edge (issue 13's figures).

Runs the real CLI on a copy of the example fleet's ``web`` role (3 replicas,
``max_unavailable: 1`` so that chaos may take one) under a unique fleet name, with
``corral watch --interval 1`` running beside it:

- ``exec``: ``podman exec <instance> true``, then the time until that instance is gone
  and ``replicas`` others are UP in the edge (a replacement serving); ``--trials`` times;
- ``kill``: the same after ``podman kill <instance>``;
- ``chaos``: ``corral chaos web`` killing an instance every ``--chaos-interval`` seconds
  for ``--chaos-duration`` seconds while wrk sends GETs and POSTs through the edge: wrk's
  requests and failures, and the edge's own counters (retries, redispatches, econ,
  5xx), once with abrupt kills (SIGKILL: a request in flight on the instance is cut and
  a POST is never replayed) and once with ``--drain-first``;
- ``rest_cpu``: the CPU the watcher (and its ``podman events``) used over
  ``--rest-seconds`` with nothing to do, at 3 replicas and at each of ``--rest-replicas``.

It always destroys the fleet and removes its images and volumes. Needs root, Podman, wrk
and the cached Debian base.

    .venv/bin/python benchmarks/watch.py [--trials 20] [--chaos-duration 60]
        [--chaos-interval 4] [--rest-seconds 30] [--rest-replicas 50,100] [--skip-chaos]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import CORRAL, WRK_LUA, Fleet, Load, run

from corral.edge.container import SOCKET_IN_CONTAINER, SOCKET_NAME
from corral.edge.runtime import RuntimeAPI

REPLICAS = 3
GOAL_S = 2.0


class WatchedFleet(Fleet):
    def write_spec(self, replicas: int, strategy: str = "rolling") -> None:
        super().write_spec(replicas, strategy)
        text = self.spec.read_text()
        self.spec.write_text(
            text.replace(
                f"deploy: {{strategy: {strategy}}}",
                f"deploy: {{strategy: {strategy}, max_unavailable: 1}}",
            )
        )

    def edge(self) -> RuntimeAPI:
        [edge] = json.loads(run("podman", "container", "inspect", f"{self.name}-edge"))
        [folder] = [m["Source"] for m in edge["Mounts"] if m["Destination"] == SOCKET_IN_CONTAINER]
        return RuntimeAPI(str(Path(folder) / SOCKET_NAME))


def start_watch(fleet: Fleet) -> subprocess.Popen[str]:
    """The watcher, its stderr appended to ``watch.log`` beside the spec (for ``cuts``)."""
    log = (fleet.spec.parent / "watch.log").open("a")
    watch = subprocess.Popen(
        [*CORRAL, "-f", str(fleet.spec), "watch", "--interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    time.sleep(4)
    return watch


def serving(api: RuntimeAPI, gone: str, replicas: int) -> bool:
    """``gone`` is out, and ``replicas`` instances are UP in the edge."""
    try:
        servers = api.servers("web")
    except Exception:  # a moment when the edge is busy: look again
        return False
    up = [s.name for s in servers if s.status == "UP" and s.admin == "ready"]
    return gone not in up and len(up) >= replicas


def gone_and_served(fleet: Fleet, api: RuntimeAPI, gone: str) -> bool:
    """A replacement serves in ``gone``'s place, and ``gone`` no longer runs."""
    return serving(api, gone, REPLICAS) and gone not in fleet.instances()


def until(check: Callable[[], bool], timeout: float = 60) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            return float("inf")
        time.sleep(0.02)
    return time.perf_counter() - started


def trials(fleet: WatchedFleet, api: RuntimeAPI, how: str, count: int) -> dict[str, Any]:
    """``count`` times: exec into (or kill) one instance, time until a replacement serves."""
    times: list[float] = []
    for n in range(count):
        until(lambda: serving(api, "", REPLICAS))
        victim = sorted(fleet.instances())[n % REPLICAS]
        started = time.perf_counter()
        if how == "exec":
            run("podman", "exec", victim, "true")
        else:
            run("podman", "kill", victim)
        waited = until(lambda gone=victim: gone_and_served(fleet, api, gone))  # type: ignore[misc]
        times.append(round(time.perf_counter() - started, 3) if waited != float("inf") else waited)
        time.sleep(1)  # the old one's removal finishes before the next trial
    finite = [t for t in times if t != float("inf")]
    return {
        "trials": count,
        "median_s": round(statistics.median(finite), 3) if finite else None,
        "worst_s": max(times) if times else None,
        "under_goal": sum(t < GOAL_S for t in times),
        "times_s": times,
    }


def chaos(
    fleet: WatchedFleet, script: Path, args: argparse.Namespace, drain: bool
) -> dict[str, Any]:
    argv = ["chaos", "web", "--interval", str(args.chaos_interval)]
    argv += ["--duration", str(args.chaos_duration), "--seed", str(args.seed)]
    argv += ["--drain-first"] if drain else []
    log = fleet.spec.parent / "watch.log"
    logged = log.read_text() if log.exists() else ""
    with Load(fleet, script) as load:
        seconds, data = fleet.corral(*argv)
        until(lambda: len(fleet.instances()) >= REPLICAS, 60)
        report = load.stop()
    said = log.read_text()[len(logged) :] if log.exists() else ""
    # Requests a repair's drain cut (the watcher says so): failed for the client, unseen
    # by the edge's counters.
    cuts = [line.strip() for line in said.splitlines() if "cut the requests" in line]
    return {
        "chaos_s": round(seconds, 1),
        "kills": len(data.get("kills", [])),
        "drains_cut": len(cuts),
        "cut_lines": cuts[:5],
        **report,
    }


def cpu_seconds(session: int) -> float:
    """User and system CPU of every process in ``session`` (the watcher and its children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rest_cpu(watch: subprocess.Popen[str], seconds: float) -> dict[str, float]:
    before, started = cpu_seconds(watch.pid), time.perf_counter()
    time.sleep(seconds)
    used, took = cpu_seconds(watch.pid) - before, time.perf_counter() - started
    return {
        "cpu_s": round(used, 2),
        "wall_s": round(took, 1),
        "cpu_percent": round(100 * used / took, 2),
    }


class Report(dict[str, Any]):
    """The report, each part also printed on stderr as it is made: a failure later on
    (or a kill) loses nothing measured before it."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(json.dumps({key: value}), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--chaos-duration", type=float, default=60)
    parser.add_argument("--chaos-interval", type=float, default=4)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rest-seconds", type=float, default=30)
    parser.add_argument("--rest-replicas", default="")
    parser.add_argument("--skip-chaos", action="store_true")
    parser.add_argument(
        "--get-only",
        action="store_true",
        help="wrk sends only GETs (HAProxy may replay them): tells lost capacity from the "
        "POSTs an abrupt kill catches in flight, which no proxy may replay",
    )
    args = parser.parse_args()
    report = Report({"replicas": REPLICAS, "goal_s": GOAL_S})
    with tempfile.TemporaryDirectory(prefix="corral-bench-watch-") as tmp:
        fleet = WatchedFleet(Path(tmp) / "fleet")
        script = Path(tmp) / "mixed.lua"
        lua = WRK_LUA.replace("if sent % 2 == 0", "if false") if args.get_only else WRK_LUA
        assert lua != WRK_LUA or not args.get_only
        script.write_text(lua)
        watch: subprocess.Popen[str] | None = None
        try:
            fleet.ensure(REPLICAS)
            api = fleet.edge()
            watch = start_watch(fleet)
            report[f"rest_cpu_{REPLICAS}"] = rest_cpu(watch, args.rest_seconds)
            report["exec"] = trials(fleet, api, "exec", args.trials)
            report["kill"] = trials(fleet, api, "kill", args.trials)
            if not args.skip_chaos:
                report["chaos_abrupt"] = chaos(fleet, script, args, drain=False)
                report["chaos_drained"] = chaos(fleet, script, args, drain=True)
            for replicas in [int(r) for r in args.rest_replicas.split(",") if r]:
                os.killpg(watch.pid, signal.SIGTERM)
                watch.wait(timeout=30)
                fleet.ensure(replicas)
                watch = start_watch(fleet)
                report[f"rest_cpu_{replicas}"] = rest_cpu(watch, args.rest_seconds)
        finally:
            if watch is not None and watch.poll() is None:
                os.killpg(watch.pid, signal.SIGTERM)
                watch.wait(timeout=30)
            fleet.cleanup()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
