"""The stages of a deploy, each in one place: resolve_desired (no baking), observe_fleet,
read-only commands, ``corral gc``, and the orchestrator's hooks that see the plan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import app
from corral.deploy.context import Context
from corral.deploy.resolve import resolve_desired
from corral.engines.fake import FakeEngine
from corral.errors import UsageError
from corral.spec import load_spec
from corral.state import State

SKIP = "stages unit test"
SPEC = """\
fleet: stg
roles:
  db:
    base: {image: localhost/base:1}
    run: {command: [db], user: app}
    volumes: {data: /var/lib/db}
  web:
    base: {image: localhost/base:1}
    run: {command: [web], user: app, env: {MODE: "%s"}}
    after: [db]
"""


@pytest.fixture
def engine(tmp_path: Path) -> FakeEngine:
    engine = FakeEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/base:1", {})
    return engine


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC % "a")
    return path


@pytest.fixture
def ctx(spec: Path, engine: FakeEngine) -> Iterator[Context]:
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:
        yield Context(loaded, engine, state)


# -- resolve_desired ---------------------------------------------------------------------


def test_resolve_desired_bakes_nothing_and_names_the_roles_without_an_image(
    ctx: Context, engine: FakeEngine
) -> None:
    resolved = resolve_desired(ctx)
    assert resolved.desired == {}
    assert resolved.unbuilt == ("db", "web")
    assert engine.builds == []  # nothing was baked to answer

    [db] = app.build(ctx.spec.path, ["db"], engine=engine)
    baked = len(engine.builds)
    resolved = resolve_desired(ctx)
    assert resolved.unbuilt == ("web",)
    assert resolved.desired["db"].image_id == db.image_id
    assert resolved.untouched == ("web",)  # a role without an image is left as it runs
    assert len(engine.builds) == baked


def test_resolve_desired_refuses_a_role_the_spec_does_not_have(ctx: Context) -> None:
    with pytest.raises(UsageError, match="no role called cache"):
        resolve_desired(ctx, ["cache"])


def test_a_partial_deploy_keeps_the_other_roles_as_released(
    ctx: Context, spec: Path, engine: FakeEngine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    released_web = resolve_desired(ctx).desired["web"]
    spec.write_text(SPEC % "b")
    ctx.spec = load_spec(spec)
    app.build(spec, engine=engine)

    kept = resolve_desired(ctx, ["db"], keep_released=True)
    assert set(kept.desired) == {"db", "web"} and kept.untouched == ()
    assert kept.desired["web"] == released_web  # as the active release runs it
    alone = resolve_desired(ctx, ["db"])  # plan: only the roles asked for
    assert set(alone.desired) == {"db"} and alone.untouched == ("web",)


def test_plan_and_the_coverage_report_see_the_same_unbuilt_roles(
    spec: Path, engine: FakeEngine
) -> None:
    app.build(spec, ["db"], engine=engine)
    planned = app.plan(spec, engine=engine)
    assert planned.unbuilt == ("web",)
    rows = {row.role: row for row in app.coverage_report(spec, engine=engine)}
    assert rows["web"].image_version is None and rows["web"].reason == "not built yet"
    assert rows["db"].image_version == planned.plan.role("db").image_version
