"""A changed public port is deployed like any change: the deploy replaces the edge once the
roles are in place, its smoke test goes through the new port, and an undo or a rollback
brings the old port back (a new-user trial: the smoke test hit the new port before the edge
published it, so every such deploy failed and was rolled back)."""

from __future__ import annotations

import json
import socket

import httpx

from tests.engine.helpers import Fleet, Load, free_port
from tests.engine.test_gate import write_tests


def _serves(port: int) -> str | None:
    """The version the edge answers with on ``port``; None: the port refuses."""
    try:
        return str(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()["version"])
    except httpx.ConnectError:
        return None


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _instances(fleet: Fleet) -> set[str]:
    return {i["name"] for role in fleet.status()["roles"] for i in role["instances"]}


def _move(fleet: Fleet, port: int) -> None:
    fleet.close_edge_apis()
    fleet.port = port
    fleet.write()


def test_a_new_public_port_is_deployed_undone_and_rolled_back(
    fleet: Fleet, shared_base: str
) -> None:
    write_tests(fleet, "v1")
    fleet.corral("test")
    fleet.corral("deploy")
    first, before = fleet.port, _instances(fleet)

    second = free_port()
    _move(fleet, second)
    planned = fleet.corral("plan", check=False).stdout
    assert "edge: replace-needed (public ports or their address changed" in planned
    assert f"(ports {first} -> {second})" in planned, planned
    assert "settings:" not in planned  # the edge line says what changes, not "deploy.*"
    # No new test run: a test environment's edge has a port of its own (the gate refused
    # a port change with "test settings changed" before).
    done = fleet.corral("deploy", "--json")
    assert json.loads(done.stdout)["status"] == "active", done.stdout
    assert _serves(second) == "v1" and _refuses(first)
    assert _instances(fleet) == before  # only the edge changed: no instance replaced
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    [moved] = [e for e in audit if e["action"] == "edge-replace"]
    assert moved["outcome"] == "ok" and moved["details"]["how"] == "replace", moved

    # A smoke test that fails on the live edge: the undo brings the edge back to `second`.
    third = free_port()
    _move(fleet, third)
    where = fleet.folder / "tests" / "test_where.py"
    where.write_text(
        "def test_not_on_the_live_edge(edge_url):\n"
        "    assert '127.0.0.1' not in edge_url  # true in a test environment only\n"
    )
    fleet.corral("test")
    failed = fleet.corral("deploy", check=False)
    assert failed.returncode == 6 and "back on release r2" in failed.stderr, failed.stderr
    assert _serves(second) == "v1" and _refuses(third)
    assert {i["health"] for i in fleet.status()["roles"][0]["instances"]} == {"up"}

    # A rollback to r1 is a deploy of r1's record: the first port again.
    where.unlink()
    _move(fleet, first)
    fleet.corral("rollback", "--to", "1")
    assert _serves(first) == "v1" and _refuses(second)
    status = fleet.status()
    assert status["edge"] == "running" and fleet.corral("status", check=False).returncode == 0

    # A port another program holds: refused before anything changes (a trial's fleet went
    # down first, then failed with podman's "internal libpod error").
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        _move(fleet, taken)
        planned = fleet.corral("plan", check=False).stdout
        assert f"REFUSED: a deploy would stop here: port {taken}" in planned, planned
        refused = fleet.corral("deploy", check=False)
        assert refused.returncode == 2, refused.stderr
        assert f"port {taken} on 127.0.0.1 is in use by another program" in refused.stderr
        assert _serves(first) == "v1"


def _admin(port: int) -> str:
    return (
        "  admin:\n"
        "    base: {debian: bookworm, packages: [python3]}\n"
        "    build: {copy: [{src: app/, dest: /srv/app}]}\n"
        "    run: {command: [python3, /srv/app/server.py], user: app, port: 8000}\n"
        "    health: {http: /healthz, interval: 200ms, retries: 25}\n"
        f"    public: {port}\n"
    )


def test_a_new_public_role_gets_its_port_and_a_changed_role_beside_it_is_refused(
    fleet: Fleet, shared_base: str
) -> None:
    fleet.deploy()
    admin = free_port()
    # A new public role beside a role being replaced: refused before anything changes.
    fleet.write(version="v2", extra=_admin(admin))
    before = _instances(fleet)
    refused = fleet.deploy(check=False)
    assert refused.returncode == 5, refused.stderr  # a safety gate: nothing changed
    assert "deploy admin alone first (corral deploy admin)" in refused.stderr, refused.stderr
    assert _instances(fleet) == before and _serves(fleet.port) == "v1" and _refuses(admin)

    # As the message says: the new role alone (a new pod takes web's instances in), then web.
    # The new pod starts with the old edge's servers: no 503 while they were added again
    # (a trial counted one per pod swap). Only connects fail, for about a second. No
    # counters: a connection to the old edge's CLI would hold up its soft stop.
    with Load(fleet.url, clients=2) as load:
        fleet.deploy("admin")  # built from the app as it is now
    assert _serves(admin) == "v2" and _serves(fleet.port) == "v1"
    print(f"\nnew pod under load: {dict(load.outcomes)}; {load.errors[:5]}")
    assert load.outcomes["GET 200"] > 0 and load.outcomes["POST 200"] > 0, load.outcomes
    assert not [o for o in load.outcomes if o.endswith((" 503", " 502"))], load.errors
    assert _instances(fleet) == before | {f"{fleet.name}-admin-r2-1"}
    audit = json.loads(fleet.corral("audit", "--json").stdout)["audit"]
    [first] = [e for e in audit if e["action"] == "edge-replace"]
    assert first["details"]["first"] is True and first["details"]["release"] == 2, first
    fleet.deploy()
    assert _serves(fleet.port) == "v2" and _serves(admin) == "v2"
    status = fleet.status()
    assert {i["health"] for r in status["roles"] for i in r["instances"]} == {"up"}
