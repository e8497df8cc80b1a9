"""Ancestry and revocation: what the state keeps of each image's base and packages, what
``corral images`` says of a fleet's bases, and that a revoked image (or one on a revoked
base) is never deployed or rolled back to, through the real planner, orchestrator and
SQLite state on the fake engine."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from corral import app
from corral.build import lineage
from corral.cli.main import main
from corral.engines.base import Mount
from corral.engines.fake import FakeEngine
from corral.errors import RevokedError, StateError, UsageError
from corral.spec import load_spec
from corral.state import BaseRecord, ImageRecord, State
from corral.state import db as state_db

SKIP = "ancestry unit test"
SPEC = """\
fleet: anc
roles:
  web:
    base: {image: localhost/base:1}
    run: {command: [web], user: app, env: {MODE: "%s"}}
  worker:
    base: {image: localhost/base:1}
    run: {command: [worker], user: app}
"""


class Engine(FakeEngine):
    """A fake whose images hold Debian packages (what a bake's inventory reads)."""

    packages = "base-files=12.4\nopenssl=3.0.11-1~deb12u1\n"

    def run_once(
        self, image: str, command: Sequence[str], timeout: float = 120, mounts: Sequence[Mount] = ()
    ) -> str:
        return self.packages

    def refresh_base(self, tmp: Path, created: str) -> str:
        """A new image under the base's tag (the old one keeps only its id), as a base
        refresh leaves it; returns the new id."""
        self.untag_image("localhost/base:1")
        new = self.import_rootfs(tmp / "rootfs.tar", "localhost/base:1", {})
        self.images[new.id] = dataclasses.replace(new, created=created)
        return new.id


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = Engine()
    base = engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/base:1", {})
    engine.images[base.id] = dataclasses.replace(base, created="2026-11-01T10:00:00.5Z")
    return engine


@pytest.fixture
def spec(tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC % "a")
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    return path


def _state(spec: Path) -> State:
    return State.open(load_spec(spec).state_path)


def _cli(spec: Path, *argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), *argv])
    code = exited.value.code
    assert isinstance(code, int)
    return code


# -- the state ---------------------------------------------------------------------------


def _image(number: int, base_id: str | None, role: str = "web") -> ImageRecord:
    return ImageRecord(
        fleet="f",
        role=role,
        number=number,
        content_hash=f"{number:02d}" + "a" * 62,
        version=f"{number}-{number:02d}aaaaaaaaaa",
        tag=f"localhost/corral/f/{role}:{number}",
        image_id=f"img{role}{number}",
        digest=f"sha256:{role}{number}",
        built_at="2026-12-01T00:00:00Z",
        git_commit=None,
        git_dirty=False,
        base_id=base_id,
    )


def _base(image_id: str, created: str) -> BaseRecord:
    return BaseRecord(
        "f", image_id, "sha256:" + image_id, "debian:bookworm:apt:x", "b:1", created, "deb"
    )


def _bake(state: State, image: ImageRecord, base: BaseRecord, packages: dict[str, str]) -> None:
    build = state.start_build(image.fleet, image.role, image.content_hash)
    assert build.number == image.number
    state.finish_build(build.id, image, base=base, packages=packages)


def test_the_state_keeps_each_images_base_and_packages(state_location: Path | str) -> None:
    with State.open(state_location) as state:
        old, new = _base("b1", "2026-11-01T00:00:00Z"), _base("b2", "2026-12-01T00:00:00Z")
        _bake(state, _image(1, "b1"), old, {"openssl": "3.0.11-1", "zlib1g": "1:1.2.13"})
        _bake(state, _image(2, "b2"), new, {"openssl": "3.0.15-1"})
        _bake(state, _image(1, "b1", role="api"), old, {"curl": "7.88"})

        assert state.latest_image("f", "web") == _image(2, "b2")  # base_id read back
        assert [b.image_id for b in state.stores.ancestry.bases("f")] == ["b1", "b2"]
        assert state.stores.ancestry.base("f", "b1") == dataclasses.replace(
            old,
            recorded_at=state.stores.ancestry.base("f", "b1").recorded_at,  # type: ignore[union-attr]
        )
        assert state.stores.ancestry.packages("f", "web", 1) == {
            "openssl": "3.0.11-1",
            "zlib1g": "1:1.2.13",
        }
        carrying = state.stores.ancestry.carrying("f", "openssl")
        assert [(i.version, v) for i, v in carrying] == [
            ("1-01aaaaaaaaaa", "3.0.11-1"),
            ("2-02aaaaaaaaaa", "3.0.15-1"),
        ]
        on_old = state.stores.ancestry.descendants("f", ["b1"])
        assert [(i.role, i.number) for i in on_old] == [("api", 1), ("web", 1)]
        # a base is recorded once: a refresh recorded before a build is not written twice
        again = state.stores.ancestry.record_base(dataclasses.replace(old, ref="other"))
        assert again.ref == "b:1"


def test_an_image_not_on_the_base_it_names_is_refused(state_location: Path | str) -> None:
    with State.open(state_location) as state:
        build = state.start_build("f", "web", _image(1, "b1").content_hash)
        with pytest.raises(ValueError, match="not built on base"):
            state.finish_build(build.id, _image(1, "b1"), base=_base("b9", "2026-11-01T00:00:00Z"))
        assert state.images("f") == []  # the whole transaction went back


def test_revocations_are_append_only_and_an_undo_is_a_row_of_its_own(
    state_location: Path | str,
) -> None:
    with State.open(state_location) as state:
        store = state.stores.revocations
        store.add("f", "image", "img1", "revoke", "CVE-2026-1", user="alice")
        store.add("f", "base", "b1", "revoke", "openssl 3.0.11", user="bob")
        store.add("f", "image", "img1", "undo", "false alarm", user="alice")
        standing = store.standing("f")
        assert set(standing.images) == set() and set(standing.bases) == {"b1"}
        assert standing.of("img7", "b1") == standing.bases["b1"]  # through its base
        assert (
            standing.bases["b1"].user == "bob" and standing.bases["b1"].reason == "openssl 3.0.11"
        )
        assert [r.action for r in store.history("f")] == ["revoke", "revoke", "undo"]
        assert store.standing("other").bases == {}
        with pytest.raises(ValueError, match="reason"):
            store.add("f", "image", "img1", "revoke", "  ")
        for sql in ("UPDATE revocations SET reason = 'x'", "DELETE FROM revocations"):
            with pytest.raises(Exception, match="append-only"):
                _raw(state, sql)
            if state.dialect == "postgresql":
                state.conn.rollback()
        assert len(store.history("f")) == 3


def _raw(state: State, sql: str) -> None:
    """Run ``sql`` through the driver itself, past corral's own rules."""
    if state.dialect == "sqlite":
        state.conn.execute(sql)
    else:
        with state.conn.cursor() as cur:
            cur.execute(sql)


def test_two_migrations_of_one_number_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "corral" / "state" / "migrations"
    folder.mkdir(parents=True)
    for name in ("0001_init.sql", "0002_a.sql", "0002_b.sql"):
        (folder / name).write_text("CREATE TABLE t (x TEXT);\n")
    monkeypatch.setattr(state_db.resources, "files", lambda _: tmp_path / "corral" / "state")
    with pytest.raises(StateError, match="not numbered"):
        state_db._read_migrations.__wrapped__()


# -- bakes, corral images ----------------------------------------------------------------


def test_a_bake_records_the_base_and_the_packages_read_from_the_image(
    spec: Path, engine: Engine
) -> None:
    app.build(spec, engine=engine)
    with _state(spec) as state:
        image = state.latest_image("anc", "web")
        assert image is not None and image.base_id is not None
        base = state.stores.ancestry.base("anc", image.base_id)
        assert base is not None and base.image_id == engine.inspect_image("localhost/base:1").id  # type: ignore[union-attr]
        assert (base.line, base.ref, base.source) == (
            "image:localhost/base:1",
            "localhost/base:1",
            "localhost/base:1",
        )
        assert base.created_at == "2026-11-01T10:00:00Z"  # the engine's creation time
        packages = state.stores.ancestry.packages("anc", "web", image.number)
        assert packages == {"base-files": "12.4", "openssl": "3.0.11-1~deb12u1"}


def test_corral_images_shows_outdated_instances_until_they_run_on_the_new_base(
    spec: Path, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    before = app.images_report(spec)
    assert {i.image.freshness.status for i in before.instances if i.image} == {"up to date"}
    assert len(before.instances) == 2

    engine.refresh_base(tmp_path, "2026-12-01T10:00:00Z")  # seen before anything is built
    report = app.images_report(spec)
    assert len(report.outdated) == 2
    line = report.instances[0].to_dict()
    assert line["base_status"] == "outdated" and line["base_age_s"] > 86400 * 20
    assert line["newest_base"]["created_at"] == "2026-12-01T10:00:00Z"

    assert _cli(spec, "images", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [i["base_status"] for i in data["instances"]] == ["outdated", "outdated"]
    assert {"tag", "version", "labels", "base_status", "revoked"} <= set(data["images"][0])

    app.deploy(spec, engine=engine, skip_tests=SKIP)  # rebuilt on the new base, replaced
    after = app.images_report(spec)
    assert after.outdated == () and len(after.instances) == 2
    assert _cli(spec, "images") == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "outdated" in out  # the old images are still listed


# -- revocation --------------------------------------------------------------------------


def test_a_revoked_image_is_neither_deployed_nor_rolled_back_to(
    spec: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    first = app.deploy(spec, engine=engine, skip_tests=SKIP)
    with _state(spec) as state:
        old_web = state.latest_image("anc", "web")
    assert old_web is not None
    spec.write_text(SPEC % "b")  # a run setting: the same image, a new release
    app.deploy(spec, engine=engine, skip_tests=SKIP)

    assert _cli(spec, "revoke", old_web.tag, "--reason", "CVE-2026-0001 in the app", "--json") == 0
    revoked = json.loads(capsys.readouterr().out)
    assert revoked["kind"] == "image" and revoked["changed"] is True
    assert revoked["revocation"]["reason"] == "CVE-2026-0001 in the app"
    assert revoked["releases"] == [1, 2]  # both ran it (r2 changed a run setting only)

    with pytest.raises(RevokedError, match="CVE-2026-0001 in the app") as refused:
        app.rollback(spec, to=first.release, engine=engine, skip_tests=SKIP)
    assert refused.value.roles == ["web"] and refused.value.revoked[0]["kind"] == "image"
    assert _cli(spec, "rollback", "--to", str(first.release), "--skip-tests", "--reason", "x") == 5
    assert "CVE-2026-0001" in capsys.readouterr().err
    with _state(spec) as state:
        assert [r.number for r in state.releases("anc")] == [1, 2]  # no release was started
        actions = [(e.action, e.outcome) for e in state.audit_log("anc")]
    assert ("revoke", "ok") in actions and ("rollback", "refused") in actions

    # a deploy never reuses the revoked image: the same inputs are baked anew
    result = app.deploy(spec, engine=engine, skip_tests=SKIP)
    with _state(spec) as state:
        new_web = state.latest_image("anc", "web")
    assert new_web is not None and new_web.image_id != old_web.image_id
    assert result.status == "active"


def test_a_revoked_base_refuses_every_image_built_on_it_until_undone(
    spec: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    base_id = engine.inspect_image("localhost/base:1").id  # type: ignore[union-attr]
    assert _cli(spec, "revoke", base_id[:12], "--reason", "openssl CVE-2026-0002") == 0
    assert "2 image(s) are built on it" in capsys.readouterr().out
    with _state(spec) as state:
        assert {i.role for i in lineage.revoked_descendants(state, "anc")} == {"web", "worker"}

    spec.write_text(SPEC % "c")
    with pytest.raises(RevokedError, match="built on a revoked base") as refused:
        app.deploy(spec, ["web"], engine=engine, skip_tests=SKIP)
    assert refused.value.roles == ["web"]  # worker is kept as it runs, not deployed
    report = app.images_report(spec)
    assert all(i.image and i.image.revoked for i in report.instances)

    assert _cli(spec, "revoke", base_id, "--undo", "--reason", "patched upstream") == 0
    assert app.deploy(spec, ["web"], engine=engine, skip_tests=SKIP).status == "active"
    with _state(spec) as state:
        audited = [e for e in state.audit_log("anc") if e.action.startswith("revoke")]
    assert [(e.action, e.details["reason"]) for e in audited] == [
        ("revoke", "openssl CVE-2026-0002"),
        ("revoke-undo", "patched upstream"),
    ]


def test_revoke_names_what_it_cannot_find(spec: Path, engine: Engine) -> None:
    app.build(spec, engine=engine)
    with pytest.raises(UsageError, match="no image or base of fleet anc is called 'nope'"):
        app.revoke(spec, "nope", "because")
    with pytest.raises(UsageError, match="is not revoked"):
        app.revoke(spec, "localhost/base:1", "because", undo=True)
    assert _cli(spec, "revoke", "nope", "--reason", "x") == 2


# -- who carries a package, CycloneDX ----------------------------------------------------


def test_sbom_package_lists_images_and_running_instances_with_the_version(
    spec: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    assert _cli(spec, "sbom", "--package", "openssl", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {i["role"] for i in data["images"]} == {"web", "worker"}
    assert {i["package_version"] for i in data["instances"]} == {"3.0.11-1~deb12u1"}
    assert sorted(i["name"] for i in data["instances"]) == ["anc-web-r1-1", "anc-worker-r1-1"]
    assert _cli(spec, "sbom", "--package", "nginx", "--json") == 0
    assert json.loads(capsys.readouterr().out)["images"] == []
    assert _cli(spec, "sbom", "--package", "Bad Name") == 2


def test_a_cyclonedx_sbom_validates_and_names_each_package_by_purl(
    spec: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    validator = JsonStrictValidator(SchemaVersion.V1_6)

    assert _cli(spec, "sbom", "web", "--format", "cyclonedx") == 0
    text = capsys.readouterr().out
    assert validator.validate_str(text) is None
    bom = json.loads(text)
    assert bom["bomFormat"] == "CycloneDX" and bom["metadata"]["component"]["type"] == "container"
    purls = {c["purl"] for c in bom["components"]}
    assert purls == {"pkg:deb/debian/base-files@12.4", "pkg:deb/debian/openssl@3.0.11-1~deb12u1"}

    assert _cli(spec, "sbom", "--format", "cyclonedx") == 0  # the active release's images
    text = capsys.readouterr().out
    assert validator.validate_str(text) is None
    fleet = json.loads(text)
    assert sorted(c["name"] for c in fleet["components"]) == ["anc/web", "anc/worker"]
    assert all(len(c["components"]) == 2 for c in fleet["components"])
