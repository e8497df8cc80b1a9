"""Command health checks and tmpfs folders: the spec, the probe container, the executor.

The engine's side (a probe really is locked down, a hung one is killed, PostgreSQL is
only called healthy once it accepts connections) is in tests/engine/test_health_command.py.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from corral.deploy.apply import Executor, ScratchJournal
from corral.deploy.health import (
    CommandProbe,
    network_check,
    probe_command,
    wait_healthy,
)
from corral.deploy.instances import container_spec, probe_spec, remove_probes
from corral.deploy.plan import Observed, plan_deploy
from corral.deploy.scope import LABEL, Scope
from corral.edge.container import frontends
from corral.engines.base import ContainerSpec, ProbeResult
from corral.engines.fake import FakeEngine
from corral.engines.podman import probe_args, run_args
from corral.errors import DeployError
from corral.progress import NullProgress
from corral.spec import kinds
from corral.spec.model import CommandHealth, Role, RunConfig, TcpHealth
from tests.unit.builders import role_release

SCOPE = Scope("shop")
PG_ISREADY = ["pg_isready", "-h", "{host}", "-p", "{port}"]


def db_release(retries: int = 5, **fields: Any) -> Any:
    return role_release(
        "db",
        run={"port": 5432, "user": "postgres", **fields.pop("run", {})},
        health={"command": PG_ISREADY, "interval": 0.01, "retries": retries},
        **fields,
    )


# -- the spec -------------------------------------------------------------------------


def test_a_command_check_is_a_list_of_arguments_with_the_usual_timing() -> None:
    health = CommandHealth.model_validate({"command": PG_ISREADY, "interval": "500ms"})
    assert health.command == tuple(PG_ISREADY)
    assert (health.interval, health.timeout, health.retries) == (0.5, 2.0, 30)


@pytest.mark.parametrize("argument", ["-h{host}", "{host}:{port}", "--port={port}", "{port} "])
def test_a_placeholder_must_be_a_whole_argument(argument: str) -> None:
    with pytest.raises(ValueError, match="must be a whole argument"):
        kinds.probe_argument(argument)


@pytest.mark.parametrize("argument", ["{host}", "{port}", "{hostname}", "{}", "select 1"])
def test_other_arguments_are_data(argument: str) -> None:
    assert kinds.probe_argument(argument) == argument


def test_a_command_check_needs_a_command() -> None:
    with pytest.raises(ValidationError):
        CommandHealth.model_validate({"command": []})


@pytest.mark.parametrize("path", ["/run/postgresql", "/var/lib/nginx", "/var/run/app", "/srv/x"])
def test_tmpfs_folders_accepted(path: str) -> None:
    assert kinds.tmpfs_path(path) == path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/run", "every instance gets already, owned by its user"),
        ("/tmp", "every instance gets already"),
        ("/var/run", "Debian's link to /run"),
        ("/run/secrets", "holds the instance's secrets"),
        ("/run/secrets/x", "holds the instance's secrets"),
        ("/var/run/secrets", "holds the instance's secrets"),
        ("/proc/x", "/proc is the kernel's"),
        ("/dev/shm", "/dev holds the container's devices"),
        ("/etc", "would hide the system's own files"),
        ("/run/a:b", "':' is not allowed"),
        ("run/x", "absolute path"),
    ],
)
def test_tmpfs_folders_refused(path: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        kinds.tmpfs_path(path)


def test_a_tmpfs_folder_is_named_once_and_is_no_volume() -> None:
    with pytest.raises(ValidationError, match="named twice"):
        RunConfig.model_validate({"command": ["x"], "tmpfs": ["/run/a", "/run/a"]})
    with pytest.raises(ValidationError, match=re.escape("run.tmpfs and a volume are both mounted")):
        Role.model_validate(
            {
                "base": {"debian": "bookworm"},
                "run": {"command": ["x"], "tmpfs": ["/var/lib/db"]},
                "volumes": {"data": "/var/lib/db"},
            }
        )


# -- the probe's command and container -----------------------------------------------


def test_placeholders_are_replaced_as_whole_arguments_only() -> None:
    command = [*PG_ISREADY, "-d", "{hostname}", "x{host}"]
    assert probe_command(command, "10.89.0.7", 5432) == (
        "pg_isready",
        "-h",
        "10.89.0.7",
        "-p",
        "5432",
        "-d",
        "{hostname}",
        "x{host}",
    )


def test_the_probe_container_is_the_roles_image_locked_down_and_bare() -> None:
    rr = db_release(
        run={"env": {"PGDATA": "/x"}, "secrets": ["DB_PASSWORD"], "tmpfs": ["/run/postgresql"]},
        volumes={"data": "/var/lib/postgresql"},
        lockdown={"capabilities": ["NET_BIND_SERVICE"]},
        resources={"memory": "256m", "cpus": 0.5, "pids": 64},
    )
    spec = probe_spec(SCOPE, rr, rr.health, "10.89.0.7")
    assert spec.image == rr.image_id and spec.user == "postgres"
    assert spec.command == ("pg_isready", "-h", "10.89.0.7", "-p", "5432")
    assert spec.network == SCOPE.network and spec.network_aliases == ()
    assert spec.labels == {**SCOPE.labels("probe"), LABEL + "role": "db"}
    assert spec.read_only and spec.no_new_privileges and spec.cap_add == ()
    assert (spec.memory, spec.cpus, spec.pids_limit) == ("256m", 0.5, 64)
    assert spec.env == {} and spec.secrets == {} and spec.mounts == () and spec.ports == ()


def test_podman_runs_the_probe_command_itself_locked_down() -> None:
    rr = db_release()
    spec = probe_spec(SCOPE, rr, rr.health, "10.89.0.7")
    args = probe_args(spec)
    assert args[-3:] == ["--entrypoint", json.dumps(list(spec.command)), rr.image_id]
    for expected in (["--cap-drop", "all"], ["--security-opt", "no-new-privileges"]):
        at = args.index(expected[0])
        assert args[at : at + 2] == expected
    assert "--read-only" in args and "--init" not in args
    assert args[args.index("--user") + 1] == "postgres"
    assert args[args.index("--network") + 1] == SCOPE.network
    assert not any(a.startswith("--network-alias") for a in args)


def test_instances_own_run_and_their_tmpfs_folders() -> None:
    rr = db_release(run={"tmpfs": ["/run/postgresql"]})
    spec = container_spec(SCOPE, rr, 1, 1, {})
    assert spec.owned_tmpfs == ("/run", "/run/postgresql")
    assert spec.tmpfs == ("/tmp",)
    args = run_args(spec)
    owned = "rw,noexec,nosuid,nodev,size=64m,U,mode=0755"
    assert f"--tmpfs=/run:{owned}" in args
    assert f"--tmpfs=/run/postgresql:{owned}" in args
    assert "--tmpfs=/tmp:rw,nosuid,nodev,size=64m" in args


# -- running the probe ----------------------------------------------------------------


def probe_of(engine: FakeEngine) -> CommandProbe:
    rr = db_release()
    return CommandProbe(engine, probe_spec(SCOPE, rr, rr.health, "10.89.0.7"), timeout=2.0)


def test_a_probe_says_what_the_command_said() -> None:
    engine = FakeEngine()
    probe = probe_of(engine)
    assert probe() is None
    engine.probe_answer = lambda spec: ProbeResult(
        1, "10.89.0.7:5432 - rejecting connections\n", 0.4
    )
    assert probe() == "pg_isready: exit 1: 10.89.0.7:5432 - rejecting connections"
    engine.probe_answer = lambda spec: ProbeResult(None, "", 12.0)
    assert probe() == "pg_isready: no answer within 2s (the probe was killed)"
    names = [spec.name for spec in engine.probes]
    assert len(set(names)) == 3 and all(n.startswith("shop-db-probe-") for n in names)


def test_a_command_check_is_never_made_as_a_tcp_check_by_default() -> None:
    health = CommandHealth.model_validate({"command": PG_ISREADY})
    with pytest.raises(ValueError, match="pass its probe"):
        wait_healthy("10.89.0.7", 5432, health)


def test_between_deploys_a_command_checks_port_is_checked_with_tcp() -> None:
    health = CommandHealth.model_validate({"command": PG_ISREADY, "timeout": 0.5})
    assert network_check(health) == TcpHealth(tcp=True, timeout=0.5)


def apply(engine: FakeEngine, rr: Any) -> None:
    desired = {rr.role: rr}
    observed = Observed(instances=(), volumes=set(), good_releases=(), standby=(), now=NOW)
    executor = Executor(engine, SCOPE, ScratchJournal(), NullProgress())
    executor.apply(plan_deploy(SCOPE, desired, observed, release=1))


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_deploy_waits_for_the_command_against_the_new_instance() -> None:
    engine = FakeEngine()
    answers = iter([ProbeResult(1, "rejecting connections", 0.1)] * 2)
    engine.probe_answer = lambda spec: next(answers, ProbeResult(0, "accepting", 0.1))
    apply(engine, db_release(retries=1000))  # 10 s: a loaded machine is slow, not failing
    [instance] = engine.containers.values()
    address = instance.addresses[SCOPE.network]
    assert len(engine.probes) == 3  # two refusals, then ready
    assert all(p.command == ("pg_isready", "-h", address, "-p", "5432") for p in engine.probes)
    assert engine.calls.index(("start", instance.name)) < engine.calls.index(
        ("probe", engine.probes[0].name)
    )


def test_a_deploy_fails_with_the_commands_words() -> None:
    engine = FakeEngine()
    engine.probe_answer = lambda spec: ProbeResult(2, "10.89.0.2:5432 - no response", 0.1)
    with pytest.raises(
        DeployError, match=re.escape("pg_isready: exit 2: 10.89.0.2:5432 - no response")
    ):
        apply(engine, db_release())
    assert engine.containers == {}  # the instance that never got ready is removed


def test_leftover_probes_are_swept_before_a_deploy() -> None:
    engine = FakeEngine()
    labels = {**SCOPE.labels("probe"), LABEL + "role": "db"}
    engine.start(ContainerSpec(name="shop-db-probe-0badf00d", image="img-a", labels=labels))
    other = Scope("shop", "test-12345678")
    engine.start(
        ContainerSpec(
            name="shop-test-12345678-db-probe-1", image="img-a", labels=other.labels("probe")
        )
    )
    apply(engine, db_release(retries=1000))
    assert "shop-db-probe-0badf00d" not in engine.containers
    assert "shop-test-12345678-db-probe-1" in engine.containers  # another scope's
    assert remove_probes(engine, other) == ["shop-test-12345678-db-probe-1"]


def test_the_edge_checks_a_public_command_roles_port_with_tcp() -> None:
    # HAProxy cannot run the command: corral's command check admits a new instance, then
    # HAProxy's own TCP check must pass too, and keeps watching the port between deploys.
    rr = db_release(public=15432)
    [frontend] = frontends({"db": rr})
    assert not frontend.http_check  # HAProxy's plain TCP check


def test_a_role_without_tmpfs_keeps_the_config_hash_it_had_before_the_field() -> None:
    # The value corral computes for this release without the run.tmpfs field (health
    # settings are in it since a health change rolls the role): adding an empty field
    # must not replace every instance at the first deploy of the corral that adds it.
    assert role_release("web", run={"port": 8000}).config_hash == "c32df6fdd5bbd787"
    changed = role_release("web", run={"port": 8000, "tmpfs": ["/run/web"]}).config_hash
    assert changed != "c32df6fdd5bbd787"  # a tmpfs is a new run configuration
