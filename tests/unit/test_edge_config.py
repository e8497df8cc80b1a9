"""The rendered haproxy.cfg: its content, its validation, and HAProxy's own verdict on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from corral.deploy.steps import DRAIN_LEFTOVER
from corral.edge.config import (
    CONNECT_TIMEOUT_S,
    DEFAULT_RETRY_ON,
    EMPTY_STATE,
    Frontend,
    StaticServer,
    render_haproxy_cfg,
)

HAPROXY = shutil.which("haproxy")

WEB = Frontend(name="web", bind_port=8080, backend="web", http_check=True)
API = Frontend(name="api", bind_port=8081, backend="api_be", http_check=False)


def _section(cfg: str, header: str) -> str:
    """The lines of one section, from its header to the next blank line."""
    start = ("\n" + cfg).index("\n" + header + "\n")  # a line of its own, not a suffix
    end = cfg.find("\n\n", start)
    return cfg[start : end if end >= 0 else None]


def test_global_has_admin_socket_in_foreground() -> None:
    cfg = render_haproxy_cfg([WEB], "/run/corral/edge.sock")
    glob = _section(cfg, "global")
    assert "stats socket /run/corral/edge.sock mode 600 level admin expose-fd listeners" in glob
    # sized for the largest role (100 replicas + 100 surging), never for the current one
    assert "    stats maxconn 64" in glob.splitlines()
    assert "backlog 256" in glob
    assert "    nbthread 1" in glob.splitlines()
    assert "log stdout" in glob
    assert "daemon" not in cfg
    # a reload starts the new worker with the old one's server states, and ends the old
    # one's requests after a bound
    assert "    server-state-file /etc/corral-edge/servers.state" in glob.splitlines()
    assert "    hard-stop-after 60s" in glob.splitlines()


def test_defaults_retry_elsewhere() -> None:
    defaults = _section(render_haproxy_cfg([WEB], "/s.sock"), "defaults")
    for line in (
        "mode http",
        "option redispatch 1",
        "retries 3",
        f"retry-on {DEFAULT_RETRY_ON}",
        "default-server inter 500ms downinter 20ms fall 2 rise 1",
        "timeout connect",
        "load-server-state-from-file global",
        # an old worker never closes an idle kept-alive connection under a client's request
        "option idle-close-on-response",
    ):
        assert line in defaults


def test_retry_on_can_be_chosen() -> None:
    cfg = render_haproxy_cfg([WEB], "/s.sock", retry_on="all-retryable-errors")
    assert "retry-on all-retryable-errors" in cfg


def test_frontend_and_backend_per_role_without_servers() -> None:
    cfg = render_haproxy_cfg([WEB, API], "/s.sock")
    assert _section(cfg, "frontend web") == (
        "frontend web\n    bind *:8080\n    default_backend web"
    )
    assert "bind *:8081" in _section(cfg, "frontend api")
    web = _section(cfg, "backend web")
    assert "balance roundrobin" in web
    # each server's path comes from the check map, set when it is added: two releases'
    # instances are checked on their own paths, and no default passes a server with none
    assert "    option httpchk\n" in web + "\n"
    assert "http-check send meth GET uri-lf %[srv_name,map(/etc/corral-edge/checks.map)]" in web
    # an old worker finishing its requests after a reload has nbsrv() 0: not it
    assert "if { nbsrv() eq 0 } !{ stopping }" in web
    # HAProxy 2.6 would replay a POST on empty-response or 502/503/504 like a GET
    assert "http-request disable-l7-retry unless { method GET HEAD OPTIONS }" in web
    api = _section(cfg, "backend api_be")
    assert "httpchk" not in api
    # a TCP-checked backend keeps the check map loaded, for a reload back to HTTP checks
    assert "acl corral_check_map str(),map(/etc/corral-edge/checks.map) -m found" in api
    assert "\n    server " not in cfg


def test_shared_backend_is_rendered_once() -> None:
    other = Frontend(name="web-alt", bind_port=8443, backend="web", http_check=True)
    cfg = render_haproxy_cfg([WEB, other], "/s.sock")
    assert cfg.count("\nbackend web\n") == 1


def test_no_frontends_is_a_valid_empty_edge() -> None:
    cfg = render_haproxy_cfg([], "/s.sock")
    assert "frontend" not in cfg and "backend" not in cfg


@pytest.mark.parametrize(
    ("frontends", "socket_path", "complaint"),
    [
        ([Frontend("we b", 80, "web")], "/s", "frontend name"),
        ([Frontend("web", 80, "web;x")], "/s", "backend name"),
        ([Frontend("web", 0, "web")], "/s", "out of range"),
        ([Frontend("web", 70000, "web")], "/s", "out of range"),
        ([Frontend("a", 80, "a"), Frontend("b", 80, "b")], "/s", "used twice"),
        ([Frontend("a", 80, "a"), Frontend("a", 81, "b")], "/s", "declared twice"),
        ([Frontend("a", 80, "x", True), Frontend("b", 81, "x")], "/s", "two different"),
        ([WEB], "/tmp/with space.sock", "without spaces"),
        ([WEB], "", "non-empty"),
    ],
)
def test_invalid_input_is_refused(
    frontends: list[Frontend], socket_path: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        render_haproxy_cfg(frontends, socket_path)


def test_a_reload_declares_the_servers_the_old_worker_had() -> None:
    servers = [
        StaticServer("web", "demo-web-r2-1", "10.89.0.7", 8000),
        StaticServer("web", "demo-web-r1-1", "10.89.0.5", 8000, check=False),
        StaticServer("api_be", "demo-api-r2-1", "fd00::5", 9000),
    ]
    cfg = render_haproxy_cfg([WEB, API], "/s.sock", servers=servers)
    web = _section(cfg, "backend web").splitlines()
    assert web[-2:] == [
        "    server demo-web-r2-1 10.89.0.7:8000 check",
        "    server demo-web-r1-1 10.89.0.5:8000",
    ]
    assert _section(cfg, "backend api_be").splitlines()[-1] == (
        "    server demo-api-r2-1 [fd00::5]:9000 check"
    )


@pytest.mark.parametrize(
    ("server", "complaint"),
    [
        (StaticServer("nope", "a", "10.0.0.1", 80), "no backend"),
        (StaticServer("web", "a b", "10.0.0.1", 80), "server name"),
        (StaticServer("web", "a", "web.example", 80), "does not appear to be an IPv4"),
        (StaticServer("web", "a", "10.0.0.1", 0), "out of range"),
    ],
)
def test_invalid_servers_are_refused(server: StaticServer, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        render_haproxy_cfg([WEB], "/s.sock", servers=[server])


@pytest.mark.parametrize("retry_on", [DEFAULT_RETRY_ON, "all-retryable-errors"])
def test_haproxy_accepts_the_config(tmp_path: Path, retry_on: str) -> None:
    cfg = tmp_path / "haproxy.cfg"
    (tmp_path / "checks.map").write_text("demo-web-r2-1 /healthz\n")
    (tmp_path / "servers.state").write_text(EMPTY_STATE.decode())
    cfg.write_text(
        render_haproxy_cfg(
            [WEB, API],
            str(tmp_path / "a.sock"),
            check_map=str(tmp_path / "checks.map"),
            state_file=str(tmp_path / "servers.state"),
            servers=[StaticServer("web", "demo-web-r2-1", "127.0.0.1", 8000)],
            retry_on=retry_on,
        )
    )
    if HAPROXY is None:  # CI must have it: a skip here would hide a config HAProxy rejects
        pytest.fail("haproxy is not installed: apt-get install haproxy (or run scripts/setup)")
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # A warning would mean a keyword HAProxy 2.6 ignores or reinterprets.
    assert "WARNING" not in check.stdout + check.stderr


def test_a_dead_instance_drains_longer_than_a_connection_to_it_may_wait() -> None:
    # Connections to a killed instance's vanished address time out and are retried on
    # another server; a drain that ended first would cut them (failed requests).
    assert DRAIN_LEFTOVER > CONNECT_TIMEOUT_S
