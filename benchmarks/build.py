"""Build benchmark: cold build, no-op build, and rebuild after a one-file change.

Runs the real CLI (as an operator would) on a copy of the example fleet under a unique
fleet name, then removes the images it made. The cold figure includes the Debian
bootstrap only with --cold-base (which removes the cached base first).

    .venv/bin/python benchmarks/build.py [--cold-base] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORRAL = [sys.executable, "-m", "corral"]


def timed(spec: Path, *args: str) -> tuple[float, list[dict[str, object]]]:
    started = time.perf_counter()
    out = subprocess.run(
        [*CORRAL, "-f", str(spec), "--json", "build", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return time.perf_counter() - started, json.loads(out)["builds"]


def prepare(folder: Path, fleet: str) -> Path:
    shutil.copytree(ROOT / "examples", folder, dirs_exist_ok=True)
    spec = folder / "corral.yaml"
    spec.write_text(spec.read_text().replace("fleet: demo", f"fleet: {fleet}"))
    return spec


def remove_base() -> None:
    subprocess.run(
        [
            "podman",
            "rmi",
            "--force",
            "--ignore",
            *subprocess.run(
                ["podman", "images", "--quiet", "--filter", "label=io.corral.base-hash"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split(),
        ],
        capture_output=True,
        check=False,
    )


def cleanup(fleet: str) -> None:
    ids = subprocess.run(
        ["podman", "images", "--quiet", "--filter", f"label=io.corral.fleet={fleet}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["podman", "rmi", "--force", *set(ids)], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-base", action="store_true", help="re-bootstrap the Debian base")
    parser.add_argument("--runs", type=int, default=5, help="no-op builds to time")
    args = parser.parse_args()
    fleet = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        spec = prepare(Path(tmp), fleet)
        try:
            if args.cold_base:
                remove_base()
            cold, _ = timed(spec)
            noop = [timed(spec)[0] for _ in range(args.runs)]
            server = Path(tmp, "web", "server.py")
            server.write_text(server.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
            change, results = timed(spec)
            statuses = {str(r["role"]): str(r["status"]) for r in results}
        finally:
            cleanup(fleet)
    report = {
        "cold_build_s": round(cold, 2),
        "cold_includes_base_bootstrap": args.cold_base,
        "noop_build_s": {
            "median": round(statistics.median(noop), 3),
            "max": round(max(noop), 3),
            "runs": len(noop),
        },
        "one_file_change_s": round(change, 2),
        "one_file_change_statuses": statuses,
        "goal_noop_under_1s": max(noop) < 1.0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
