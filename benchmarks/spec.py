"""Spec benchmark: how long `corral validate` takes on large specs (goal: 1 MiB under 1 s).

Writes specs of several shapes, each just under the 1 MiB the loader accepts, into a
temporary folder and times ``corral.app.validate`` on each (in-process: the figure is the
loader's, without Python's start-up). Valid or not, every shape must be answered in under
a second: an invalid spec is refused just as fast. Prints a JSON report on stdout.

The goal is judged on CPU time (``cpu_s``, the best run): loading is single-threaded, so
on an idle machine it is the wall time, and on a shared one the other load does not
inflate it as it does ``wall_s``.

    .venv/bin/python benchmarks/spec.py [--runs 3] [--shapes roles,env]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from corral.app import validate
from corral.errors import SpecError
from corral.spec.load import MAX_BYTES

GOAL_S = 1.0
HEAD = "fleet: big\nroles:\n"
ROLE = "  web:\n    base: {image: localhost/web}\n    run:\n      command: [serve]\n"


def fill(head: str, lines: Callable[[int], str], tail: str = "") -> str:
    """``head``, then ``lines(0)``, ``lines(1)``... while the whole stays under MAX_BYTES."""
    parts, size = [head], len(head.encode()) + len(tail.encode())
    for i in range(10**7):
        line = lines(i)
        if size + len(line.encode()) > MAX_BYTES - 64:
            break
        parts.append(line)
        size += len(line.encode())
    return "".join(parts) + tail


def roles(i: int) -> str:
    return (
        f"  r{i}:\n    base: {{image: localhost/r{i}}}\n"
        f"    run: {{command: [serve, --id, '{i}'], port: 8000, env: {{ID: '{i}'}}}}\n"
        "    health: {http: /healthz, interval: 500ms}\n"
    )


SHAPES: dict[str, Callable[[], str]] = {
    # thousands of small roles: the most values per byte a real spec could have
    "many_roles": lambda: fill(HEAD, roles),
    # 150,000 package names in one flow list (issue 9: this took a minute)
    "packages_150k": lambda: fill(
        HEAD + "  web:\n    run: {command: [serve]}\n    base: {debian: bookworm, packages: [",
        lambda i: f"p{i}, ",
        "p]}\n",
    ),
    # one role with every env variable on its own line
    "env_block": lambda: fill(HEAD + ROLE + "      env:\n", lambda i: f"        V{i}: value-{i}\n"),
    # every env name invalid: 50,000 problems to word (the first 100 are)
    "env_all_invalid": lambda: fill(HEAD + ROLE + "      env:\n", lambda i: f"        v-{i}: x\n"),
    # a few values, each long: the scanner's speed per byte
    "long_strings": lambda: fill(
        HEAD + ROLE.replace("[serve]", "[serve") + "\n",
        lambda i: f"        , '{'x' * 4000}'\n",
        "        ]\n",
    ),
    # a long block scalar in a build step
    "block_scalar": lambda: fill(
        HEAD + ROLE + "    build:\n      run:\n        - |\n",
        lambda i: f"          echo line {i} of a long build script\n",
    ),
}


def time_validate(path: Path) -> tuple[float, float, str]:
    """(wall s, CPU s, outcome) of one validation of ``path``."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        validate(path)
        outcome = "valid"
    except SpecError as error:
        first = error.diagnostics[0].message if error.diagnostics else ""
        outcome = f"{len(error.diagnostics)} problem(s): {first[:70]}"
    return time.perf_counter() - wall, time.process_time() - cpu, outcome


def measure(shapes: list[str], runs: int, folder: Path) -> Iterator[tuple[str, dict[str, object]]]:
    for name in shapes:
        path = folder / f"{name}.yaml"
        path.write_text(SHAPES[name](), encoding="utf-8")
        samples = [time_validate(path) for _ in range(runs)]
        walls = [s[0] for s in samples]
        yield (
            name,
            {
                "bytes": path.stat().st_size,
                "wall_s": round(min(walls), 3),
                "wall_median_s": round(statistics.median(walls), 3),
                "cpu_s": round(min(s[1] for s in samples), 3),
                "outcome": samples[0][2],
                "goal_met": min(s[1] for s in samples) < GOAL_S,
            },
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"unknown shape(s): {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    with tempfile.TemporaryDirectory(prefix="corral-spec-bench-") as folder:
        results = dict(measure(shapes, max(1, args.runs), Path(folder)))
    report = {
        "goal_s": GOAL_S,
        "libyaml": bool(yaml.__with_libyaml__),
        "shapes": results,
        "all_goals_met": all(bool(r["goal_met"]) for r in results.values()),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0 if report["all_goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
