"""Scale benchmark: how a replacement's cost grows with the fleet, against Docker Swarm.

For each size (3, 10, 30 and 100 replicas by default) the example's ``web`` role is deployed
through the real CLI, then every instance is replaced by an env change (a new run
configuration, no rebuild) while ``wrk`` sends GETs and POSTs through the edge, once with
``max_surge: 1`` and once with ``max_surge: 25%``. For each it reports the deploy time, the
time per instance, failed requests, the edge's own counters (HAProxy's ``show stat`` read
before and after), corral's peak memory (``/usr/bin/time``), and how long ``status`` and
``plan`` take at that size. Then the same replacement is done by ``docker service update``
on a one-node Swarm of the same image (start-first, parallelism 1, the same health check
interval), run by a ``dockerd`` this script starts in folders of its own and stops again.

    .venv/bin/python benchmarks/scale.py [--sizes 3,10,30,100] [--skip-swarm]
        [--swarm-monitor 1s] [--json-only]

It needs root, Podman, wrk, the cached Debian base and, for the Swarm part, Debian's
``docker.io`` (``/usr/sbin/dockerd``). Everything it makes is removed at the end, also
when it is stopped by SIGINT (Ctrl-C) or SIGTERM: the fleet, dockerd and its mounts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import CORRAL, Fleet, parse_wrk, run

from corral.edge.runtime import RuntimeAPI

WRK_THREADS, WRK_CONNECTIONS = 2, 16
SOCKET_IN_EDGE = "/var/lib/corral-edge"  # where the edge container sees its admin socket
DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker may be another one

# Every other request is a POST (a visit recorded, with a body); the answers' statuses are
# summed over wrk's threads and printed as "STATUS code n", as benchmarks/deploy.py does.
WRK_LUA = """
local threads = {}
local counter = 0
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function request()
  counter = counter + 1
  if counter % 2 == 0 then
    return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, '{"visit": 1}')
  end
  return wrk.format("GET", "/")
end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("STATUS %d %d\\n", code, n)) end
end
"""
# The edge's counters worth comparing before and after a replacement (HAProxy's names).
COUNTERS = ("stot", "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "econ", "eresp", "wretr", "wredis")


class ScaleFleet(Fleet):
    """The example's web role at a given size and surge; changes are env changes."""

    def write(self, replicas: int, surge: int | str, greeting: str) -> None:
        role = self.web_role.replace("replicas: 3", f"replicas: {replicas}")
        role = role.replace("public: 8080", f"public: {self.port}")
        role = role.replace('GREETING: "hello from corral"', f"GREETING: {json.dumps(greeting)}")
        role += f"    deploy: {{max_surge: {json.dumps(surge)}, max_unavailable: 0}}\n"
        self.spec.write_text(f"version: 1\nfleet: {self.name}\nroles:\n{role}")

    def timed(self, *args: str) -> tuple[float, int, dict[str, Any]]:
        """Run the CLI under /usr/bin/time: (seconds, peak RSS in KiB, JSON answer)."""
        if args[0] == "deploy":
            args = (*args, "--skip-tests", "--reason", "scale benchmark")
        with tempfile.NamedTemporaryFile("r", suffix=".time") as rss:
            started = time.perf_counter()
            timer = ["/usr/bin/time", "-f", "%M", "-o", rss.name]
            proc = subprocess.run(
                [*timer, *CORRAL, "-f", str(self.spec), "--json", *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=1800,
            )
            seconds = time.perf_counter() - started
            peak = int(rss.read().strip().splitlines()[-1] or 0)
        if proc.returncode not in (0, 3):  # plan exits 3 when there are changes
            said = proc.stdout[-2000:] + proc.stderr[-2000:]
            raise RuntimeError(f"corral {args[0]} failed ({proc.returncode}): {said}")
        return seconds, peak, json.loads(proc.stdout) if proc.stdout.strip() else {}

    def image_tag(self) -> str:
        _, _, data = self.timed("images", "web")
        return str(data["images"][-1]["tag"])


@contextlib.contextmanager
def load(url: str, script: Path) -> Iterator[dict[str, Any]]:
    """wrk from one second before the block until two seconds after; the report fills in."""
    wrk = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", "-d1800s", "--latency"]
    proc = subprocess.Popen(
        [*wrk, "-s", str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    report: dict[str, Any] = {}
    try:
        time.sleep(1)
        yield report
        time.sleep(2)
        proc.send_signal(signal.SIGINT)  # wrk prints its report when interrupted
        out, _ = proc.communicate(timeout=30)
        report.update(parse_wrk(out))
    finally:
        if proc.poll() is None:
            proc.kill()


def edge_counters(fleet: Fleet) -> dict[str, int]:
    """The web backend's counters from the edge's ``show stat`` (read by this script)."""
    inspected = run("podman", "inspect", "--format", "{{json .Mounts}}", f"{fleet.name}-edge")
    mounts = json.loads(inspected)
    folder = next(m["Source"] for m in mounts if m["Destination"] == SOCKET_IN_EDGE)
    with RuntimeAPI(str(Path(folder) / "admin.sock")) as api:
        lines = api.command("show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    for raw in lines[1:]:
        row = dict(zip(header, raw.split(","), strict=False))
        if row.get("pxname") == "web" and row.get("svname") == "BACKEND":
            return {key: int(row.get(key) or 0) for key in COUNTERS}
    return {}


def replace_under_load(
    fleet: ScaleFleet, script: Path, replicas: int, surge: int | str, greeting: str
) -> dict[str, Any]:
    """Replace every instance (an env change) under load; figures for the report."""
    fleet.write(replicas, surge, greeting)
    before = edge_counters(fleet)
    with load(f"http://127.0.0.1:{fleet.port}/", script) as traffic:
        seconds, peak, data = fleet.timed("deploy")
    after = edge_counters(fleet)
    return {
        "max_surge": surge,
        "status": data.get("status"),
        "deploy_s": round(seconds, 2),
        "per_instance_s": round(seconds / replicas, 3),
        "corral_peak_rss_mib": round(peak / 1024, 1),
        "failed": traffic["failed"],
        "requests": traffic["requests"],
        "statuses": traffic["statuses"],
        "socket_errors": traffic["socket_errors"],
        "latency": traffic["latency"],
        "edge_counters": {key: after.get(key, 0) - before.get(key, 0) for key in COUNTERS},
    }


def one_size(
    fleet: ScaleFleet, script: Path, replicas: int, changes: Iterator[str]
) -> dict[str, Any]:
    """Deploy ``replicas`` (untimed), replace them with both surges, time status and plan."""
    fleet.write(replicas, "25%", next(changes))
    fleet.timed("deploy")  # to this size, untimed
    result: dict[str, Any] = {"replicas": replicas}
    for surge in (1, "25%"):
        result[f"surge_{surge}"] = replace_under_load(fleet, script, replicas, surge, next(changes))
    status_s, status_rss, _ = fleet.timed("status")
    plan_s, _, _ = fleet.timed("plan")
    result.update(status_s=round(status_s, 2), plan_s=round(plan_s, 2))
    result["status_peak_rss_mib"] = round(status_rss / 1024, 1)
    return result


# -- Docker Swarm -------------------------------------------------------------------------


class Swarm:
    """A one-node Swarm run by a dockerd of our own (its own data, exec root and socket)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sock = folder / "x" / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str, timeout: float = 1800) -> str:
        proc = subprocess.run(
            [DOCKER, "-H", f"unix://{self.sock}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip()[-1500:]
            raise RuntimeError(f"docker {' '.join(args[:2])} failed: {said}")
        return proc.stdout

    def start(self) -> None:
        (self.folder / "x").mkdir(parents=True)
        log = (self.folder / "dockerd.log").open("wb")
        roots = ["--data-root", str(self.folder / "d"), "--exec-root", str(self.folder / "x")]
        own = ["-H", f"unix://{self.sock}", "--pidfile", str(self.folder / "x" / "docker.pid")]
        self.proc = subprocess.Popen(
            [DOCKERD, *roots, *own, "--iptables=false", "--bridge", "none"],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while subprocess.run(
            [DOCKER, "-H", f"unix://{self.sock}", "info"], capture_output=True, check=False
        ).returncode:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                said = (self.folder / "dockerd.log").read_text()[-2000:]
                raise RuntimeError(f"dockerd did not start: {said}")
            time.sleep(0.2)
        self.docker("swarm", "init", "--advertise-addr", "127.0.0.1")

    def load_image(self, tag: str) -> str:
        """Copy an image from Podman's store into this dockerd's; return its name there."""
        archive = self.folder / "image.tar"
        run("podman", "save", "--format", "docker-archive", "-o", str(archive), tag)
        loaded = self.docker("load", "-i", str(archive))
        archive.unlink()
        found = re.search(r"Loaded image: (\S+)", loaded)
        if not found:
            raise RuntimeError(f"docker load said: {loaded}")
        return found[1]

    def create(self, name: str, image: str, replicas: int, monitor: str) -> None:
        probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
        self.docker(
            "service", "create", "--detach=false", "--quiet", "--no-resolve-image", "--name", name,
            "--replicas", str(replicas), "--endpoint-mode", "dnsrr",
            "--user", "app", "--env", "GREETING=hello",
            "--mount", "type=tmpfs,destination=/var/lib/web,tmpfs-mode=1777",
            "--health-cmd", f"python3 -c {json.dumps(probe)}",
            "--health-interval", "500ms", "--health-timeout", "2s", "--health-retries", "40",
            "--health-start-period", "0s",
            "--update-order", "start-first", "--update-parallelism", "1",
            "--update-delay", "0s", "--update-monitor", monitor,
            image, "python3", "/srv/web/server.py",
        )  # fmt: skip

    def update(self, name: str, greeting: str) -> float:
        started = time.perf_counter()
        self.docker(
            "service", "update", "--detach=false", "--quiet",
            "--env-add", f"GREETING={greeting}", name,
        )  # fmt: skip
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.docker("swarm", "leave", "--force", timeout=60)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # dockerd unmounts on a clean exit; whatever an unclean one left goes first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.folder))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def swarm_size(swarm: Swarm, image: str, replicas: int, monitor: str) -> dict[str, Any]:
    name = f"web{replicas}"
    try:
        swarm.create(name, image, replicas, monitor)
        seconds = swarm.update(name, f"swarm {replicas}")
    except RuntimeError as exc:  # reported, so the corral figures of the run are not lost
        return {"replicas": replicas, "error": str(exc), "monitor": monitor}
    finally:
        with contextlib.suppress(RuntimeError):
            swarm.docker("service", "rm", name)
    return {
        "replicas": replicas,
        "update_s": round(seconds, 2),
        "per_instance_s": round(seconds / replicas, 3),
        "monitor": monitor,
    }


# -- the whole run ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="3,10,30,100", help="replica counts, e.g. 3,10")
    parser.add_argument("--skip-swarm", action="store_true", help="no Docker Swarm comparison")
    parser.add_argument(
        "--swarm-monitor", default="1s", help="docker service update --update-monitor"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",") if n]
    report: dict[str, Any] = {
        "load": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} on the edge, GET and POST alternating",
        "change": "an env change: every instance replaced, no rebuild, --skip-tests",
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
    }
    changes = iter(f"hello {n}" for n in range(1, 100000))
    started = time.perf_counter()
    # SIGTERM (a CI timeout, kill) ends the run as Ctrl-C does, through the clean-up below.
    signal.signal(signal.SIGTERM, _terminated)
    with tempfile.TemporaryDirectory(prefix="corral-scale-") as tmp:
        fleet = ScaleFleet(Path(tmp) / "fleet")
        script = Path(tmp, "mixed.lua")
        script.write_text(WRK_LUA)
        swarm = Swarm(Path(tmp) / "swarm")
        report.update(fleet=fleet.name, port=fleet.port)
        try:
            report["corral"] = []
            for n in sizes:
                report["corral"].append(one_size(fleet, script, n, changes))
                print(json.dumps(report["corral"][-1]), file=sys.stderr)  # kept if Swarm fails
            if not args.skip_swarm:
                # Swarm gets the machine corral had: corral's fleet goes first (its image
                # stays), since at 100 replicas it held the CPUs Swarm's checks need.
                fleet.timed("destroy", "--yes")
                swarm.start()
                image = swarm.load_image(fleet.image_tag())
                report["swarm"] = [swarm_size(swarm, image, n, args.swarm_monitor) for n in sizes]
        finally:
            _ignore_signals()  # a second Ctrl-C must not leave dockerd's mounts behind
            swarm.stop()
            fleet.cleanup()
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    if not args.json_only:
        print_table(report)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _ignore_signals() -> None:
    """While cleaning up: the fleet, dockerd and its mounts go whatever is pressed."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def print_table(report: dict[str, Any]) -> None:
    swarm = {s["replicas"]: s for s in report.get("swarm", [])}
    print(
        f"\n{'replicas':>8} {'surge':>6} {'deploy s':>9} {'s/inst':>7} {'failed':>7} "
        f"{'5xx@edge':>8} {'RSS MiB':>8} {'status s':>8} {'plan s':>7} {'swarm s':>8} {'ratio':>6}"
    )
    for size in report["corral"]:
        n = size["replicas"]
        for surge in (1, "25%"):
            row = size[f"surge_{surge}"]
            theirs = swarm.get(n, {}).get("update_s")  # absent when Swarm's update failed
            ratio = f"{row['deploy_s'] / theirs:.2f}" if theirs else "-"
            print(
                f"{n:>8} {surge!s:>6} {row['deploy_s']:>9.2f} {row['per_instance_s']:>7.3f} "
                f"{row['failed']:>7} {row['edge_counters'].get('hrsp_5xx', 0):>8} "
                f"{row['corral_peak_rss_mib']:>8.1f} {size['status_s']:>8.2f} "
                f"{size['plan_s']:>7.2f} {theirs or '-':>8} {ratio:>6}"
            )


if __name__ == "__main__":
    main()
