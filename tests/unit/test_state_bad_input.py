"""A state that cannot be used (issue 11, deliverable 6): a server that does not answer,
wrong credentials, a newer schema, a read-only or full disk, a disk that fills up in the
middle of a deploy. Each: an error naming the state, exit code 7, the fleet unchanged (or,
mid-deploy, stopped where it was and said so); read-only commands keep working.

The disks are real: a small tmpfs, remounted read-only or filled (this needs root, as
the engine tests do; without it the tests fail, never skip)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.engines.fake import FakeEngine
from corral.errors import StateError
from corral.state import State
from tests.pgcluster import Cluster
from tests.unit.test_cli import SKIP, WORKER_SPEC, run
from tests.unit.test_reconcile import _serve

Fleet = tuple[Path, FakeEngine]
STATE_EXIT = 7


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    return _serve(FakeEngine(), tmp_path, monkeypatch)


def _running(engine: FakeEngine) -> list[tuple[str, str]]:
    found = engine.list_containers({"io.corral.fleet": "clidemo", "io.corral.kind": "instance"})
    return sorted((c.name, c.labels["io.corral.release"]) for c in found if c.state == "running")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of the test's own, unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir(mode=0o700)
    _mount("-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)


def _reads_work(capsys: pytest.CaptureFixture[str], spec: Path) -> None:
    """status, plan, history and audit read a state that cannot be written."""
    code, out, err = run(capsys, "--json", "-f", str(spec), "status")
    assert code == 0 and json.loads(out)["release"] == 1, err
    code, out, err = run(capsys, "--json", "-f", str(spec), "plan")
    assert code == 0, err  # nothing would change
    code, out, err = run(capsys, "--json", "-f", str(spec), "history")
    assert code == 0 and [r["release"] for r in json.loads(out)["releases"]] == [1], err
    code, out, err = run(capsys, "--json", "-f", str(spec), "audit")
    assert code == 0 and json.loads(out), err


def test_a_server_that_does_not_answer(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, engine = fleet
    monkeypatch.setenv("CORRAL_STATE", "postgresql://corral@127.0.0.1:1/fleet")
    code, out, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == STATE_EXIT, err
    assert "the state database postgresql://corral@127.0.0.1:1/fleet does not answer" in err
    assert json.loads(out)["error"] == "state" and _running(engine) == []


def test_wrong_credentials(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    pg_cluster: Cluster,
) -> None:
    spec, engine = fleet
    url = pg_cluster.new_database().replace(f"{pg_cluster.user}@", "nobody@")
    monkeypatch.setenv("CORRAL_STATE", url)
    code, _, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == STATE_EXIT and "refused the credentials" in err and "nobody@" in err
    assert _running(engine) == []


def test_a_state_from_a_newer_corral(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec, engine = fleet
    path = tmp_path / "newer.db"
    State.open(path).close()
    with State.open(path) as st:
        st.conn.execute("PRAGMA user_version = 999")
    monkeypatch.setenv("CORRAL_STATE", str(path))
    code, out, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == STATE_EXIT and f"{path} has schema version 999" in err
    assert "upgrade corral" in err and json.loads(out)["schema_version"] == 999
    assert _running(engine) == []


def test_a_read_only_state(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    small_disk: Path,
) -> None:
    spec, engine = fleet
    monkeypatch.setenv("CORRAL_STATE", str(small_disk / "state.db"))
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0
    before = _running(engine)
    _mount("-o", "remount,ro", str(small_disk))
    spec.write_text(WORKER_SPEC.replace("replicas: 2", "replicas: 3"))
    code, _, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert (
        code == STATE_EXIT and f"the state database {small_disk / 'state.db'} is read-only" in err
    )
    assert _running(engine) == before
    spec.write_text(WORKER_SPEC)
    _reads_work(capsys, spec)
    _mount("-o", "remount,rw", str(small_disk))
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0


def test_a_full_disk(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    small_disk: Path,
) -> None:
    spec, engine = fleet
    monkeypatch.setenv("CORRAL_STATE", str(small_disk / "state.db"))
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0
    before = _running(engine)
    _fill(small_disk)
    spec.write_text(WORKER_SPEC.replace("replicas: 2", "replicas: 3"))
    code, _, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == STATE_EXIT and f"the disk under the state database {small_disk}" in err, err
    assert _running(engine) == before
    spec.write_text(WORKER_SPEC)
    _reads_work(capsys, spec)
    (small_disk / "filler").unlink()
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0


def test_a_state_that_fills_up_mid_deploy_stops_and_says_where(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second instance of release 2 cannot be recorded: the deploy stops there, undoes
    nothing (an undo records its steps too), says what runs; the next deploy finishes."""
    spec, engine = fleet
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0
    calls: list[str] = []
    original = State.record_instance

    def filling(self: State, fleet: str, name: str, *args: object) -> None:
        calls.append(name)
        if len(calls) >= 2:
            raise StateError(
                f"the disk under the state database {self.path} is full", path=str(self.path)
            )
        original(self, fleet, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(State, "record_instance", filling)
    spec.write_text(WORKER_SPEC.replace("command: [work]", "command: [work, --v2]"))
    code, out, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == STATE_EXIT, err
    error = json.loads(out)
    assert error["cause"] == "state" and "release r2 stopped" in error["message"]
    assert "Nothing was undone" in err and "worker: 3 running (of 2 wanted; 2 of release r2)" in err
    assert [r for _, r in _running(engine)].count("2") == 2  # no instance of r2 was removed
    monkeypatch.setattr(State, "record_instance", original)
    code, out, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == 0, err
    assert len(_running(engine)) == 2
