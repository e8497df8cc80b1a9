"""The data guard with the fake engine and a real state: volumes are recorded, retained,
never deleted by a deploy or a destroy, and deleted only when named, confirmed and backed up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral import app
from corral.cli.main import main
from corral.deploy.dataguard import KnownVolume, guard
from corral.deploy.scope import Scope
from corral.engines.fake import FakeEngine
from corral.errors import DataGuardError
from corral.spec import load_spec
from corral.state import State, utc_now
from tests.unit.builders import backed_up, role_release

SKIP = "data guard unit test"
DB = "    base: {image: localhost/base:1}\n    run: {command: [db], user: app}\n"
WEB = "  web:\n    base: {image: localhost/base:1}\n    run: {command: [web], user: app}\n"


def spec_text(db: str | None = "    volumes: {data: /var/lib/db}\n", extra: str = "") -> str:
    roles = (f"  db:\n{DB}{db}" if db is not None else "") + WEB + extra
    return f"fleet: dg\nbackup: {{max_age: 1h}}\nroles:\n{roles}"


@pytest.fixture
def engine(tmp_path: Path) -> FakeEngine:
    engine = FakeEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/base:1", {})
    return engine


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(spec_text())
    return path


def _state(spec: Path) -> State:
    return State.open(load_spec(spec).state_path)


def _audit(spec: Path, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with _state(spec) as st:
        return [(e.target, e.outcome, dict(e.details)) for e in st.audit_log("dg", action=action)]


def yes(concerns: Sequence[str]) -> bool:
    return True


def test_a_deploy_records_the_volume_it_creates(spec: Path, engine: FakeEngine) -> None:
    result = app.deploy(spec, engine=engine, skip_tests=SKIP)
    assert engine.list_volumes({}) == ["dg-db-data"]
    with _state(spec) as st:
        (record,) = st.volumes("dg")
    assert (record.name, record.role, record.volume, record.path) == (
        "dg-db-data",
        "db",
        "data",
        "/var/lib/db",
    )
    assert record.created_release == result.release and record.protection == "protected"
    assert not record.retained


def test_a_volume_removed_from_the_spec_is_retained_and_said_so(
    spec: Path, engine: FakeEngine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(spec_text(db=""))  # db no longer declares its volume
    app.build(spec, engine=engine)

    planned = app.plan(spec, engine=engine)
    (kept,) = planned.plan.data.retained
    assert (kept.name, kept.reason) == ("dg-db-data", "role db no longer declares volume data")
    assert planned.plan.to_dict()["retained_volumes"] == [
        {"volume": "dg-db-data", "role": "db", "name": "data", "reason": kept.reason}
    ]
    assert planned.plan.data.concerns == ()  # the data stays where it is: nothing to ask

    result = app.deploy(spec, engine=engine, skip_tests=SKIP)
    assert result.status == "active" and result.plan.data.retained == (kept,)
    assert engine.list_volumes({}) == ["dg-db-data"]  # never deleted
    with _state(spec) as st:
        record = st.volume("dg", "dg-db-data")
    assert record is not None and record.retained
    assert record.retained_reason == "role db no longer declares volume data"

    spec.write_text(spec_text())  # declared again: the same volume, its data, in use again
    app.build(spec, engine=engine)
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    with _state(spec) as st:
        again = st.volume("dg", "dg-db-data")
    assert again is not None and not again.retained and again.created_at == record.created_at


def test_a_new_mount_path_keeps_the_volume_and_notes_the_move(
    spec: Path, engine: FakeEngine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(spec_text(db="    volumes: {data: /srv/db}\n"))
    app.build(spec, engine=engine)
    planned = app.plan(spec, engine=engine)
    assert planned.plan.data.notes == (
        "volume dg-db-data of role db moves from /var/lib/db to /srv/db; its data stays",
    )
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    with _state(spec) as st:
        record = st.volume("dg", "dg-db-data")
    assert record is not None and record.path == "/srv/db" and not record.retained


def test_a_role_with_data_shrunk_to_zero_is_asked_about_and_refused_unasked(
    spec: Path, engine: FakeEngine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(spec_text(db="    volumes: {data: /var/lib/db}\n    replicas: 0\n"))
    app.build(spec, engine=engine)
    before = sorted(engine.containers)

    with pytest.raises(DataGuardError, match="role db would run 0 replicas") as refused:
        app.deploy(spec, engine=engine, skip_tests=SKIP)
    assert refused.value.failures and "dg-db-data" in refused.value.failures[0]
    assert sorted(engine.containers) == before  # nothing changed
    [(_, outcome, details)] = _audit(spec, "deploy")[-1:]
    assert outcome == "refused" and details["error_kind"] == "data-guard"

    asked: list[Sequence[str]] = []

    def approve(concerns: Sequence[str]) -> bool:
        asked.append(concerns)
        return True

    result = app.deploy(spec, engine=engine, skip_tests=SKIP, approve=approve)
    assert result.status == "active" and len(asked) == 1
    assert not [n for n in engine.containers if n.startswith("dg-db-")]
    assert engine.list_volumes({}) == ["dg-db-data"]
    [(_, outcome, details)] = _audit(spec, "data-guard")
    assert outcome == "approved" and details["concerns"] == list(asked[0])


def test_removing_a_role_with_data_asks_then_retains_its_volume(
    spec: Path, engine: FakeEngine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(spec_text(db=None))
    app.build(spec, engine=engine)
    with pytest.raises(DataGuardError, match="role db is no longer deployed"):
        app.deploy(spec, engine=engine, skip_tests=SKIP)
    result = app.deploy(spec, engine=engine, skip_tests=SKIP, approve=yes)
    (kept,) = result.plan.data.retained
    assert kept.reason == "role db is no longer deployed"
    assert engine.list_volumes({}) == ["dg-db-data"]
    with _state(spec) as st:
        record = st.volume("dg", "dg-db-data")
    assert record is not None and record.retained


def test_a_new_role_that_would_mount_another_roles_volume_is_asked_about(
    spec: Path, engine: FakeEngine
) -> None:
    # Role "db" with volume "x-data" is engine volume dg-db-x-data; a later role "db-x"
    # with volume "data" would get the same engine name, and db's data.
    spec.write_text(spec_text(db="    volumes: {x-data: /var/lib/db}\n"))
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    db_x = f"  db-x:\n{DB}    volumes: {{data: /data}}\n"
    spec.write_text(spec_text(db=None, extra=db_x))
    app.build(spec, engine=engine)
    planned = app.plan(spec, engine=engine)
    assert any(
        "role db-x would mount volume dg-db-x-data" in c and "role db's volume 'x-data'" in c
        for c in planned.plan.data.concerns
    )
    with pytest.raises(DataGuardError, match="would mount volume dg-db-x-data"):
        app.deploy(spec, engine=engine, skip_tests=SKIP)
    app.deploy(spec, engine=engine, skip_tests=SKIP, approve=yes)
    with _state(spec) as st:
        record = st.volume("dg", "dg-db-x-data")
    assert record is not None and (record.role, record.volume) == ("db-x", "data")
    assert app.plan(spec, engine=engine).plan.data.concerns == ()  # asked once, not forever


def test_the_guard_is_pure_and_leaves_untouched_roles_volumes_alone() -> None:
    scope = Scope("f")
    db = role_release("db", "img", volumes={"data": "/d"})
    known = {
        "f-db-data": KnownVolume("db", "data", "/d"),
        "f-old-logs": KnownVolume("old", "logs", "/l"),
        "f-cache-tmp": KnownVolume("cache", "tmp", "/t"),
    }
    found = guard(scope, {"db": db}, known, {"f-db-data", "f-stray"}, {}, untouched=("cache",))
    assert [(r.name, r.reason) for r in found.retained] == [
        ("f-old-logs", "role old is no longer deployed")
    ]  # the cache role is left as it runs; an unrecorded volume's owner cannot be told
    alone = guard(scope, {"db": db}, {}, {"f-stray"}, {})
    assert [(r.name, r.role) for r in alone.retained] == [("f-stray", "")]
    idle = role_release("db", "img", volumes={"data": "/d"}, replicas=0)
    assert guard(scope, {"db": idle}, known, set(), {"db": 0}).concerns == ()  # nothing ran
    assert guard(scope, {"db": idle}, known, set(), {"db": 1}).concerns


def _verified(spec: Path, name: str, at: str | None = None) -> None:
    """A backup of ``name`` and its passed drill, where the backups code records them:
    the data guard reads that record, never one of its own."""
    with _state(spec) as st:
        backed_up(st, "dg", name, at=at)


def test_destroy_keeps_volumes_and_delete_data_needs_a_recent_verified_backup(
    spec: Path, engine: FakeEngine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    app.destroy(spec, engine=engine)
    assert engine.containers == {} and engine.list_volumes({}) == ["dg-db-data"]

    named = app.Deletion(("dg-db-data",), frozenset({"dg-db-data"}))
    with pytest.raises(DataGuardError, match="no verified backup"):
        app.destroy(spec, engine=engine, deletion=named)
    _verified(spec, "dg-db-data", at="2020-01-01T00:00:00Z")
    with pytest.raises(DataGuardError, match=r"older than backup\.max_age 1h"):
        app.destroy(spec, engine=engine, deletion=named)
    unconfirmed = app.Deletion(("dg-db-data",), frozenset())
    _verified(spec, "dg-db-data")
    with pytest.raises(DataGuardError, match="was not confirmed"):
        app.destroy(spec, engine=engine, deletion=unconfirmed)
    with pytest.raises(DataGuardError, match="dg-web-data is not a volume of fleet dg"):
        app.destroy(spec, engine=engine, deletion=app.Deletion(("dg-web-data",), frozenset()))
    with pytest.raises(DataGuardError, match="dg-web-data is not a volume of fleet dg"):
        app.refuse_unknown_volumes(spec, app.Deletion(("dg-web-data",), frozenset()), engine)
    app.refuse_unknown_volumes(spec, unconfirmed, engine)  # a volume: the questions come next
    assert engine.list_volumes({}) == ["dg-db-data"]

    removed = app.destroy(spec, engine=engine, deletion=named)
    assert "dg-db-data" in removed and engine.list_volumes({}) == []
    with _state(spec) as st:
        assert st.volumes("dg") == []
        (gone,) = st.volumes("dg", deleted=True)
    assert gone.deleted_at is not None
    outcomes = [(target, outcome) for target, outcome, _ in _audit(spec, "delete-data")]
    assert outcomes == [("dg-db-data", "refused")] * 3 + [
        ("dg-web-data", "refused"),
        ("dg-web-data", "refused"),  # refused before any question, audited the same
        ("dg-db-data", "ok"),
    ]


def test_delete_data_without_a_backup_check_needs_a_reason_and_is_audited(
    spec: Path,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    base = ["-f", str(spec), "destroy", "--yes", "--delete-data", "dg-db-data"]
    with pytest.raises(SystemExit) as exited:
        main([*base, "--no-backup-check"])
    assert exited.value.code == 2  # no reason
    with pytest.raises(SystemExit) as exited:
        main([*base, "--no-backup-check", "--reason", "scratch data"])
    assert exited.value.code == 5  # not confirmed, and no terminal to type it on
    assert "was not confirmed" in capsys.readouterr().err
    assert engine.list_volumes({}) == ["dg-db-data"]
    with pytest.raises(SystemExit) as exited:
        main(
            [*base, "--confirm", "dg-db-data", "--no-backup-check", "--reason", "scratch", "--json"]
        )
    assert exited.value.code == 0
    assert json.loads(capsys.readouterr().out)["deleted_volumes"] == ["dg-db-data"]
    assert engine.list_volumes({}) == []
    *_, (target, outcome, details) = _audit(spec, "delete-data")
    assert (target, outcome) == ("dg-db-data", "ok")
    assert details["backup_check"] == "skipped" and details["reason"] == "scratch"


def test_corral_volumes_lists_size_users_backups_and_warns(
    spec: Path,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    engine.volume_bytes["dg-db-data"] = 3 << 20
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "volumes", "--json"])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert exited.value.code == 1  # no verified backup
    (row,) = data["volumes"]
    assert (row["role"], row["volume"], row["name"], row["status"]) == (
        "db",
        "data",
        "dg-db-data",
        "in use",
    )
    assert row["size_bytes"] == 3 << 20 and row["used_by"] == ["dg-db-r1-1"]
    assert data["problems"] == ["volume dg-db-data: no verified backup (backup.max_age is 1h)"]
    assert "warning: volume dg-db-data: no verified backup" in captured.err

    _verified(spec, "dg-db-data", at=utc_now())
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "volumes"])
    shown = capsys.readouterr().out
    assert exited.value.code == 0
    assert "dg-db-data" in shown and "3.0 MiB" in shown and "ago" in shown

    engine.volumes.pop("dg-db-data")  # deleted behind corral's back
    listing = app.volumes(spec, engine=engine)
    assert listing.volumes[0].status == "missing"
    assert listing.problems() == (
        "volume dg-db-data is recorded but the engine has no such volume",
    )


def test_deploy_without_yes_and_without_a_terminal_is_refused_with_exit_5(
    spec: Path,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(spec_text(db=None))
    app.build(spec, engine=engine)
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    deploy = ["-f", str(spec), "deploy", "--skip-tests", "--reason", SKIP]
    with pytest.raises(SystemExit) as exited:
        main(deploy)
    assert exited.value.code == 5 and "data guard refused" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([*deploy, "--yes"])
    assert exited.value.code == 0
    assert engine.list_volumes({}) == ["dg-db-data"]


def test_the_guard_reads_the_backups_record_and_only_a_passed_drill_counts(
    spec: Path, engine: FakeEngine
) -> None:
    """``corral volumes`` and ``--delete-data`` read what ``corral backup`` and ``backup
    verify`` record (the backups store, by engine volume), by the rule the pre-deploy
    backup uses: a proven snapshot younger than backup.max_age."""
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    with _state(spec) as st:
        backed_up(st, "dg", "dg-db-data", verify="failed", snapshot="bad1")
    named = app.Deletion(("dg-db-data",), frozenset({"dg-db-data"}))
    with pytest.raises(DataGuardError, match="no verified backup"):
        app.destroy(spec, engine=engine, deletion=named)
    with _state(spec) as st:
        good = backed_up(st, "dg", "dg-db-data", snapshot="good1")
        backed_up(st, "dg", "dg-db-data", verify=None, snapshot="new1")  # not drilled yet
    [row] = app.volumes(spec, engine=engine).volumes
    assert (row.last_backup_snapshot, row.last_verified_snapshot) == ("new1", "good1")
    assert row.problems == () and row.last_verified_at is not None
    assert good.recent(datetime.now(UTC), load_spec(spec).fleet.backup.max_age)
    removed = app.destroy(spec, engine=engine, deletion=named)
    assert "dg-db-data" in removed and engine.list_volumes({}) == []


def test_a_pre_deploy_backup_is_due_for_a_restored_volume_a_backup_of_the_old_does_not_cover(
    tmp_path: Path,
) -> None:
    # Found by a trial: after `corral restore`, db mounts dg-db-data-restored-1; a recent
    # verified backup of dg-db-data (the volume it replaced) made the deploy skip its own.
    from types import SimpleNamespace

    from corral.deploy.fleet import backups_due

    path = tmp_path / "corral.yaml"
    path.write_text(spec_text("    volumes: {data: {path: /var/lib/db, backup: {}}}\n"))
    spec = load_spec(path)
    db = role_release("db", volumes={"data": "/var/lib/db"})
    restored = db.with_volume_names({"data": "data-restored-1"})
    with State.open(tmp_path / "state.db") as st:
        ctx = SimpleNamespace(spec=spec, state=st, scope=Scope("dg"))
        now = datetime.now(UTC)
        assert backups_due(ctx, {"db": db}, now) == {"db": ("data",)}  # type: ignore[arg-type]
        backed_up(st, "dg", "dg-db-data")
        assert backups_due(ctx, {"db": db}, now) == {}  # type: ignore[arg-type]
        assert backups_due(ctx, {"db": restored}, now) == {"db": ("data",)}  # type: ignore[arg-type]
        backed_up(st, "dg", "dg-db-data-restored-1", snapshot="snap2")
        assert backups_due(ctx, {"db": restored}, now) == {}  # type: ignore[arg-type]


def test_a_volume_declared_again_comes_back_to_the_copy_its_role_last_ran_on() -> None:
    # Found by a trial: after `corral restore` (db on data-restored-1), dropping db's volume
    # from the spec and declaring it again mounted dg-db-data, the copy restored *from*.
    from types import SimpleNamespace

    from corral.deploy.resolve import volume_bindings

    def release(rr: object) -> SimpleNamespace:
        return SimpleNamespace(roles={"db": rr.to_record()})  # type: ignore[attr-defined]

    wanted = {("db", "data")}
    db = role_release("db", volumes={"data": "/var/lib/db"})
    restored = db.with_volume_names({"data": "data-restored-1"})
    dropped = role_release("db")  # the spec no longer declares the volume
    good = [release(db), release(restored), release(dropped)]
    assert volume_bindings(good[::-1], wanted) == {"db": {"data": "data-restored-1"}}  # type: ignore[arg-type]
    back = [*good, release(db)]  # a rollback to before the restore: the original again
    assert volume_bindings(back[::-1], wanted) == {}  # type: ignore[arg-type]
    assert volume_bindings([release(db), release(restored)], wanted) == {}  # type: ignore[arg-type]
