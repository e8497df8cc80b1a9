"""Secrets are scoped to the roles that use them, and a new value replaces the role's
instances: releases keep a keyed hash of each value (never the value), and the plan names
the secret that changed (never its value or hash)."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from corral import app
from corral.cli.main import main
from corral.cli.views import plan_data, plan_lines
from corral.deploy.instances import container_spec, resolve_secrets
from corral.deploy.scope import Scope
from corral.deploy.secrets import KEY_BYTES, SecretKey, key_path, load_key
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.fake import FakeEngine
from corral.errors import GateError, StateError
from corral.scrub import Scrubber
from corral.spec import load_spec
from tests.unit.builders import role_release

SKIP = "secret rotation unit test"
OLD = "old-db-password-1"
NEW = "new-db-password-2"

SPEC = """\
fleet: rot
roles:
  db:
    base: {image: localhost/base:1}
    run: {command: [db], user: app, secrets: [DB_PASSWORD]}
  static:
    base: {image: localhost/base:1}
    run: {command: [static], user: app, env: {MODE: "%s"}}
"""


class SecretsEngine(FakeEngine):
    """A FakeEngine that remembers the secret values each container was started with."""

    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, dict[str, str]] = {}

    def start(self, spec: ContainerSpec) -> ContainerInfo:
        self.given[spec.name] = dict(spec.secrets)
        return super().start(spec)


@pytest.fixture
def engine(tmp_path: Path) -> SecretsEngine:
    engine = SecretsEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/base:1", {})
    return engine


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC % "a")
    return path


def _running(engine: FakeEngine, role: str) -> list[str]:
    return sorted(
        name
        for name, c in engine.containers.items()
        if c.labels.get("io.corral.role") == role and c.state == "running"
    )


def _deploy(spec: Path, engine: FakeEngine, *roles: str) -> app.DeployResult:
    return app.deploy(spec, roles, engine=engine, skip_tests=SKIP)


# -- the keyed hash -------------------------------------------------------------------------


def test_the_keyed_hash_changes_with_the_value_the_name_and_the_key() -> None:
    key, other = SecretKey(b"k" * KEY_BYTES), SecretKey(b"o" * KEY_BYTES)
    digest = key.digest("DB_PASSWORD", OLD)
    assert digest == key.digest("DB_PASSWORD", OLD)  # stable: unchanged values keep instances
    assert digest != key.digest("DB_PASSWORD", NEW)
    assert digest != key.digest("OTHER", OLD)  # the same value under two names: two hashes
    assert digest != other.digest("DB_PASSWORD", OLD)  # without the key, no way to check
    assert OLD not in digest and digest != hashlib.sha256(OLD.encode()).hexdigest()
    assert "k" * 8 not in repr(key) and len(digest) == 64


def test_the_key_is_made_once_private_and_outside_the_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_key(state, "rot")
    path = key_path(state, "rot")
    assert path.parent == state and path.name == "rot.secret-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(state, "rot") == first  # the same key next time
    assert load_key(state, "other") != first  # one per fleet
    path.write_text("not a key\n")
    with pytest.raises(StateError, match="damaged"):
        load_key(state, "rot")


def test_a_config_hash_without_secrets_is_the_one_older_corrals_labelled() -> None:
    rr = role_release("static")
    assert rr.with_secret_hashes({}).config_hash == rr.config_hash
    db = role_release("db", run={"secrets": ["DB_PASSWORD"]})
    key = SecretKey(b"k" * KEY_BYTES)
    old = db.with_secret_hashes(key.hashes(["DB_PASSWORD"], {"DB_PASSWORD": OLD}))
    new = db.with_secret_hashes(key.hashes(["DB_PASSWORD"], {"DB_PASSWORD": NEW}))
    assert len({db.config_hash, old.config_hash, new.config_hash}) == 3
    assert old.changes_to(new) == ["secret DB_PASSWORD changed"]
    assert db.changes_to(old) == ["secret DB_PASSWORD is now tracked"]


def test_an_instance_label_says_which_values_it_got() -> None:
    """An undo starts the previous release's instances with today's value: the label must
    carry the hash of what the instance really got, so the next plan compares the truth."""
    key = SecretKey(b"k" * KEY_BYTES)
    db = role_release("db", run={"secrets": ["DB_PASSWORD"]})
    recorded = db.with_secret_hashes(key.hashes(["DB_PASSWORD"], {"DB_PASSWORD": OLD}))
    today = {"DB_PASSWORD": NEW}
    spec = container_spec(Scope("rot"), recorded, 1, 1, today, key)
    label = spec.labels["io.corral.config-hash"]
    assert label == db.with_secret_hashes(key.hashes(["DB_PASSWORD"], today)).config_hash
    assert label != recorded.config_hash
    assert key.digest("DB_PASSWORD", NEW) not in json.dumps(spec.labels)
    untracked = container_spec(Scope("rot"), db, 1, 1, today, key)  # an older release
    assert untracked.labels["io.corral.config-hash"] == db.config_hash


# -- scoped to the roles deployed -------------------------------------------------------------


def test_only_the_named_roles_secrets_are_needed() -> None:
    desired = {
        "db": role_release("db", run={"secrets": ["DB_PASSWORD"]}),
        "static": role_release("static"),
    }
    assert resolve_secrets(desired, ["static"], environ={}) == {}
    with pytest.raises(GateError, match="DB_PASSWORD"):
        resolve_secrets(desired, ["db"], environ={})
    with pytest.raises(GateError, match="DB_PASSWORD"):
        resolve_secrets(desired, environ={})  # the whole fleet: every role's


def test_deploying_a_role_without_secrets_needs_no_other_roles_value(
    spec: Path, engine: SecretsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    with pytest.raises(GateError, match="DB_PASSWORD"):
        _deploy(spec, engine)  # the whole fleet needs db's
    assert _deploy(spec, engine, "static").status == "active"
    key_file = key_path(load_spec(spec).state_location.files, "rot")
    assert not key_file.exists()  # no secret hashed: no key made
    monkeypatch.setenv("DB_PASSWORD", OLD)
    assert _deploy(spec, engine).status == "active"
    assert key_file.exists()
    monkeypatch.delenv("DB_PASSWORD")
    spec.write_text(SPEC % "b")  # static changes; db, deployed before, is kept as it is
    result = _deploy(spec, engine, "static")
    assert result.status == "active" and result.plan.role("db").keep
    assert app.plan(spec, ["static"], engine=engine).plan.has_changes is False
    with pytest.raises(GateError, match=r"DB_PASSWORD.*before planning"):
        app.plan(spec, ["db"], engine=engine)


def test_the_scrubber_knows_the_values_that_are_set_and_needs_no_others(
    spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    assert app.scrubber(load_spec(spec)) == Scrubber()
    monkeypatch.setenv("DB_PASSWORD", OLD)
    assert app.scrubber(load_spec(spec)).values(f"pw {OLD}") == "pw ***"


# -- rotation ---------------------------------------------------------------------------------


def test_a_new_value_replaces_the_roles_instances_and_plan_says_so(
    spec: Path, engine: SecretsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", OLD)
    _deploy(spec, engine)
    [first] = _running(engine, "db")
    static = _running(engine, "static")
    assert app.plan(spec, engine=engine).has_changes is False

    monkeypatch.setenv("DB_PASSWORD", NEW)
    result = app.plan(spec, engine=engine)
    db = result.plan.role("db")
    assert result.has_changes and db.start == 1
    assert [(c.instance, c.reason) for c in db.stop] == [(first, "secret DB_PASSWORD changed")]
    assert not result.plan.role("static").changed  # only the role that uses it
    key = load_key(load_spec(spec).state_location.files, "rot")
    shown = json.dumps(plan_data(result)) + "\n".join(plan_lines(result.plan))
    assert "replace rot-db-r1-1: secret DB_PASSWORD changed" in shown
    for secret in (OLD, NEW, key.digest("DB_PASSWORD", NEW), key.digest("DB_PASSWORD", OLD)):
        assert secret not in shown

    deployed = _deploy(spec, engine)
    assert deployed.status == "active"
    [second] = _running(engine, "db")
    assert second != first and engine.given[second] == {"DB_PASSWORD": NEW}
    assert _running(engine, "static") == static
    assert app.plan(spec, engine=engine).has_changes is False
    [entry] = [h for h in app.history(spec) if h.release == deployed.release]
    assert entry.changes == ("db: secret DB_PASSWORD changed",)


def test_state_keeps_the_keyed_hash_never_the_value(
    spec: Path, engine: SecretsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", OLD)
    _deploy(spec, engine)
    state = load_spec(spec).state_path
    key = load_key(state.parent, "rot")
    stored = b"".join(p.read_bytes() for p in state.parent.glob(state.name + "*"))
    assert OLD.encode() not in stored
    assert key.digest("DB_PASSWORD", OLD).encode() in stored  # what tells a rotation
    assert key.key.hex().encode() not in stored  # the key is not in the database
    labels = json.dumps([c.labels for c in engine.containers.values()])
    assert OLD not in labels and key.digest("DB_PASSWORD", OLD) not in labels


def test_a_rollback_uses_todays_values_and_says_so(
    spec: Path, engine: SecretsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", OLD)
    _deploy(spec, engine)
    monkeypatch.setenv("DB_PASSWORD", NEW)
    _deploy(spec, engine)
    [running] = _running(engine, "db")
    back = app.rollback(spec, engine=engine, skip_tests=SKIP)
    assert back.notes == (
        "db: secret DB_PASSWORD changed since release r1: db's instances get today's value "
        "(old values are not kept)",
    )
    assert back.status == "unchanged" and _running(engine, "db") == [running]
    assert engine.given[running] == {"DB_PASSWORD": NEW}


def test_a_partial_deploy_never_restarts_another_role_with_a_new_value(
    spec: Path, engine: SecretsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", OLD)
    _deploy(spec, engine)
    [db] = _running(engine, "db")
    engine.remove(db)  # it died: a deploy of static must start one again
    spec.write_text(SPEC % "b")
    monkeypatch.setenv("DB_PASSWORD", NEW)
    with pytest.raises(GateError, match="DB_PASSWORD of role db changed"):
        _deploy(spec, engine, "static")
    monkeypatch.delenv("DB_PASSWORD")
    with pytest.raises(GateError, match="DB_PASSWORD"):
        _deploy(spec, engine, "static")
    monkeypatch.setenv("DB_PASSWORD", OLD)
    assert _deploy(spec, engine, "static").status == "active"
    [again] = _running(engine, "db")
    assert engine.given[again] == {"DB_PASSWORD": OLD}


def test_rollback_says_in_its_output_that_it_uses_todays_value(
    spec: Path,
    engine: SecretsEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    monkeypatch.setenv("DB_PASSWORD", OLD)
    _deploy(spec, engine)
    monkeypatch.setenv("DB_PASSWORD", NEW)
    _deploy(spec, engine)
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "rollback", "--skip-tests", "--reason", SKIP])
    out, err = capsys.readouterr()
    assert exited.value.code in (0, None)
    assert "note: db: secret DB_PASSWORD changed since release r1" in out
    assert OLD not in out + err and NEW not in out + err


def test_a_watcher_holding_the_value_from_before_a_rotation_starts_nothing(
    spec: Path, engine: SecretsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in a trial: a watcher started before the rotation restarted the database with
    # the old password, burned it as drifted, and again, every few seconds.
    monkeypatch.setenv("DB_PASSWORD", OLD)
    _deploy(spec, engine)
    monkeypatch.setenv("DB_PASSWORD", NEW)
    _deploy(spec, engine)  # the rotation: db replaced with the new value
    [db] = _running(engine, "db")
    engine.remove(db)  # it died
    monkeypatch.setenv("DB_PASSWORD", OLD)  # what the old watcher's environment holds
    with pytest.raises(GateError, match="restart corral watch with the value of the last"):
        app.reconcile(spec, engine=engine)
    assert _running(engine, "db") == []
    assert engine.given.get(db) == {"DB_PASSWORD": NEW}
    failed = [e for e in app.audit(spec) if e.action == "reconcile" and e.outcome == "failed"]
    assert failed and "DB_PASSWORD" in str(failed[-1].details["error"])
    assert OLD not in json.dumps([e.details for e in app.audit(spec)])
    monkeypatch.setenv("DB_PASSWORD", NEW)  # restarted with the value of the last deploy
    assert app.reconcile(spec, engine=engine).status == "converged"
    [again] = _running(engine, "db")
    assert engine.given[again] == {"DB_PASSWORD": NEW}
