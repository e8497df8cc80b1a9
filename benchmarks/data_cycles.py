"""Data cycles benchmark: no acknowledged write is lost across deploys and rollbacks.

Runs the real CLI on a copy of the example fleet (``examples/``: web on a shared volume,
api) under a unique fleet name and free public ports, its state in the run's temporary
folder. While clients POST records through the edge (``POST /records`` answers an id only
once the row is committed on the volume) and read acknowledged ones back
(``GET /records/<id>``), it runs N cycles of a deploy (a new ``GREETING``: every web
instance replaced) and a rollback. Then ``corral destroy`` (without ``--delete-data``)
and a deploy again. At the end every acknowledged record must still be there, with its
body: the report says how many were acknowledged and how many were lost (goal 0).

    .venv/bin/python benchmarks/data_cycles.py [--cycles 50] [--clients 2] [--json-only]

It always destroys the fleet and removes its containers, images and volumes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CORRAL = [sys.executable, "-m", "corral"]
SKIP = ["--skip-tests", "--reason", "data cycles benchmark"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Example:
    """A throwaway copy of the example fleet, its state in ``folder``."""

    folder: Path
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        shutil.copytree(ROOT / "examples", self.folder, ignore=shutil.ignore_patterns("stack"))
        text = self.spec.read_text().replace("fleet: demo", f"fleet: {self.name}")
        text = text.replace("public: 8080", f"public: {self.port}")
        self.spec.write_text(text.replace("public: 8081", f"public: {free_port()}"))
        self.env = {**os.environ, "CORRAL_STATE_HOME": str(self.folder / "state")}

    @property
    def spec(self) -> Path:
        return self.folder / "corral.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def corral(self, *args: str, timeout: float = 900) -> float:
        """Run ``corral ARGS``; its wall time. Raises with its output if it fails."""
        started = time.monotonic()
        proc = subprocess.run(
            [*CORRAL, "-f", str(self.spec), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"corral {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return time.monotonic() - started

    def greet(self, text: str) -> None:
        spec = self.spec.read_text()
        start = spec.index("GREETING: ") + len("GREETING: ")
        end = spec.index("}", start)
        self.spec.write_text(spec[:start] + json.dumps(text) + spec[end:])

    def cleanup(self) -> None:
        subprocess.run(
            [*CORRAL, "-f", str(self.spec), "destroy", "--yes"],
            capture_output=True,
            env=self.env,
            check=False,
            timeout=300,
        )
        label = f"label=io.corral.fleet={self.name}"
        for listing, removal in (
            (["ps", "--all", "--quiet"], ["rm", "--force"]),
            (["volume", "ls", "--quiet"], ["volume", "rm", "--force"]),
            (["images", "--quiet"], ["rmi", "--force"]),
        ):
            found = subprocess.run(
                ["podman", *listing, "--filter", label], capture_output=True, text=True, check=False
            ).stdout.split()
            if found:
                subprocess.run(["podman", *removal, *set(found)], capture_output=True, check=False)


@dataclass
class Writers:
    """Clients that POST records and read acknowledged ones back, through the edge."""

    url: str
    clients: int = 2
    acked: dict[int, str] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    read_misses: list[int] = field(default_factory=list)  # acked, then not found
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Writers:
        for n in range(self.clients):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, client_number: int) -> None:
        sent = 0
        with httpx.Client(base_url=self.url, timeout=15) as client:
            while not self._stop.is_set():
                sent += 1
                body = f"client {client_number} record {sent} {uuid.uuid4().hex}"
                self._write(client, body)
                self._read_back(client)
                time.sleep(0.01)

    def _write(self, client: httpx.Client, body: str) -> None:
        try:
            answer = client.post("/records", content=body.encode())
            outcome = f"POST {answer.status_code}"
            number = int(answer.json()["id"]) if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            outcome, number = f"POST {type(exc).__name__}", None
        with self._lock:
            self.outcomes[outcome] += 1
            if number is not None:
                self.acked[number] = body

    def _read_back(self, client: httpx.Client) -> None:
        with self._lock:
            if not self.acked:
                return
            number = random.choice(list(self.acked))
            expected = self.acked[number]
        try:
            answer = client.get(f"/records/{number}")
        except httpx.HTTPError as exc:
            outcome = f"GET {type(exc).__name__}"
        else:
            outcome = f"GET {answer.status_code}"
            if answer.status_code == 404 or (
                answer.status_code == 200 and answer.json().get("body") != expected
            ):
                with self._lock:
                    self.read_misses.append(number)
        with self._lock:
            self.outcomes[outcome] += 1


def verify(url: str, acked: dict[int, str]) -> dict[str, int]:
    """Every acknowledged record, read back one by one: how many are lost or changed."""
    with httpx.Client(base_url=url, timeout=15) as client:
        ids = set(client.get("/records").json()["ids"])
        lost = [n for n in acked if n not in ids]
        changed = 0
        for number, body in acked.items():
            if number in ids and client.get(f"/records/{number}").json().get("body") != body:
                changed += 1
    return {"stored": len(ids), "lost": len(lost), "changed": changed}


def run_cycles(example: Example, cycles: int, clients: int, say: Any) -> dict[str, Any]:
    build_s = example.corral("build", timeout=1800)
    example.corral("deploy", *SKIP)
    deploys, rollbacks = [], []
    with Writers(example.url, clients) as writers:
        time.sleep(1)
        for cycle in range(1, cycles + 1):
            example.greet(f"hello, cycle {cycle}")
            deploys.append(example.corral("deploy", *SKIP))
            rollbacks.append(example.corral("rollback", *SKIP))
            say(f"cycle {cycle}/{cycles}: {len(writers.acked)} acknowledged writes")
        time.sleep(1)
    after_cycles = verify(example.url, writers.acked)
    destroy_s = example.corral("destroy", "--yes")
    example.corral("deploy", *SKIP)
    after_destroy = verify(example.url, writers.acked)
    return {
        "cycles": cycles,
        "clients": clients,
        "build_s": round(build_s, 1),
        "deploy_s_median": round(statistics.median(deploys), 2) if deploys else None,
        "rollback_s_median": round(statistics.median(rollbacks), 2) if rollbacks else None,
        "destroy_s": round(destroy_s, 2),
        "writes_sent": sum(n for k, n in writers.outcomes.items() if k.startswith("POST")),
        "acknowledged": len(writers.acked),
        "outcomes": dict(writers.outcomes),
        "read_back_misses": len(writers.read_misses),
        "after_cycles": after_cycles,
        "after_destroy_and_deploy": after_destroy,
        "lost": max(after_cycles["lost"], after_destroy["lost"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=50, help="deploy + rollback cycles")
    parser.add_argument("--clients", type=int, default=2, help="clients writing at once")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON report")
    args = parser.parse_args()

    def say(text: str) -> None:
        if not args.json_only:
            print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        example = Example(Path(tmp) / "example")
        try:
            report = run_cycles(example, args.cycles, args.clients, say)
        finally:
            example.cleanup()
    report["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2, sort_keys=True))
    sys.exit(0 if report["lost"] == 0 else 1)


if __name__ == "__main__":
    main()
