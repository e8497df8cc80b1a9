"""What one command health check costs: a probe container per check, against a TCP check.

A deploy waiting on a role with ``health: {command: [...]}`` runs one throwaway probe
container of the role's image per check (``Engine.run_probe``). This starts PostgreSQL in
a container on a network of its own, then times ``--runs`` probes of ``pg_isready`` run as
corral runs them (same lockdown, same network), and corral's own TCP check for comparison.

    .venv/bin/python benchmarks/probe.py [--runs 20] [--json-only]

It needs root, Podman and the cached Debian base with PostgreSQL (``packages:
[postgresql]``; ``corral build`` of a role with that base makes it). Everything it makes
is removed at the end. It prints a JSON report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from typing import Any

from corral.build.base import BaseRecipe
from corral.deploy.desired import RoleRelease
from corral.deploy.health import CommandProbe, probe_once
from corral.deploy.instances import probe_spec
from corral.deploy.scope import Scope
from corral.engines.base import ContainerSpec
from corral.engines.podman import PodmanEngine
from corral.spec.model import CommandHealth, DebianBase, TcpHealth

PG_BIN = "/usr/lib/postgresql/15/bin"
START = f"{PG_BIN}/initdb -D /tmp/pg -U postgres >/dev/null && exec {PG_BIN}/postgres -D /tmp/pg"


def _figures(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p90_s": round(ordered[int(len(ordered) * 0.9) - 1], 3),
        "max_s": round(ordered[-1], 3),
    }


def _db_release(image: str) -> RoleRelease:
    command = [f"{PG_BIN}/pg_isready", "-h", "{host}", "-p", "{port}"]
    return RoleRelease.model_validate(
        {
            "role": "db",
            "image_id": image,
            "image_tag": image,
            "image_version": "bench",
            "image_digest": "",
            "run": {"command": ["postgres"], "user": "postgres", "port": 5432},
            "health": {"command": command},
            "replicas": 1,
            "volumes": {},
            "deploy": {},
            "after": [],
            "public": None,
            "lockdown": {},
            "resources": {},
        }
    )


def measure(engine: PodmanEngine, runs: int) -> dict[str, Any]:
    image = BaseRecipe.from_spec(DebianBase(debian="bookworm", packages=("postgresql",))).tag
    scope = Scope(f"bench-{uuid.uuid4().hex[:8]}")
    engine.ensure_network(scope.network, scope.labels("network"))
    name = f"{scope.prefix}-db-r1-1"
    try:
        db = engine.start(
            ContainerSpec(
                name=name,
                image=image,
                command=("sh", "-c", START + " -c listen_addresses=*"),
                user="postgres",
                labels=scope.labels("instance"),
                network=scope.network,
                owned_tmpfs=("/run", "/run/postgresql"),
            )
        )
        address = db.addresses[scope.network]
        rr = _db_release(image)
        assert isinstance(rr.health, CommandHealth)
        probe = CommandProbe(engine, probe_spec(scope, rr, rr.health, address), timeout=2.0)
        while probe() is not None:  # until PostgreSQL accepts
            time.sleep(0.2)
        timed, failures = [], []
        for _ in range(runs):
            started = time.monotonic()
            problem = probe()  # a loaded machine can fail one: it is counted, not fatal
            timed.append(time.monotonic() - started)
            if problem is not None:
                failures.append(problem)
        tcp = []
        for _ in range(runs):
            started = time.monotonic()
            assert probe_once(address, 5432, TcpHealth(tcp=True)) is None
            tcp.append(time.monotonic() - started)
        return {
            "runs": runs,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "command_probe": _figures(timed),
            "command_failures": failures,
            "tcp_probe": _figures(tcp),
        }
    finally:
        engine.remove(name)
        engine.remove_network(scope.network)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    report = measure(PodmanEngine(), args.runs)
    print(json.dumps(report, indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
