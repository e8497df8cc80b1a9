"""Time to fix (issue 14): a security fix in the archive to a fully replaced fleet, under load.

The example fleet (web and api, 3 replicas each, both public) runs on a base of its own
(``CORRAL_BASE_REPO``: the cached bookworm base with a dummy package ``corral-fixture``
1.0, so the machine's shared base is never moved). A local archive made here holds
``corral-fixture`` 1.1, the "fix". While ``wrk`` keeps 16 connections busy on web's edge
port (GET and POST alternating, see deploy.py), it times:

- the emergency lane: ``corral patch --archive <fix>`` (refresh, build, test, canary,
  watch, rollout, settle), from the command's start to its end, which comes after the last
  old instance was retired: each stage, the total, the total beyond the refresh, and
  failed requests (wrk's and the edge's own counters);
- the slow way, in the same run: a new mmdebstrap bootstrap of the base (no cached base,
  so no cached layer either), ``corral build``, ``corral test``, ``corral deploy``;

and the ratio of the two. ``--default-archives`` also upgrades from deb.debian.org in the
lane (needs the network). Everything it made is removed at the end.

    .venv/bin/python benchmarks/patch.py [--watch 5] [--default-archives] [--skip-slow]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.debrepo

from deploy import CORRAL, WRK_LUA, Load, free_port  # type: ignore[import-not-found]
from tests.debrepo import PACKAGE, build_deb, make_archive

from corral.build.base import BaseRecipe, ensure_base
from corral.engines.podman import PodmanEngine
from corral.progress import NullProgress
from corral.spec.model import DebianBase

ROOT = Path(__file__).resolve().parent.parent
BASE = DebianBase(debian="bookworm", packages=("python3",))


class Fleet:
    """A throwaway copy of the example fleet: both roles, 3 replicas each, free ports."""

    def __init__(self, folder: Path, replicas: int) -> None:
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.port, self.api_port = free_port(), free_port()
        self.folder = folder
        shutil.copytree(ROOT / "examples", folder, dirs_exist_ok=True)
        self.spec = folder / "corral.yaml"
        text = self.spec.read_text().replace("fleet: demo", f"fleet: {self.name}")
        text = text.replace("replicas: 2", f"replicas: {replicas}")
        text = text.replace("replicas: 3", f"replicas: {replicas}")
        text = text.replace("public: 8080", f"public: {self.port}")
        self.spec.write_text(text.replace("public: 8081", f"public: {self.api_port}"))
        self.events: list[tuple[float, str]] = []  # the last command's progress lines

    def corral(self, *args: str, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
        """Run the CLI; its progress lines (stderr) are kept in ``events`` with their time."""
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*CORRAL, "-f", str(self.spec), "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        pipe, out = proc.stdout, []
        assert proc.stderr is not None and pipe is not None
        reader = threading.Thread(target=lambda: out.append(pipe.read()))  # no pipe deadlock
        reader.start()
        self.events = [
            (round(time.perf_counter() - started, 2), line.rstrip()) for line in proc.stderr
        ]
        reader.join()
        proc.wait(timeout=1800)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            tail = "\n".join(line for _, line in self.events[-40:])
            raise RuntimeError(f"corral {' '.join(args)} failed: {tail}")
        data = json.loads(out[0]) if out[0].strip() else {}
        return seconds, data

    def cleanup(self, env: dict[str, str]) -> None:
        subprocess.run(
            [*CORRAL, "-f", str(self.spec), "destroy", "--yes"],
            capture_output=True,
            env={**os.environ, **env},
            check=False,
            timeout=300,
        )
        for what, flt in (
            ("volume", f"label=io.corral.fleet={self.name}"),
            ("image", f"label=io.corral.fleet={self.name}"),
            ("image", f"reference=localhost/corral/{self.name}/*"),
        ):
            listing = ["podman", what, "ls"] if what == "volume" else ["podman", "images"]
            ids = subprocess.run(
                [*listing, "--quiet", "--filter", flt], capture_output=True, text=True
            ).stdout.split()
            remove = (
                ["podman", "volume", "rm", "-f"] if what == "volume" else ["podman", "rmi", "-f"]
            )
            if ids:
                subprocess.run([*remove, *sorted(set(ids))], capture_output=True, check=False)


def seed_base(env: dict[str, str], work: Path) -> None:
    """The fleet's first base: the shared cached base with corral-fixture 1.0."""
    shared = ensure_base(PodmanEngine(), BASE, NullProgress()).id  # the shared repository
    build_deb(work, "1.0")
    install = f"RUN --mount=type=bind,target=/run/f,ro dpkg -i /run/f/{PACKAGE}_1.0_all.deb"
    (work / "Containerfile").write_text(f"FROM {shared}\n{install}\n")
    old = os.environ.get("CORRAL_BASE_REPO")
    os.environ["CORRAL_BASE_REPO"] = env["CORRAL_BASE_REPO"]
    try:
        tag = BaseRecipe.from_spec(BASE).tag
    finally:
        if old is None:
            del os.environ["CORRAL_BASE_REPO"]
        else:
            os.environ["CORRAL_BASE_REPO"] = old
    subprocess.run(
        ["podman", "build", "-q", "--network", "none", "-t", tag, str(work)],
        check=True,
        capture_output=True,
    )


def lane(fleet: Fleet, script: Path, env: dict[str, str], archive: Path, args: Any) -> dict:
    argv = ["patch", "--archive", str(archive), "--watch", str(args.watch)]
    if not args.default_archives:
        argv.append("--no-default-archives")
    with Load(fleet, script) as load:
        seconds, report = fleet.corral(*argv, env=env)
        traffic = load.stop()
    stages = {s["stage"]: s["seconds"] for s in report["stages"]}
    return {
        "command_s": round(seconds, 2),
        "stages_s": stages,
        "total_s": report["total_seconds"],
        "beyond_refresh_s": round(report["total_seconds"] - stages.get("refresh", 0.0), 2),
        "packages": {r["role"]: r["packages"] for r in report["roles"]},
        "replaced": {r["role"]: len(r["retired"]) for r in report["roles"]},
        "canary": [
            {k: v[k] for k in ("role", "passed", "share", "canary", "old")}
            for v in report["canary"]
        ],
        **traffic,
        "events": fleet.events,  # the lane's progress lines: [seconds since its start, line]
    }


def slow_way(fleet: Fleet, script: Path, env: dict[str, str]) -> dict:
    """A new bootstrap (no cached base, so no cached layer), build, test, deploy."""
    slow_env = {**env, "CORRAL_BASE_REPO": f"localhost/corral/{fleet.name}/slowbase"}
    with Load(fleet, script) as load:
        started = time.perf_counter()
        build_s, _ = fleet.corral("build", env=slow_env)
        test_s, _ = fleet.corral("test", env=slow_env)
        deploy_s, _ = fleet.corral("deploy", env=slow_env)
        total = time.perf_counter() - started
        traffic = load.stop()
    return {
        "bootstrap_and_build_s": round(build_s, 2),
        "test_s": round(test_s, 2),
        "deploy_s": round(deploy_s, 2),
        "total_s": round(total, 2),
        **traffic,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--watch", type=float, default=5.0, help="seconds the canary is watched")
    parser.add_argument("--default-archives", action="store_true")
    parser.add_argument("--skip-slow", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "load": "wrk -t2 -c16 on web's edge port, GET / and POST / alternating",
        "loadavg_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp) / "fleet", args.replicas)
        env = {"CORRAL_BASE_REPO": f"localhost/corral/{fleet.name}/base"}
        script = Path(tmp) / "mix.lua"
        script.write_text(WRK_LUA)
        try:
            seed_base(env, Path(tmp) / "seed")
            fleet.corral("test", env=env)
            fleet.corral("deploy", env=env)
            archive = make_archive(Path(tmp) / "fix", "1.1")
            report["lane"] = lane(fleet, script, env, archive, args)
            if not args.skip_slow:
                report["slow_way"] = slow_way(fleet, script, env)
                report["ratio_slow_over_lane"] = round(
                    report["slow_way"]["total_s"] / report["lane"]["total_s"], 1
                )
        finally:
            fleet.cleanup(env)
    report["loadavg_after"] = os.getloadavg()
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
