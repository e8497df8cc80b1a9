"""Backup benchmark: a 1 GiB volume through corral's append-only server, then crashes.

On a Podman volume of its own (``corral-bench-<hex>``, removed at the end) filled with
1 GiB of random bytes in 256 files, with corral's own code (``corral.backup``: the
server, restic, the tree checksum a files backup takes while its writers are paused):

- the first backup: time, and how much the repository grew;
- an incremental backup after 1 MiB of one file changed: time and growth (goal: little
  more than the change);
- kill -9 of a backup (restic and the server) half-way: ``restic check`` still passes,
  the next backup works, the live volume is untouched (its checksum);
- kill -9 of a restore half-way: the same checks.

Then (``predeploy``, ``--predeploy-trials`` times each way) what the pre-deploy backup
costs a deploy of the example fleet whose web volume is backed up (``files``): deploys
with it against the same deploys with ``before_deploy: false`` (alternating which goes
first, after an untimed first backup), each checked to make one backup or none.

    .venv/bin/python benchmarks/backup.py [--gib 1] [--predeploy-trials 3] [--skip-volume]
        [--json-only]

It prints a JSON report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from corral.backup.restic import Password, Restic
from corral.backup.run import tree_digest
from corral.backup.server import append_only_server

CORRAL = [sys.executable, "-m", "corral"]

FILES = 256


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _fill(folder: Path, gib: float) -> None:
    each = int(gib * (1 << 30)) // FILES
    for n in range(FILES):
        (folder / f"part-{n:03d}.bin").write_bytes(os.urandom(each))


def _timed_backup(restic: Restic, data: Path, repo: Path) -> dict[str, Any]:
    before = _size(repo)
    started = time.monotonic()
    digest = tree_digest(data)  # what a files backup also does while writers are paused
    checksum_s = time.monotonic() - started
    snapshot, added = restic.backup_folder(data, ["corral", "bench"], "bench")
    return {
        "seconds": round(time.monotonic() - started, 2),
        "checksum_s": round(checksum_s, 2),
        "repository_growth_bytes": _size(repo) - before,
        "restic_data_added_bytes": added,
        "snapshot": snapshot,
        "digest": digest,
    }


CHILD = """
import sys, time
from pathlib import Path
from corral.backup.restic import Password, Restic
from corral.backup.server import append_only_server
repo, data, pw, action = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
with append_only_server(repo) as url:
    restic = Restic(url, Password(file=pw, value=pw.read_text()))
    if action == "backup":
        restic.backup_folder(data, ["corral", "killed"], "bench")
    else:
        restic.restore(action, data)
"""


def _killed(repo: Path, data: Path, pw: Path, action: str, after: float) -> float:
    """Run a backup or restore in a process group of its own, kill -9 it after ``after``
    seconds (corral, rclone and restic at once); how long it ran."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(repo), str(data), str(pw), action],
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    time.sleep(after)
    still = proc.poll() is None
    if still:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _until_gone(proc.pid)
    if not still:
        raise SystemExit(f"the {action} finished before it could be killed: raise its size")
    return after


def _until_gone(group: int, timeout: float = 30.0) -> None:
    """Wait until every process of the killed group has been reaped: restic leaves its
    lock behind, and ``restic unlock`` calls one stale only once its process is gone, as
    it is by the time anyone runs corral again after a crash."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise SystemExit(f"processes of the killed group {group} outlived {timeout:.0f} s")


def run(gib: float) -> dict[str, Any]:
    name = f"corral-bench-{uuid.uuid4().hex[:8]}"
    _podman("volume", "create", "--label", "io.corral.bench=backup", name)
    work = Path(tempfile.mkdtemp(prefix="corral-bench-backup-"))
    try:
        data = Path(_podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).strip())
        _fill(data, gib)
        pw = work / "password"
        pw.write_text(uuid.uuid4().hex)
        pw.chmod(0o600)
        password = Password(file=pw, value=pw.read_text())
        repo = work / "repository"
        report: dict[str, Any] = {"volume_bytes": _size(data)}
        with append_only_server(repo) as url:
            restic = Restic(url, password)
            restic.ensure_initialised()
            report["first"] = _timed_backup(restic, data, repo)
            with (data / "part-000.bin").open("r+b") as handle:
                handle.seek(4096)
                handle.write(os.urandom(1 << 20))
            report["after_1mib_change"] = _timed_backup(restic, data, repo)
        direct = Restic(str(repo), password)
        report["kill_during_backup"] = _crash_backup(repo, data, pw, direct)
        report["kill_during_restore"] = _crash_restore(repo, data, pw, direct, work)
        for step in ("first", "after_1mib_change"):
            report[step].pop("digest")
        return report
    finally:
        subprocess.run(["podman", "volume", "rm", "--force", name], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def _crash_backup(repo: Path, data: Path, pw: Path, direct: Restic) -> dict[str, Any]:
    with (data / "part-001.bin").open("r+b") as handle:  # something new to write
        handle.write(os.urandom(64 << 20))
    live = tree_digest(data)
    ran = _killed(repo, data, pw, "backup", 1.5)
    check = direct.check()
    with append_only_server(repo) as url:
        started = time.monotonic()
        Restic(url, direct.password).backup_folder(data, ["corral", "after-kill"], "bench")
        next_s = time.monotonic() - started
    return {
        "killed_after_s": ran,
        "restic_check": check or "passed",
        "next_backup_s": round(next_s, 2),
        "live_volume_untouched": tree_digest(data) == live,
    }


def _crash_restore(repo: Path, data: Path, pw: Path, direct: Restic, work: Path) -> dict[str, Any]:
    live = tree_digest(data)
    snapshot = direct.snapshots(["after-kill"])[-1].id
    target = work / "restore-target"
    target.mkdir()
    ran = _killed(repo, target, pw, snapshot, 1.5)
    check = direct.check()
    again = work / "restore-again"
    again.mkdir()
    direct.restore(snapshot, again)
    return {
        "killed_after_s": ran,
        "restic_check": check or "passed",
        "restore_after_kill_identical": tree_digest(again / data.name) == live,
        "live_volume_untouched": tree_digest(data) == live,
    }


def predeploy(trials: int) -> dict[str, Any]:
    """What the pre-deploy backup costs a deploy of the example: the web role's volume
    backed up (``files``: its writers paused) before every deploy that replaces it
    (``max_age: 0``), against the same deploys with ``before_deploy: false``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from data_cycles import Example  # the same throwaway copy of the example

    with tempfile.TemporaryDirectory(prefix="corral-bench-predeploy-") as tmp:
        example = Example(Path(tmp) / "example")
        password = Path(tmp) / "password"
        password.write_text(uuid.uuid4().hex)
        password.chmod(0o600)
        example.env["CORRAL_BACKUP_PASSWORD_FILE"] = str(password)
        text = example.spec.read_text()
        volume = "volumes: {data: {path: /var/lib/web, shareable: true}}"
        assert volume in text, "the example's web volume changed: update this benchmark"
        text = text.replace(volume, volume[:-2] + ", backup: {mode: files}}}")
        example.spec.write_text(text.replace("\nfleet: ", "\nbackup: {max_age: 0}\nfleet: ", 1))
        skip = ["--skip-tests", "--reason", "pre-deploy backup benchmark"]
        times: dict[str, list[float]] = {"with_backup_s": [], "without_backup_s": []}
        try:
            example.corral("build")
            example.corral("deploy", *skip)
            example.corral("backup")  # untimed: the repository's set-up and first backup
            for n in range(trials):
                # Alternate which goes first; each must make exactly the backups it says.
                order = [("with_backup_s", True), ("without_backup_s", False)]
                for key, before in order if n % 2 == 0 else order[::-1]:
                    _set_before_deploy(example.spec, before)
                    example.greet(f"trial {n} {key}")
                    made = _backups(example)
                    times[key].append(example.corral("deploy", *skip))
                    if _backups(example) - made != int(before):
                        raise SystemExit(
                            f"a deploy with before_deploy: {before} made "
                            f"{_backups(example) - made} backups"
                        )
        finally:
            example.cleanup()
    with_s = statistics.median(times["with_backup_s"])
    without_s = statistics.median(times["without_backup_s"])
    return {
        "trials": trials,
        "deploy_with_backup_s_median": round(with_s, 2),
        "deploy_without_backup_s_median": round(without_s, 2),
        "backup_cost_s": round(with_s - without_s, 2),
        **{key: [round(t, 2) for t in values] for key, values in times.items()},
    }


def _set_before_deploy(spec: Path, before: bool) -> None:
    text = spec.read_text()
    for value in ("true", "false"):
        text = text.replace(f"before_deploy: {value}, ", "")
    value = "true" if before else "false"
    spec.write_text(text.replace("backup: {", f"backup: {{before_deploy: {value}, ", 1))


def _backups(example: Any) -> int:
    """How many backups the example's state records."""
    listed = subprocess.run(
        [*CORRAL, "-f", str(example.spec), "backup", "--list", "--json"],
        capture_output=True,
        text=True,
        env=example.env,
        check=True,
    )
    return len(json.loads(listed.stdout)["backups"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--predeploy-trials", type=int, default=3, help="0: skip")
    parser.add_argument("--skip-volume", action="store_true", help="only the pre-deploy part")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    report = {} if args.skip_volume else run(args.gib)
    if args.predeploy_trials:
        report["predeploy"] = predeploy(args.predeploy_trials)
    print(json.dumps(report, indent=None if args.json_only else 2, sort_keys=True))


if __name__ == "__main__":
    main()
