"""A hostile role's own scripts cannot delete or rewrite its backups (issue 12).

The role (tests/engine/hostile_app/evil.py) is told the host's paths of the fleet's state
and backup repository, and tries to delete them from every place a role's code runs: a
build step (run again once the repository exists), its program, its dump command, and the
restore and check commands of ``corral backup verify``. Those that run while corral's
append-only server is up (the dump, the program when the dump asks it to, restore and
check) also scan every TCP port of every address a container can name for the host, and
would DELETE and overwrite every snapshot on a restic server they found. After two
backups, a deploy (whose pre-deploy backup runs the dump again) and a verify, every file
the repository had is still there, byte for byte, and ``restic check`` passes; what each
attack saw is read from the snapshots and from the image. The scanner is shown to work:
in the container it finds the program's port, and on the host, where a server can be
reached, it finds the server and is refused.

The role's *test files* (hostile_app/role_tests.py) run on corral's host, in the sandbox of
corral.testing.sandbox: ``corral test`` of the second image runs them after the backups
exist, and they try to delete the state, the repository and the password file, reach
Podman, and have the exec broker run a command outside the role's instances; each test
passes only if its attack failed, and the repository is checked after them like after the
rest.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.backup.restic import Password, Restic
from corral.backup.server import append_only_server
from tests.engine.helpers import Fleet

HOSTILE = Path(__file__).resolve().parent / "hostile_app"

SPEC = """fleet: {name}
backup: {{max_age: 0}}
roles:
  evil:
    base: {{debian: bookworm, packages: [python3]}}
    build:
      copy: [{{src: evil/, dest: /srv/evil}}]
      run: ["python3 /srv/evil/evil.py attack"]
    run:
      command: [python3, /srv/evil/evil.py, serve]
      user: app
      port: 8000
      env: {{VERSION: {version}}}
    health: {{http: /healthz, interval: 200ms, retries: 100}}
    replicas: 1
    tests: [evil/]
    volumes:
      data:
        path: /var/lib/evil
        backup:
          mode: dump
          dump: [python3, /srv/evil/evil.py, dump, "{{host}}"]
          restore: [python3, /srv/evil/evil.py, restore]
          check: [python3, /srv/evil/evil.py, check]
    public: {port}
"""


def _files(repository: Path) -> dict[Path, bytes]:
    """Every file of the repository but restic's transient locks."""
    return {
        p: p.read_bytes()
        for p in repository.rglob("*")
        if p.is_file() and "locks" not in p.relative_to(repository).parts
    }


def _restic(repository: Path, password_file: Path, *args: str) -> str:
    env = {"RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD_FILE": str(password_file)}
    proc = subprocess.run(
        ["restic", "--no-lock", *args],
        env={**env, "PATH": "/usr/bin:/bin", "HOME": str(password_file.parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _assert_harmless(report: dict[str, Any], where: str) -> None:
    """Nothing deleted; when it scanned: the host's gateway among its addresses, every
    port of every address answered (open or refused), and no restic server reached."""
    assert report["deleted"] and set(report["deleted"].values()) == {"absent"}, (where, report)
    if "servers" in report:
        assert [a for a in report["addresses"] if not a.startswith("127.")], (where, report)
        silent = {a: len(p) for a, p in report["silent"].items() if p}
        assert not silent, f"{where}: ports that never answered, so were not tried: {silent}"
        assert report["servers"] == [], f"{where} reached a restic server: {report}"


def _assert_role_tests_passed(tested: dict[str, Any]) -> None:
    """Every hostile test file's test ran and passed: each of their attacks failed."""
    checks = {c["name"].rsplit("::", 1)[-1]: c for r in tested["results"] for c in r["checks"]}
    own = {n: c["outcome"] for n, c in checks.items() if n.startswith("test_the_")}
    assert len(own) == 4 and set(own.values()) == {"passed"}, checks


@pytest.mark.timeout(900)
def test_a_hostile_roles_scripts_cannot_delete_or_rewrite_its_backups(
    fleet: Fleet, shared_base: str, state_home: Path, tmp_path: Path
) -> None:
    state = state_home / fleet.name
    repository = state / "backups"
    app = fleet.folder / "evil"
    app.mkdir()
    shutil.copy(HOSTILE / "evil.py", app / "evil.py")
    shutil.copy(HOSTILE / "role_tests.py", app / "test_evil.py")
    password_file = tmp_path / "backup-password"
    password_file.write_text(f"bk-{secrets.token_hex(12)}")
    password_file.chmod(0o600)
    targets = [repository / "snapshots", repository / "config", repository, state / "state.db"]
    targets += [state, password_file]
    (app / "targets.json").write_text(json.dumps([str(t) for t in targets]))
    env = {"CORRAL_BACKUP_PASSWORD_FILE": str(password_file)}

    def write(version: str) -> None:
        fleet.spec.write_text(SPEC.format(name=fleet.name, version=version, port=fleet.port))

    def backup() -> str:
        proc = fleet.corral("backup", "--json", env=env, timeout=600)
        [made] = json.loads(proc.stdout)["backups"]
        assert made["mode"] == "dump" and made["snapshot_id"], made
        return str(made["snapshot_id"])

    write("v1")
    fleet.deploy(env=env)
    backup()
    kept = _files(repository)
    assert any("snapshots" in p.parts for p in kept) and (repository / "config") in kept

    # A new image (its build step runs again, now that the repository exists) and a new
    # instance; the deploy backs the volume up first (max_age 0).
    (app / "VERSION").write_text("v2\n")
    write("v2")
    fleet.deploy(env=env)
    backup()
    tested = json.loads(fleet.corral("test", "--json", env=env, timeout=600).stdout)
    _assert_role_tests_passed(tested)
    [drill] = json.loads(fleet.corral("backup", "verify", "--json", env=env).stdout)["verified"]
    assert drill["ok"], drill  # restore and check exit 1 if their attack did anything

    # -- the repository: nothing removed or rewritten, every snapshot sound ----------------
    now = _files(repository)
    gone = [str(p) for p in kept if p not in now]
    changed = [str(p) for p, data in kept.items() if p in now and now[p] != data]
    assert not gone and not changed, f"removed: {gone}; rewritten: {changed}"
    assert state.joinpath("state.db").is_file() and password_file.is_file()
    snapshots = json.loads(_restic(repository, password_file, "snapshots", "--json"))
    assert len(snapshots) == 3, snapshots  # two backups and the pre-deploy one
    assert Restic(str(repository), Password(file=password_file)).check() is None

    # -- what each attack saw: nothing to delete, no server to reach -----------------------
    for snapshot in snapshots:
        dumped = _restic(repository, password_file, "dump", snapshot["id"], "/evil-data.dump")
        seen = json.loads(dumped)
        where = f"the dump of {snapshot['short_id']}"
        assert seen["program_port_found"], f"{where}: the scanner missed the program's port"
        _assert_harmless(seen["dump"], where)
        _assert_harmless(seen["program"], f"the program, during {where}")
        assert seen["started"] <= seen["program"]["started"] < seen["program"]["ended"]
    _assert_harmless(httpx.get(fleet.url + "report", timeout=10).json(), "the build step")

    # -- the scanner is not blind: on the host it finds the server, which refuses it -------
    copy = tmp_path / "copy"
    shutil.copytree(repository, copy)
    with append_only_server(copy) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        probe = subprocess.run(
            [sys.executable, str(app / "evil.py"), "probe", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    [server] = json.loads(probe.stdout)["servers"]
    assert server["address"] == f"127.0.0.1:{port}" and len(server["snapshots"]) == 3, server
    assert server["tried"] and set(server["tried"].values()) == {403}, server
    assert _files(copy) == {copy / p.relative_to(repository): d for p, d in now.items()}
