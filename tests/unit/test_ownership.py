"""Fleet ownership: the state that gave the fleet its id is the only one that changes it;
``corral state recover`` rebuilds a lost state from the labels (fake engine; the proof on
Podman is tests/engine/test_fleet_state.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral import app
from corral.deploy.scope import FLEET_ID, STATE
from corral.engines.base import ContainerSpec
from corral.engines.fake import FakeEngine
from corral.state import State
from tests.unit.test_cli import SKIP, WORKER_SPEC, run
from tests.unit.test_reconcile import _serve

Fleet = tuple[Path, FakeEngine]


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    return _serve(FakeEngine(), tmp_path, monkeypatch)


def _containers(engine: FakeEngine) -> dict[str, dict[str, str]]:
    return {c.name: dict(c.labels) for c in engine.list_containers({"io.corral.fleet": "clidemo"})}


def _deploy(capsys: pytest.CaptureFixture[str], spec: Path) -> tuple[int, dict[str, object]]:
    code, out, _ = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    return code, json.loads(out)


def _state_file(spec: Path) -> Path:
    return app.load_spec(spec).state_location.path


def test_the_first_deploy_gives_the_fleet_an_id_every_object_carries(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    assert _deploy(capsys, spec)[0] == 0
    with State.open(_state_file(spec)) as st:
        fleet_id = st.fleet_id("clidemo")
    assert fleet_id and len(fleet_id) == 32
    live = _containers(engine)
    assert len(live) == 2  # two workers (no public role: no edge)
    assert {labels[FLEET_ID] for labels in live.values()} == {fleet_id}
    assert {labels[STATE] for labels in live.values()} == {str(_state_file(spec))}
    assert [e.details["origin"] for e in app.audit(spec) if e.action == "fleet-id"] == ["deploy"]
    assert _deploy(capsys, spec)[0] == 0  # the next deploy keeps it
    with State.open(_state_file(spec)) as st:
        assert st.fleet_id("clidemo") == fleet_id


def test_another_state_refuses_to_change_the_fleet_and_names_its_owner(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec, engine = fleet
    assert _deploy(capsys, spec)[0] == 0
    owner = str(_state_file(spec))
    before = _containers(engine)
    monkeypatch.setenv("CORRAL_STATE", str(tmp_path / "elsewhere.db"))
    for command in (("deploy", *SKIP), ("rollback",), ("reconcile",), ("plan",), ("gc",)):
        code, out, err = run(capsys, "--json", "-f", str(spec), *command)
        assert code == 5, (command, err)
        error = json.loads(out)
        assert error["error"] == "ownership" and error["owner"] == owner, command
        assert f"CORRAL_STATE={owner}" in err and "belongs to another state" in err
    code, out, err = run(capsys, "--json", "-f", str(spec), "destroy", "--yes")
    assert code == 5 and "Nothing was changed" in err
    assert _containers(engine) == before  # nothing removed, nothing started
    refused = [e for e in app.audit(spec) if e.outcome == "refused"]
    assert {e.action for e in refused} >= {"deploy", "destroy"}  # in the state it was given


def test_instances_no_state_records_are_never_removed(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Instances an earlier corral made (no fleet id) from another state: a fresh state
    refuses them (the issue's "role web is no longer in the spec"), the one that has them
    on record adopts the fleet."""
    spec, engine = fleet
    engine.start(
        ContainerSpec(
            name="clidemo-old-r1-1",
            image="localhost/worker-base:1",
            labels={
                "io.corral.fleet": "clidemo",
                "io.corral.env": "live",
                "io.corral.kind": "instance",
                "io.corral.role": "old",
                "io.corral.release": "1",
            },
        )
    )
    code, _, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == 5 and "has no record of (clidemo-old-r1-1)" in err
    assert "never removes an instance it cannot account for" in err
    assert "clidemo-old-r1-1" in _containers(engine)
    with State.open(_state_file(spec)) as st:  # the state that made it, as an older corral
        release = st.start_release("clidemo", "deploy", {})
        st.record_instance("clidemo", "clidemo-old-r1-1", "old", release.number, "img")
        st.finish_release(release.id, "active")
    assert _deploy(capsys, spec)[0] == 0
    assert [e.details["origin"] for e in app.audit(spec) if e.action == "fleet-id"] == ["adopt"]


def test_a_lost_state_is_recovered_from_the_labels_and_deploys_go_on(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = fleet
    assert _deploy(capsys, spec)[0] == 0
    path = _state_file(spec)
    with State.open(path) as st:
        fleet_id = st.fleet_id("clidemo")
        active = st.active_release("clidemo")
        images = st.images("clidemo")
    assert active is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    code, out, err = run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)
    assert code == 5 and "corral state recover" in err  # the empty state is not the owner
    code, out, err = run(capsys, "--json", "-f", str(spec), "state", "recover")
    assert code == 0, err
    done = json.loads(out)
    assert done["fleet_id"] == fleet_id and done["release"] == active.number
    assert done["roles"] == ["worker"] and len(done["instances"]) == 2
    assert done["images"] == len(images) and done["volumes"] == ["clidemo-worker-data"]
    with State.open(path) as st:
        again = st.active_release("clidemo")
        assert again is not None and again.roles == active.roles | {
            "worker": {**active.roles["worker"], "secret_hashes": {}}
        }
        assert [i.number for i in st.images("clidemo")] == [i.number for i in images]
        assert {i.name for i in st.instances("clidemo")} == set(done["instances"])
    recovered = [e for e in app.audit(spec) if e.action == "state-recover"]
    assert len(recovered) == 1 and recovered[0].details["release"] == active.number
    code, out, err = run(capsys, "--json", "-f", str(spec), "state", "recover")
    assert code == 2 and "holds fleet clidemo already" in err
    code, third = _deploy(capsys, spec)
    assert code == 0 and third["release"] is None  # the fleet runs the spec: nothing to do
    assert sorted(_containers(engine)) == sorted(done["instances"])
    spec.write_text(WORKER_SPEC.replace("replicas: 2", "replicas: 3"))
    code, fourth = _deploy(capsys, spec)
    assert code == 0 and fourth["release"] == active.number + 1  # numbers continue


def test_export_and_import_through_the_cli(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec, _ = fleet
    assert _deploy(capsys, spec)[0] == 0
    dump = tmp_path / "state.json"
    code, out, err = run(capsys, "--json", "-f", str(spec), "state", "export", "-o", str(dump))
    assert code == 0, err
    document = json.loads(dump.read_text())
    assert document["format"] == "corral-state" and oct(dump.stat().st_mode)[-3:] == "600"
    assert json.loads(out)["rows"] == sum(len(r) for r in document["tables"].values())
    monkeypatch.setenv("CORRAL_STATE", str(tmp_path / "moved.db"))
    code, out, err = run(capsys, "--json", "-f", str(spec), "state", "import", str(dump))
    assert code == 0, err
    code, out, err = run(capsys, "--json", "-f", str(spec), "state", "import", str(dump))
    assert code == 7 and "is not empty" in err  # the state: exit 7
    code, out, err = run(
        capsys, "--json", "-f", str(spec), "state", "import", "--replace", str(dump)
    )
    assert code == 0 and json.loads(out)["replaced"].startswith(str(tmp_path / "moved.db"))
    # The moved state owns the fleet: deploys go on from it.
    code, result = _deploy(capsys, spec)
    assert code == 0, result
    imports = [e for e in app.audit(spec) if e.action == "state-import"]
    assert len(imports) == 1  # the replaced file kept the first one
