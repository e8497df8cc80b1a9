"""Backups' pure parts: the spec's backup sections, the pre-deploy backup steps of a plan,
restored volumes in a release, the repository password's path to restic, the scrubber,
and the tree checksum's sensitivity."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from corral import app
from corral.backup import service
from corral.backup.restic import Password, Restic
from corral.backup.run import tree_digest
from corral.deploy.context import Context
from corral.deploy.observe import Instance
from corral.deploy.plan import Observed, plan_deploy
from corral.deploy.scope import Scope
from corral.deploy.steps import Action
from corral.deploy.volumes import volume_backups
from corral.errors import SpecError, UsageError
from corral.spec import load_spec
from corral.state import State
from tests.unit.builders import backed_up, role_release

SCOPE = Scope("shop")
SPEC = """\
fleet: shop
backup: {{max_age: 2d}}
roles:
  db:
    base: {{debian: bookworm}}
    run: {{command: [db], user: app, port: 5432}}
    volumes:
      data:
        path: /var/lib/db
        backup: {backup}
"""


def _spec(tmp_path: Path, backup: str) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC.format(backup=backup))
    return path


def test_a_dump_volume_names_its_commands_and_retention(tmp_path: Path) -> None:
    spec = load_spec(
        _spec(
            tmp_path, '{mode: dump, dump: [pg_dump, -h, "{host}"], restore: [r], keep: {daily: 3}}'
        )
    )
    how = spec.fleet.roles["db"].backups["data"]
    assert (how.mode, how.dump, how.keep.daily, how.keep.weekly) == (
        "dump",
        ("pg_dump", "-h", "{host}"),
        3,
        4,
    )
    assert spec.fleet.backup.max_age == 2 * 86400


@pytest.mark.parametrize(
    ("backup", "words"),
    [
        ("{mode: dump, dump: [d]}", "needs both a 'dump' and a 'restore'"),
        ("{mode: files, dump: [d], restore: [r]}", "for mode 'dump' only"),
        ('{mode: dump, dump: [d, "-h{host}"], restore: [r]}', "must be a whole argument"),
        ("{mode: tar}", "files"),
        ("{keep: {daily: -1}}", "an integer from 0 to 10000"),
    ],
)
def test_a_backup_section_that_cannot_work_is_refused(
    tmp_path: Path, backup: str, words: str
) -> None:
    with pytest.raises(SpecError) as refused:
        load_spec(_spec(tmp_path, backup))
    assert words in str(refused.value.diagnostics)


def _observed(instances: list[Instance], due: dict[str, tuple[str, ...]]) -> Observed:
    return Observed(
        instances=instances,
        volumes={"shop-db-data"},
        good_releases={1},
        standby=(),
        now=datetime(2026, 1, 1, tzinfo=UTC),
        backups_due=due,
    )


def _running(rr: Any, image: str) -> Instance:
    return Instance("shop-db-r1-1", "db", 1, 1, image, rr.config_hash, "running", "10.0.0.2")


def test_a_plan_backs_up_the_due_volumes_of_a_role_whose_instances_it_replaces() -> None:
    old = role_release("db", "img-a", volumes={"data": "/var/lib/db"})
    new = role_release("db", "img-b", volumes={"data": "/var/lib/db"})
    plan = plan_deploy(SCOPE, {"db": new}, _observed([_running(old, "img-a")], {"db": ("data",)}))
    [step] = plan.backup_steps
    assert (step.action, step.role, step.instance) == (Action.BACKUP, "db", "data")
    assert plan.backs_up == ("db/data",)
    assert plan.to_dict()["backup_steps"][0]["action"] == "backup"


@pytest.mark.parametrize("case", ["unchanged", "first deploy", "not due"])
def test_a_plan_backs_up_nothing_when_no_instance_with_data_goes(case: str) -> None:
    rr = role_release("db", "img-a", volumes={"data": "/var/lib/db"})
    instances = [] if case == "first deploy" else [_running(rr, "img-a")]
    desired = {"db": rr if case == "unchanged" else role_release("db", "img-b", volumes=rr.volumes)}
    due = {} if case == "not due" else {"db": ("data",)}
    assert plan_deploy(SCOPE, desired, _observed(instances, due)).backup_steps == ()


def test_a_restored_volume_is_part_of_the_instances_configuration() -> None:
    rr = role_release("db", volumes={"data": "/var/lib/db"})
    moved = rr.with_volume_names({"data": "data-restored-abc", "gone": "x"})
    assert moved.volume_names == {"data": "data-restored-abc"}
    assert moved.engine_volume(SCOPE, "data") == "shop-db-data-restored-abc"
    assert rr.engine_volume(Scope("shop", "test-1"), "data") == "shop-test-1-db-data"
    assert moved.config_hash != rr.config_hash  # its instances are replaced
    assert rr.with_volume_names({}).config_hash == rr.config_hash  # older ones stay current


def test_the_password_goes_to_restic_by_file_or_environment_only(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    by_file = Password.from_environ(
        {"CORRAL_BACKUP_PASSWORD_FILE": str(secret), "CORRAL_BACKUP_PASSWORD": "x"}
    )
    assert (by_file.value, by_file.environment()) == (
        "s3cret",
        {"RESTIC_PASSWORD_FILE": str(secret)},
    )
    by_value = Password.from_environ({"CORRAL_BACKUP_PASSWORD": "v4lue"})
    assert by_value.environment() == {"RESTIC_PASSWORD": "v4lue"}
    assert "v4lue" not in repr(by_value)
    os.environ["RESTIC_REPOSITORY"] = "elsewhere"
    try:
        env = Restic("rest:http://127.0.0.1:1/", by_value).environment()
    finally:
        del os.environ["RESTIC_REPOSITORY"]
    assert (
        env["RESTIC_REPOSITORY"] == "rest:http://127.0.0.1:1/" and env["RESTIC_PASSWORD"] == "v4lue"
    )


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_password_is_a_usage_error(tmp_path: Path, content: str | None) -> None:
    env = {}
    if content is not None:
        (tmp_path / "pw").write_text(content)
        env["RESTIC_PASSWORD_FILE"] = str(tmp_path / "pw")
    with pytest.raises(UsageError, match=r"CORRAL_BACKUP_PASSWORD|empty"):
        Password.from_environ(env)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o620])
def test_a_password_file_others_may_read_or_write_is_refused(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(mode)
    with pytest.raises(UsageError, match=f"may read or write \\(mode 0{mode:o}\\): chmod 600"):
        Password.from_environ({"CORRAL_BACKUP_PASSWORD_FILE": str(secret)})
    monkeypatch.setenv("CORRAL_BACKUP_PASSWORD_FILE", str(secret))
    assert "s3cret" in app.backup_passwords()  # refused, and still scrubbed from output
    secret.chmod(0o400)
    assert Password.from_environ({"CORRAL_BACKUP_PASSWORD_FILE": str(secret)}).value == "s3cret"


def test_the_backup_password_is_scrubbed_from_everything_corral_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_BACKUP_PASSWORD", "bk-very-secret")
    spec = load_spec(_spec(tmp_path, "{mode: files}"))
    assert app.scrubber(spec).text("restic said bk-very-secret") == "restic said ***"


def test_pruning_needs_the_prune_credential() -> None:
    with pytest.raises(UsageError, match="CORRAL_BACKUP_PRUNE_REPOSITORY"):
        service.prune(cast(Context, None), environ={"CORRAL_BACKUP_PASSWORD": "deploy"})


def test_the_tree_checksum_sees_bytes_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"one")
    (tmp_path / "l").symlink_to("a")
    first = tree_digest(tmp_path)
    assert tree_digest(tmp_path) == first
    changes = [
        lambda: (tmp_path / "a").write_bytes(b"two"),
        lambda: (tmp_path / "a").chmod(0o600),
        lambda: ((tmp_path / "l").unlink(), (tmp_path / "l").symlink_to("b")),
        lambda: (tmp_path / "new").mkdir(),
    ]
    seen = {first}
    for change in changes:
        change()
        seen.add(tree_digest(tmp_path))
    assert len(seen) == len(changes) + 1


def test_a_pruned_snapshots_row_stays_but_never_counts_again(tmp_path: Path) -> None:
    """After ``restic forget`` the rows of the snapshots it removed are marked pruned
    (only those: not a snapshot of another repository, nor one taken meanwhile):
    still listed, never the latest backup, a verified one or a recent verified one."""
    state = State.open(tmp_path / "state.db")
    old = backed_up(state, "shop", "shop-db-data", snapshot="aaaa1111")
    new = backed_up(state, "shop", "shop-db-data", snapshot="bbbb2222", verify=None)
    other = backed_up(state, "shop", "shop-web-data", snapshot="cccc3333")
    store = state.stores.backups
    removed = ["aaaa1111" + "0" * 56]  # restic's full ids; the rows hold what backup said
    assert store.pruned("shop", "db", "data", removed) == 1
    assert store.pruned("shop", "db", "data", removed) == 0  # once only
    assert store.pruned("shop", "db", "data", ["dddd4444" + "0" * 56]) == 0  # not ours
    rows = {r.snapshot_id: r for r in store.of_fleet("shop")}
    assert rows[old.snapshot_id].pruned_at and not rows[new.snapshot_id].pruned_at
    assert not rows[other.snapshot_id].pruned_at  # another volume's rows are left alone
    now = datetime.now(UTC)
    assert not rows[old.snapshot_id].recent(now, 3600)  # proven, but its snapshot is gone
    assert store.latest("shop")["shop-db-data"].snapshot_id == new.snapshot_id
    assert volume_backups(store.of_fleet("shop"))["shop-db-data"].verified is None
