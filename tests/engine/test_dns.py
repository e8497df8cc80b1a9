"""A role's name keeps resolving, fast, while containers come and go on the fleet network.

With podman 4.3's defaults, aardvark-dns 1.4 loses or refuses the queries that arrive
while it re-binds its sockets after each container start or stop: a lookup of a role's
name then stalls 5 s (10 s with the search domain) or fails with "Name or service not
known" (see ``dns_args`` in corral/engines/podman.py). Instances started by corral's
engine must ride through the same churn without a failure (aardvark-dns 1.4 still makes
them wait now and then; see the bound below).
"""

from __future__ import annotations

import json
import subprocess
import time

from corral.engines.base import ContainerSpec
from corral.engines.podman import PodmanEngine

# Resolves NAME for SECONDS; prints one JSON line: lookups, the slowest, the failures.
RESOLVE = """
import json, socket, sys, time
name, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
count, slowest, failures, slow = 0, 0.0, [], []
while time.monotonic() < end:
    started = time.monotonic()
    try:
        socket.getaddrinfo(name, 5432, type=socket.SOCK_STREAM)
    except OSError as exc:
        failures.append(str(exc))
    took = time.monotonic() - started
    count, slowest = count + 1, max(slowest, took)
    if took > 0.5:
        slow.append(round(took, 2))
    time.sleep(0.01)
print(json.dumps({"count": count, "slowest": slowest, "failures": failures, "slow": slow}))
"""
SECONDS = 40
CHURN = 12  # containers started and stopped: two signals to aardvark-dns each


def _podman(*args: str) -> str:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def _result(name: str) -> dict[str, object]:
    deadline = time.monotonic() + SECONDS + 60
    while _podman("inspect", "--format", "{{.State.Running}}", name).strip() == "true":
        assert time.monotonic() < deadline, f"{name} did not finish"
        time.sleep(0.5)
    return dict(json.loads(_podman("logs", name).strip().splitlines()[-1]))


def test_role_names_resolve_without_stalls_during_container_churn(
    engine: PodmanEngine, shared_base: str, cleanup_fleet: str
) -> None:
    fleet = cleanup_fleet
    labels = {"io.corral.fleet": fleet}
    network = f"{fleet}-net"
    engine.ensure_network(network, labels)

    def spec(name: str, command: tuple[str, ...], alias: str = "") -> ContainerSpec:
        aliases = (alias,) if alias else ()
        return ContainerSpec(
            name=f"{fleet}-{name}",
            image=shared_base,
            command=command,
            user="nobody",
            labels=labels,
            network=network,
            network_aliases=aliases,
        )

    engine.start(spec("db", ("sleep", "300"), alias="db"))
    client = spec("client", ("python3", "-c", RESOLVE, "db", str(SECONDS)))
    engine.start(client)
    # The same lookups with podman's own resolver settings, for the report.
    _podman(
        "run", "--detach", "--name", f"{fleet}-control", "--label", f"io.corral.fleet={fleet}",
        "--network", network, "--user", "nobody", shared_base,
        "python3", "-c", RESOLVE, "db", str(SECONDS),
    )  # fmt: skip
    resolv = _podman("exec", client.name, "cat", "/etc/resolv.conf")
    for n in range(CHURN):
        churn = spec(f"churn-{n}", ("sleep", "60"))
        engine.start(churn)
        time.sleep(1)
        engine.remove(churn.name)
        time.sleep(1)

    fixed, control = _result(client.name), _result(f"{fleet}-control")
    print(f"corral's resolver: {fixed}\npodman's defaults: {control}")
    servers = {line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")}
    assert "options timeout:2 attempts:5" in resolv, resolv
    assert "search" not in resolv, resolv
    gateway = "{{range .Subnets}}{{.Gateway}}{{end}}"
    assert servers == {_podman("network", "inspect", "--format", gateway, network).strip()}
    assert fixed["failures"] == [], fixed
    assert int(str(fixed["count"])) > 100, fixed
    # A lookup now fails only when aardvark-dns stays away for 25 s. It still stalls:
    # 2 s for a lost query, 8-15 s and more when it stays away (measured here),
    # which podman's defaults turn into 20-40 s stalls or "Name or service not known".
    # What can be bounded is how often: at most one stall per signal it was sent.
    slow = fixed["slow"]
    assert isinstance(slow, list) and len(slow) <= 2 * CHURN + 2, fixed
