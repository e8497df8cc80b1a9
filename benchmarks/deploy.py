"""Deploy benchmark: zero-downtime replacement under load, and corral's overhead over podman.

Runs the real CLI (as an operator would) on a copy of the example fleet under a unique
fleet name and a free public port, with only the ``web`` role. While ``wrk`` keeps 16
connections busy on the edge (GET and POST alternating), it times and checks for failed
requests, and reads the edge's own counters for the retries and errors wrk cannot see:

- a rolling deploy of 3 and of 10 replicas (a one-line change to web/server.py);
- a blue-green switch of 3 replicas;
- a rollback to the previous release;

then, without load, a rolling replacement of N replicas done by hand with the podman CLI
(run new, poll /healthz on its address, ``rm -f`` one old) against ``corral deploy`` doing
the same change (the image is built first, so the build is not timed). It always destroys
the fleet and removes its images and volumes.

    .venv/bin/python benchmarks/deploy.py [--replicas 3,10] [--skip-bluegreen]
        [--skip-rollback] [--skip-overhead] [--overhead-replicas 3] [--overhead-runs 5]
        [--json-only]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from corral.edge.container import SOCKET_IN_CONTAINER, SOCKET_NAME
from corral.edge.runtime import RuntimeAPI
from corral.edge.watch import CounterWatch
from corral.engines.podman_api import PodmanAPI

ROOT = Path(__file__).resolve().parent.parent
CORRAL = [sys.executable, "-m", "corral"]
WRK_THREADS, WRK_CONNECTIONS = 2, 16
GOAL_OVERHEAD = 1.3

# Every other request is a POST (which the edge never replays once it reached an instance,
# so a request lost to a closing instance shows as a failure, not as a retry). Counts the
# status of every response, summed over wrk's threads, printed as "STATUS code n".
WRK_LUA = """
local threads = {}
local sent = 0
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function request()
  sent = sent + 1
  if sent % 2 == 0 then return wrk.format("POST", "/", nil, "") end
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

# Added to the copy of the example's web server: POST / counts a visit like GET / does.
POST_HANDLER = """
    def do_POST(self) -> None:  # added by benchmarks/deploy.py: a non-idempotent request
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

"""

# HAProxy's "option httplog" line: ... backend/server Tq/Tw/Tc/Tr/Ta status bytes - - TERM ...
HTTPLOG = re.compile(
    r" (?P<backend>[\w.:-]+)/(?P<server>[<>\w.:-]+) (?P<timers>-?\d+/-?\d+/-?\d+/-?\d+/-?\d+) "
    r"(?P<status>-?\d+) \d+ \S+ \S+ (?P<term>\S{4}) (?P<conns>\d+/\d+/\d+/\d+/\+?\d+)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*argv: str, check: bool = True, timeout: float = 600) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout).stdout


class Fleet:
    """A throwaway copy of the example fleet: only the web role, on a free port."""

    def __init__(self, folder: Path) -> None:
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.folder = folder
        shutil.copytree(ROOT / "examples", folder, dirs_exist_ok=True)
        self.spec = folder / "corral.yaml"
        self.server = folder / "web" / "server.py"
        code = self.server.read_text()
        self.server.write_text(code.replace("    def reply(", POST_HANDLER + "    def reply(", 1))
        self.web_role = _web_role(self.spec.read_text())
        self.events: list[tuple[float, str]] = []
        self.shape: tuple[int, str] | None = None  # (replicas, strategy) deployed now
        self.versions = iter(range(1, 10000))

    def change(self) -> None:
        """A one-line change to the web role's code: a new image, every instance replaced."""
        self.set_version(f"v{next(self.versions)}")

    def ensure(self, replicas: int, strategy: str = "rolling") -> None:
        """Deploy (untimed) so that ``replicas`` instances run under ``strategy``."""
        if self.shape != (replicas, strategy):
            self.write_spec(replicas, strategy)
            self.change()
            self.corral("deploy")
            self.shape = (replicas, strategy)

    def write_spec(self, replicas: int, strategy: str = "rolling") -> None:
        role = self.web_role.replace("replicas: 3", f"replicas: {replicas}")
        role = role.replace("public: 8080", f"public: {self.port}")
        role += f"    deploy: {{strategy: {strategy}}}\n"
        self.spec.write_text(f"version: 1\nfleet: {self.name}\nroles:\n{role}")

    def set_version(self, version: str) -> None:
        text = re.sub(
            r'^VERSION = ".*"$', f'VERSION = "{version}"', self.server.read_text(), flags=re.M
        )
        self.server.write_text(text)

    def corral(self, *args: str, check: bool = True) -> tuple[float, dict[str, Any]]:
        """Run the CLI; progress lines (stderr) are kept in ``events`` with their time.

        Deploys skip the test gate (and so the smoke test): this measures the mechanics.
        """
        if args and args[0] in ("deploy", "rollback"):
            args = (*args, "--skip-tests", "--reason", "benchmark of deploy mechanics")
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*CORRAL, "-f", str(self.spec), "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pipe, out = proc.stdout, []
        assert proc.stderr is not None and pipe is not None
        reader = threading.Thread(target=lambda: out.append(pipe.read()))  # no pipe deadlock
        reader.start()
        self.events = [(time.perf_counter() - started, line.rstrip()) for line in proc.stderr]
        reader.join()
        stdout = out[0]
        proc.wait(timeout=600)
        seconds = time.perf_counter() - started
        data = json.loads(stdout) if stdout.strip() else {}
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"corral {' '.join(args)} failed ({proc.returncode}): "
                f"{stdout[-2000:]}{self.events[-20:]}"
            )
        return seconds, data

    def instances(self) -> list[str]:
        return run(
            "podman",
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=io.corral.fleet={self.name}",
            "--filter",
            "label=io.corral.kind=instance",
        ).split()

    def cleanup(self) -> None:
        subprocess.run(
            [*CORRAL, "-f", str(self.spec), "destroy", "--yes"],
            capture_output=True,
            check=False,
            timeout=300,
        )
        leftovers = run(
            "podman",
            "ps",
            "--all",
            "--quiet",
            "--filter",
            f"label=io.corral.fleet={self.name}",
            check=False,
        ).split()
        if leftovers:  # what an interrupted raw podman run may have left
            run("podman", "rm", "--force", *leftovers, check=False)
        volumes = run(
            "podman",
            "volume",
            "ls",
            "--quiet",
            "--filter",
            f"label=io.corral.fleet={self.name}",
            check=False,
        ).split()
        if volumes:
            run("podman", "volume", "rm", "--force", *volumes, check=False)
        images = run(
            "podman",
            "images",
            "--quiet",
            "--filter",
            f"label=io.corral.fleet={self.name}",
            check=False,
        ).split()
        if images:
            run("podman", "rmi", "--force", *set(images), check=False)


def _web_role(spec: str) -> str:
    """The example's web role, without its dependency on the api role."""
    lines, inside = [], False
    for line in spec.splitlines():
        if re.match(r"^  \w", line):
            inside = line.startswith("  web:")
        if inside and "after:" not in line:
            lines.append(line)
    return "\n".join(lines) + "\n"


class EdgeWatch(CounterWatch):
    """The edge's own counters over a load window (see ``corral.edge.watch``), summed for
    the report: the growth of the backends' and frontends' failure counters (a server's
    are in its backend's too), and every row where one grew."""

    def __init__(self, fleet: Fleet) -> None:
        [edge] = json.loads(run("podman", "container", "inspect", f"{fleet.name}-edge"))
        [folder] = [m["Source"] for m in edge["Mounts"] if m["Destination"] == SOCKET_IN_CONTAINER]
        super().__init__(RuntimeAPI(str(Path(folder) / SOCKET_NAME)))

    def report(self) -> dict[str, Any]:
        self.stop()
        grown = self.growth()
        totals = collections.Counter[str]()
        for (_, name), counters in grown.items():
            if name in ("BACKEND", "FRONTEND"):
                totals.update(counters)
        return {
            "requests": self.frontend_requests(),
            **{name: totals[name] for name in ("econ", "eresp", "wretr", "wredis", "hrsp_5xx")},
            "rows": {f"{proxy}/{name}": c for (proxy, name), c in sorted(grown.items())},
            "read_errors": self.errors[:5],
        }

    def client_side(self) -> dict[str, int]:
        """Counters of the clients' side (see ``CLIENT_SIDE``) summed over the frontends and
        backends, and the log lines HAProxy dropped: read before wrk is stopped, whose own
        stop aborts the requests it has in flight."""
        rows = [
            dict(zip(header, line.split(","), strict=False))
            for header, line in _stat_lines(self.api.command("show stat"))
        ]
        sums = {
            column: sum(
                int(r.get(column) or 0) for r in rows if r["svname"] in ("FRONTEND", "BACKEND")
            )
            for column in CLIENT_SIDE
        }
        info = dict(
            line.split(": ", 1)
            for line in self.api.command("show info").splitlines()
            if ": " in line
        )
        return {**sums, "dropped_logs": int(info.get("DroppedLogs", 0))}


# Client-side troubles the failure counters leave out: a request that failed before it
# reached a server (``ereq``), denied ones, and aborts by the client or the server.
CLIENT_SIDE = ("ereq", "dreq", "dresp", "cli_abrt", "srv_abrt")


def _stat_lines(answer: str) -> list[tuple[list[str], str]]:
    lines = answer.splitlines()
    header = lines[0][2:].split(",")
    return [(header, line) for line in lines[1:] if line]


class Load:
    """wrk on the edge, from a second before an action until two seconds after it."""

    def __init__(self, fleet: Fleet, script: Path) -> None:
        self.fleet = fleet
        self.script = script
        self.proc: subprocess.Popen[str] | None = None
        self.since = ""
        self.watch = EdgeWatch(fleet)
        self.client_before: dict[str, int] = {}

    def __enter__(self) -> Load:
        self.since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.watch.start()
        self.client_before = self.watch.client_side()
        self.proc = subprocess.Popen(
            [
                "wrk",
                f"-t{WRK_THREADS}",
                f"-c{WRK_CONNECTIONS}",
                "-d600s",
                "--latency",
                "-s",
                str(self.script),
                f"http://127.0.0.1:{self.fleet.port}/",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None
        time.sleep(2)
        client_after = self.watch.client_side()
        self.proc.send_signal(signal.SIGINT)  # wrk prints its report when interrupted
        out, _ = self.proc.communicate(timeout=30)
        report = parse_wrk(out)
        report["edge_counters"] = self.watch.report()
        report["edge_errors"] = edge_errors(self.fleet, self.since)
        report["edge_client_side"] = {
            k: client_after[k] - self.client_before[k] for k in client_after
        }
        return report


def parse_wrk(out: str) -> dict[str, Any]:
    found = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not found:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}.get(found[3], 1.0)
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if errors := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), "
        r"timeout (\d+)",
        out,
    ):
        socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, flags=re.M))
    statuses = {code: int(n) for code, n in re.findall(r"^STATUS (\d+) (\d+)$", out, flags=re.M)}
    requests = int(found[1])
    return {
        "requests": requests,
        "load_seconds": round(float(found[2]) * unit, 1),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": socket_errors,
        # wrk's "timeout" counts requests still unanswered after 2 s; they are not cut and
        # their answers are counted above, so they are slow rather than failed.
        "failed": (int(non2xx[1]) if non2xx else 0)
        + socket_errors["connect"]
        + socket_errors["read"]
        + socket_errors["write"],
        "statuses": dict(sorted(statuses.items())),
        "latency": {f"p{k}": v for k, v in latency.items()},
    }


def edge_errors(fleet: Fleet, since: str) -> dict[str, Any]:
    """What the edge logged about requests that failed or needed a retry, for diagnosis."""
    logs = subprocess.run(
        ["podman", "logs", "--since", since, f"{fleet.name}-edge"],
        capture_output=True,
        text=True,
        errors="replace",  # a log line cut mid-character must not lose the whole report
        check=False,
    )
    failed: collections.Counter[str] = collections.Counter()
    retried = logged = 0
    for line in (logs.stdout + logs.stderr).splitlines():
        m = HTTPLOG.search(line)
        if not m:
            continue
        logged += 1
        if int(m["conns"].rsplit("/", 1)[1].lstrip("+")) > 0:
            retried += 1
        if not m["status"].startswith("2") or m["term"][0] != "-":
            failed[f"{m['status']} {m['term']} {m['server']} Tq/Tw/Tc/Tr/Ta={m['timers']}"] += 1
    return {
        "logged_requests": logged,
        "retried_requests": retried,
        "failed": dict(failed.most_common(10)),
    }


def under_load(fleet: Fleet, script: Path, *args: str) -> dict[str, Any]:
    with Load(fleet, script) as load:
        seconds, data = fleet.corral(*args)
        report = load.stop()
    # deploy_s is the whole command; build_s the part of it spent baking the changed image.
    built = [t for t, line in fleet.events if re.match(r"\S+: built ", line)]
    return {
        "deploy_s": round(seconds, 2),
        "build_s": round(built[-1], 2) if built else 0.0,
        "status": data.get("status"),
        "release": data.get("release"),
        **report,
    }


# -- overhead against the raw engine ------------------------------------------------------


def raw_run(fleet: Fleet, name: str, image: str) -> str:
    """Start one instance the way corral does (same lockdown flags), return its address."""
    volume = f"{fleet.name}-web-data"
    run(
        "podman",
        "run",
        "--detach",
        "--name",
        name,
        "--cap-drop",
        "all",
        "--init",
        "--read-only",
        "--read-only-tmpfs=false",
        "--security-opt",
        "no-new-privileges",
        f"--label=io.corral.fleet={fleet.name}",
        "--env=GREETING=hello from corral",
        "--user",
        "app",
        "--network",
        f"corral-{fleet.name}",
        "--volume",
        f"{volume}:/var/lib/web:rw",
        image,
        "python3",
        "/srv/web/server.py",
    )
    return run(
        "podman",
        "inspect",
        "--format",
        f'{{{{(index .NetworkSettings.Networks "corral-{fleet.name}").IPAddress}}}}',
        name,
    ).strip()


def wait_http(address: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}:8000/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{address} never became healthy")
        time.sleep(0.05)


def overhead(fleet: Fleet, replicas: int, runs: int) -> dict[str, Any]:
    """Rolling replacement of ``replicas`` instances, by hand with podman and by corral,
    ``runs`` times each (alternating); the ratio of the medians is the figure."""
    fleet.ensure(replicas)
    raws, corrals = [], []
    for _ in range(runs):
        raw, corral = _overhead_once(fleet, replicas)
        raws.append(raw)
        corrals.append(corral)
    ratio = statistics.median(corrals) / statistics.median(raws)
    return {
        "replicas": replicas,
        "runs": runs,
        "raw_podman_s": round(statistics.median(raws), 2),
        "corral_deploy_s": round(statistics.median(corrals), 2),
        "ratio": round(ratio, 2),
        "raw_podman_runs_s": [round(r, 2) for r in raws],
        "corral_deploy_runs_s": [round(c, 2) for c in corrals],
        "ratio_worst_run": round(max(c / r for c, r in zip(corrals, raws, strict=True)), 2),
        "goal_met": ratio <= GOAL_OVERHEAD,
    }


def _overhead_once(fleet: Fleet, replicas: int) -> tuple[float, float]:
    """One change replaced both ways: (raw podman seconds, corral deploy seconds)."""
    old_image = _current_image(fleet)
    fleet.change()
    fleet.corral("build")  # so that the timed deploy finds its image up to date
    new_image = _current_image(fleet)
    olds = [f"{fleet.name}-raw-old-{i}" for i in range(replicas)]
    for name in olds:  # the raw set to replace, not timed
        wait_http(raw_run(fleet, name, old_image))
    started = time.perf_counter()
    for i, old in enumerate(olds):
        wait_http(raw_run(fleet, f"{fleet.name}-raw-new-{i}", new_image))
        run("podman", "rm", "--force", old)
    raw = time.perf_counter() - started
    run("podman", "rm", "--force", *[f"{fleet.name}-raw-new-{i}" for i in range(replicas)])
    corral_s, data = fleet.corral("deploy")
    if data.get("status") != "active":
        raise RuntimeError(f"corral deploy did not go live: {data}")
    return raw, corral_s


def _current_image(fleet: Fleet) -> str:
    _, data = fleet.corral("images", "web")
    return str(data["images"][-1]["image_id"])


# -- the whole run ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", default="3,10", help="rolling deploys to time, e.g. 3,10")
    parser.add_argument("--skip-rolling", action="store_true")
    parser.add_argument("--skip-bluegreen", action="store_true")
    parser.add_argument("--skip-rollback", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument(
        "--overhead-replicas", default="3,10", help="replica counts for the raw podman comparison"
    )
    parser.add_argument(
        "--overhead-runs", type=int, default=5, help="repetitions of each comparison (medians)"
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=5,
        help="load without any deploy first, to tell slow from failed",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    counts = [] if args.skip_rolling else [int(n) for n in args.replicas.split(",") if n]
    overheads = (
        [] if args.skip_overhead else [int(n) for n in args.overhead_replicas.split(",") if n]
    )
    report: dict[str, Any] = {
        "load": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} on the edge",
        "failed_means": "non-2xx + socket connect/read/write errors; wrk timeouts are "
        "answers slower than 2 s, counted apart",
        "requests_mix": "GET / and POST / alternating (POST is never replayed by the edge)",
        "edge_counters_mean": "growth of the edge's own show stat counters over the window: "
        "econ/eresp (connection/response errors), wretr/wredis (retries/redispatches), "
        "hrsp_5xx; retries hide lost capacity from wrk, so the goal is 0 here too",
        "corral_reads": "podman REST API" if PodmanAPI.connect() else "podman CLI",
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp))
        script = Path(tmp, "count.lua")
        script.write_text(WRK_LUA)
        report.update(fleet=fleet.name, port=fleet.port)
        try:
            fleet.ensure(counts[0] if counts else 3)
            if args.baseline_seconds > 0:
                with Load(fleet, script) as load:
                    time.sleep(args.baseline_seconds)
                    report["baseline_no_deploy"] = load.stop()
            report["rolling"] = {}
            for n in counts:
                fleet.ensure(n)
                fleet.change()
                report["rolling"][str(n)] = under_load(fleet, script, "deploy")
                if n == counts[0] and not args.skip_rollback:  # back to the release before
                    report["rollback"] = under_load(fleet, script, "rollback")
                if n in overheads:
                    report.setdefault("overhead", []).append(overhead(fleet, n, args.overhead_runs))
            if not counts and not args.skip_rollback:
                fleet.change()
                fleet.corral("deploy")  # a second release to go back from
                report["rollback"] = under_load(fleet, script, "rollback")
            for n in overheads:
                if n not in counts:
                    report.setdefault("overhead", []).append(overhead(fleet, n, args.overhead_runs))
            if not args.skip_bluegreen:
                fleet.ensure(3, "blue-green")
                fleet.change()
                report["blue_green"] = under_load(fleet, script, "deploy")
        finally:
            fleet.cleanup()
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    if not args.json_only:
        print_table(report)


def print_table(report: dict[str, Any]) -> None:
    rows = [("no deploy", report["baseline_no_deploy"])] if "baseline_no_deploy" in report else []
    rows += [(f"rolling x{n}", r) for n, r in report.get("rolling", {}).items()]
    rows += [(k, report[k]) for k in ("rollback", "blue_green") if k in report]
    print(
        f"\n{'scenario':<13}{'deploy s':>9}{'build s':>8}{'requests':>9}{'non-2xx':>8}"
        f"{'c/r/w err':>10}{'>2s':>5}{'p99':>9}{'edge retr/redisp/err/5xx':>26}"
    )
    for label, r in rows:
        e, c = r["socket_errors"], r["edge_counters"]
        edge = f"{c['wretr']}/{c['wredis']}/{c['econ'] + c['eresp']}/{c['hrsp_5xx']}"
        print(
            f"{label:<13}{r.get('deploy_s', '-'):>9}{r.get('build_s', '-'):>8}"
            f"{r['requests']:>9}{r['non_2xx']:>8}"
            f"{e['connect'] + e['read'] + e['write']:>10}{e['timeout']:>5}"
            f"{r['latency'].get('p99', '-'):>9}{edge:>26}"
        )
    for o in report.get("overhead", []):
        print(
            f"overhead x{o['replicas']} (medians of {o['runs']}): raw podman "
            f"{o['raw_podman_s']} s, corral deploy {o['corral_deploy_s']} s, ratio {o['ratio']}, "
            f"worst run {o['ratio_worst_run']} (goal <= {GOAL_OVERHEAD}x)"
        )


if __name__ == "__main__":
    main()
