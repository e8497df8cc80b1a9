"""Backups of the real stack's PostgreSQL (examples/stack) with restic, under writes.

One fleet, both modes, so the stack is brought up once: a pg_dump backup streamed into
restic while the app writes, a restore drill, a restore into a new volume switched to by
a deploy (rows as at the backup), a rollback back to the old volume; then a files backup
(the db paused) restored the same way; the pre-deploy backup step, and a deploy stopped
by a failed one. The backup password appears in no argv, container, image, state file,
output or audit entry. (That the deploy path cannot delete a snapshot is proven without
the stack, in test_backup_repository.py.)
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engine.helpers import containers, podman_json
from tests.engine.test_stack import Stack
from tests.engine.test_stack import stack as stack  # the fixture

DUMP_BLOCK = """          mode: dump
          dump: [/bin/sh, /srv/db/backup.sh, dump, "{host}"]
          restore: [/bin/sh, /srv/db/backup.sh, restore, "{host}"]
          check: [/bin/sh, /srv/db/backup.sh, check, "{host}"]
"""


class Writer:
    """A client posting rows through the app; every acknowledged id is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                key = secrets.token_hex(8)
                try:
                    answer = client.post(self.url + "rows", content=key, headers={"X-Key": key})
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    self.acked.append(int(answer.json()["id"]))


class ArgvWatch:
    """Samples every process's argv while it runs: a password on one is seen."""

    def __init__(self, needle: str) -> None:
        self.needle = needle
        self.seen: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.samples += 1
            self.seen += [line for line in out.splitlines() if self.needle in line]
            time.sleep(0.05)


@dataclass
class Backed:
    """The stack with a backup password (in a file); every output corral printed."""

    stack: Stack
    password: str
    outputs: list[str] = field(default_factory=list)

    def json(self, *args: str) -> Any:
        proc = self.stack.fleet.corral(*args, "--json", env=self.stack.env, timeout=600)
        self.outputs.append(proc.stdout + proc.stderr)
        return json.loads(proc.stdout)


@pytest.fixture
def backed(stack: Stack, tmp_path: Path) -> Backed:
    """The stack, with a spec that backs up before every deploy that replaces db."""
    password = f"bk-{secrets.token_hex(12)}"
    secret_file = tmp_path / "backup-password"
    secret_file.write_text(password)
    secret_file.chmod(0o600)
    stack.env["CORRAL_BACKUP_PASSWORD_FILE"] = str(secret_file)
    stack.edit("backup: {max_age: 1h}", "backup: {max_age: 0}")
    return Backed(stack, password)


def _count(stack: Stack) -> int:
    return int(httpx.get(stack.app_url + "rows", timeout=30).json()["count"])


def _running_ids(stack: Stack) -> list[tuple[str, str]]:
    return sorted((c["Id"], c["State"]) for c in containers(stack.fleet.name))


def _mounted_volume(stack: Stack) -> str:
    [db] = [
        c["Names"][0]
        for c in containers(stack.fleet.name)
        if c["Labels"].get("io.corral.role") == "db" and c["State"] == "running"
    ]
    [info] = podman_json("container", "inspect", db)
    return str(next(m["Name"] for m in info["Mounts"] if m["Type"] == "volume"))


def test_postgres_backups_restore_into_new_volumes_under_writes(
    backed: Backed, state_home: Path
) -> None:
    stack, password, run = backed.stack, backed.password, backed.json
    stack.deploy()
    folder = state_home / stack.fleet.name / "backups"

    # -- dump mode: pg_dump streamed into restic while the app writes -------------------
    with Writer(stack.app_url) as writer, ArgvWatch(password) as argv:
        time.sleep(1)
        before_backup = _count(stack)
        [made] = run("backup")["backups"]
        time.sleep(1)
    assert made["mode"] == "dump" and made["snapshot_id"] and made["bytes_added"] > 0
    assert len(writer.acked) > 10, "the app was not written to during the backup"
    at_backup = _count(stack)
    assert argv.samples > 5 and not argv.seen, f"the password was on an argv: {argv.seen}"

    [drill] = run("backup", "verify")["verified"]
    assert drill["ok"], drill

    httpx.post(stack.app_url + "rows", content="after the backup", timeout=30)
    live_rows = _count(stack)
    old_volume = _mounted_volume(stack)
    restored = run("restore", "db/data", "--skip-tests", "--reason", "backup test")
    assert restored["deploy"]["status"] == "active"
    assert restored["retained_volume"] == old_volume
    assert _mounted_volume(stack) == restored["new_volume"] != old_volume
    # The dump was taken amid the writes: the rows from before it, none from after it.
    assert before_backup <= _count(stack) <= at_backup < live_rows
    volumes = {v["Name"] for v in podman_json("volume", "ls")}
    assert old_volume in volumes, "the old volume went"
    stack.rollback()
    assert _mounted_volume(stack) == old_volume and _count(stack) == live_rows

    # -- a rotation: the pre-deploy dump logs in with the value the live db was started
    # with (its server holds the old password until it is replaced); db and app then
    # take the new one. With today's value, pg_dump was refused and so was the deploy.
    stack.env["DB_PASSWORD"] = f"rotated-{secrets.token_hex(8)}"
    rotated = run("deploy", "--skip-tests", "--reason", "backup test: rotation")
    assert rotated["status"] == "active", rotated
    assert run("backup", "--list")["backups"][-1]["reason"] == "before deploy"
    assert _count(stack) == live_rows  # the new app logs in with the new password

    # -- files mode: the db paused, its folder snapshotted; restored byte for byte -------
    stack.edit(DUMP_BLOCK, "          mode: files\n")
    with Writer(stack.app_url) as writer:
        time.sleep(1)
        [files] = run("backup")["backups"]
    assert len(writer.acked) > 10, "the app was not written to during the backup"
    assert files["mode"] == "files" and len(files["tree_sha256"]) == 64
    [drill] = run("backup", "verify")["verified"]
    assert drill["ok"] and "tree identical" in drill["detail"], drill
    restored = run("restore", "db/data", "--skip-tests", "--reason", "backup test")
    # PostgreSQL starts on the paused copy (its WAL replayed) and has every row from before.
    assert restored["deploy"]["status"] == "active" and _count(stack) >= live_rows

    # -- the pre-deploy backup is a step of the plan; a failed one stops the deploy ------
    stack.edit(
        "PGDATA: /var/lib/postgresql/data/15}", 'PGDATA: /var/lib/postgresql/data/15, X: "1"}'
    )
    plan = stack.fleet.corral("plan", "--json", check=False, env=stack.env)
    assert '"action": "backup"' in plan.stdout, plan.stdout[-2000:]
    before = _mounted_volume(stack), _running_ids(stack)
    without = {k: v for k, v in stack.env.items() if k != "CORRAL_BACKUP_PASSWORD_FILE"}
    refused = stack.fleet.corral(
        "deploy", "--skip-tests", "--reason", "t", check=False, env=without
    )
    assert refused.returncode != 0 and "password" in refused.stderr
    assert (_mounted_volume(stack), _running_ids(stack)) == before, "it changed"
    started = time.monotonic()
    deployed = run("deploy", "--skip-tests", "--reason", "backup test")
    print(f"deploy with its pre-deploy backup: {time.monotonic() - started:.1f}s")
    assert deployed["status"] == "active"
    listed = run("backup", "--list")["backups"]
    assert listed[-1]["reason"] == "before deploy"
    snapshots = [p.name for p in (folder / "snapshots").iterdir()]
    assert len(snapshots) == len(listed), "a snapshot went, or one is not recorded"
    assert any(s.startswith(made["snapshot_id"]) for s in snapshots)

    # -- retention, with the prune credential the deploy path never holds ----------------
    # The example keeps 7 daily, 4 weekly and 6 monthly: of today's snapshots, the newest.
    stack.env["CORRAL_BACKUP_PRUNE_REPOSITORY"] = str(folder)
    stack.env["CORRAL_BACKUP_PRUNE_PASSWORD_FILE"] = stack.env["CORRAL_BACKUP_PASSWORD_FILE"]
    [pruned] = run("backup", "--prune")["pruned"]
    assert (pruned["volume"], pruned["kept"], pruned["removed"]) == ("db/data", 1, len(listed) - 1)
    left = [p.name for p in (folder / "snapshots").iterdir()]
    assert len(left) == 1 and left[0].startswith(listed[-1]["snapshot_id"])
    after = run("backup", "--list")["backups"]
    assert [bool(b["pruned_at"]) for b in after] == [True] * (len(listed) - 1) + [False]
    checked = subprocess.run(
        ["restic", "--repo", str(folder), "check", "--no-cache"],
        env={
            "RESTIC_PASSWORD_FILE": stack.env["CORRAL_BACKUP_PASSWORD_FILE"],
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stderr
    _assert_nowhere(backed, state_home)


def _assert_nowhere(backed: Backed, state_home: Path) -> None:
    """The password is in no container's or image's configuration, no state file, no
    output of corral (human or --json), and not in the audit trail."""
    stack, password = backed.stack, backed.password
    names = [
        c["Id"]
        for c in podman_json("ps", "--all", "--filter", f"label=io.corral.fleet={stack.fleet.name}")
    ]
    inspected = subprocess.run(["podman", "inspect", *names], capture_output=True, text=True)
    assert names and password not in inspected.stdout
    images = podman_json("images", "--filter", f"reference=localhost/corral/{stack.fleet.name}/*")
    history = [
        subprocess.run(
            ["podman", "history", "--no-trunc", i["Id"]], capture_output=True, text=True
        ).stdout
        for i in images
    ]
    assert images and not any(password in h for h in history)
    for path in (state_home / stack.fleet.name).rglob("*"):
        if path.is_file() and "backups" not in path.parts:
            assert password.encode() not in path.read_bytes(), f"the password is in {path}"
    audit = stack.fleet.corral("audit", "--json", env=stack.env).stdout
    assert not [o for o in [*backed.outputs, audit] if password in o]
