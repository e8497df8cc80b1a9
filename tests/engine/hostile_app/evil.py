"""A hostile role: every way its own scripts could reach the fleet's backups, tried.

``targets.json`` (beside this file, written by the test) names the host's paths of the
fleet's state and backup repository. Each mode tries to delete them; the modes that run
while corral's append-only server is up also look for a restic REST server on every TCP
port of every address the container can name for the host (its gateway, podman's names
for the host, its own loopback), and try to delete or overwrite every snapshot on one:

- ``attack``: a build step (``run:``); writes its report into the image;
- ``serve``: the role's program; ``GET /scan`` makes it attack now and answers its report,
  ``GET /report`` answers the build step's report;
- ``dump HOST``: the volume's dump command, run while the backup's server is up: it has the
  program attack (``GET http://HOST:8000/scan``), attacks itself, and checks that its
  scanner finds the program's port on HOST; the reports are the backup's content, so the
  test reads what each saw from the snapshot itself;
- ``restore`` and ``check``: run by ``corral backup verify`` while the server is up; they
  attack and exit 1 if anything was deleted or a server was reached;
- ``probe PORT``: the network attack against 127.0.0.1:PORT, for the test to show the
  scanner and the attack work where a server can be reached.
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


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


def scan(address: str, ports: range) -> tuple[list[int], list[int]]:
    """The ports of ``address`` that accept a TCP connection, and those that gave no
    answer at all (neither a connection nor a refusal) even when asked again slowly."""
    found, silent = _scan(address, list(ports), wait=0.15)
    if silent:
        more, silent = _scan(address, silent, wait=2.0)
        found += more
    return sorted(found), silent


def _scan(address: str, ports: list[int], wait: float) -> tuple[list[int], list[int]]:
    """Non-blocking connects, as many at a time as the open-file limit allows, each
    given ``wait`` seconds (the host is one hop away)."""
    batch = max(16, min(4000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64))
    found: list[int] = []
    silent: list[int] = []
    for start in range(0, len(ports), batch):
        poller = select.epoll()
        pending = {}
        for port in ports[start : start + batch]:
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
        for sock, port in pending.values():
            silent.append(port)
            sock.close()
        poller.close()
    return found, silent


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


def attack_servers(addresses: list[str], ports: range) -> dict[str, object]:
    """Each restic server found (its address, and what a DELETE and an overwrite of every
    snapshot and of the config got), what answered, and what never did."""
    servers = []
    open_ports: dict[str, list[int]] = {}
    silent_ports: dict[str, list[int]] = {}
    for address in addresses:
        found, silent = scan(address, ports)
        open_ports[address], silent_ports[address] = found, silent
        for port in found:
            names = _snapshots(address, port)
            if names is None:
                continue
            tried: dict[str, object] = {}
            for name in [*(f"snapshots/{n}" for n in names), "config"]:
                for method, body in (("DELETE", None), ("POST", b"rewritten")):
                    what = f"{method} {name}"
                    try:
                        tried[what] = _request(address, port, method, "/" + name, body)
                    except (OSError, http.client.HTTPException) as exc:
                        tried[what] = str(exc)
            servers.append({"address": f"{address}:{port}", "snapshots": names, "tried": tried})
    return {"servers": servers, "open": open_ports, "silent": silent_ports}


def attack(network: bool) -> dict[str, object]:
    report: dict[str, object] = {"deleted": delete_paths(), "uid": os.getuid()}
    if network:
        addresses = host_addresses()
        report["addresses"] = addresses
        report["started"] = time.time()
        report.update(attack_servers(addresses, range(1, 65536)))
        report["ended"] = time.time()
    return report


def harmful(report: dict[str, object]) -> bool:
    deleted = report["deleted"]
    assert isinstance(deleted, dict)
    return bool(report.get("servers")) or set(deleted.values()) != {"absent"}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/report":
            body = (HERE / "build-report.json").read_bytes()
        elif self.path == "/scan":
            body = json.dumps(attack(network=True)).encode()
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
    http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()


def dump(host: str) -> dict[str, object]:
    started = time.time()
    conn = http.client.HTTPConnection(host, 8000, timeout=120)
    conn.request("GET", "/scan")
    program = json.loads(conn.getresponse().read())
    conn.close()
    report = attack(network=True)
    found, _ = scan(host, range(1, 65536))
    return {
        "program": program,
        "dump": report,
        "program_port_found": 8000 in found,
        "started": started,
        "ended": time.time(),
    }


def main(mode: str, *args: str) -> None:
    if mode == "attack":
        (HERE / "build-report.json").write_text(json.dumps(attack(network=False)))
    elif mode == "serve":
        serve()
    elif mode == "dump":
        sys.stdout.write(json.dumps(dump(args[0])) + "\n")
    elif mode in ("restore", "check"):
        if mode == "restore":
            sys.stdin.buffer.read()
        report = attack(network=True)
        if harmful(report):
            raise SystemExit(f"{mode} did harm: {json.dumps(report)}")
    elif mode == "probe":
        port = int(args[0])
        sys.stdout.write(json.dumps(attack_servers(["127.0.0.1"], range(port, port + 1))) + "\n")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
