"""The stages of a deploy, each in one place: resolve_desired (no baking), observe_fleet,
read-only commands, ``corral gc``, and the orchestrator's hooks that see the plan."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest

from corral import app
from corral.cli.main import main
from corral.deploy import orchestrate, service
from corral.deploy.context import Context
from corral.deploy.desired import Desired
from corral.deploy.observe import instance_labels
from corral.deploy.orchestrate import Planned
from corral.deploy.outcome import ReleaseFailed
from corral.deploy.plan import Observed
from corral.deploy.resolve import resolve_desired
from corral.deploy.scope import Scope
from corral.edge.container import Edge
from corral.engines.base import ContainerInfo, ContainerSpec
from corral.engines.fake import FakeEngine
from corral.errors import DeployError, GateError, LockedError, UsageError
from corral.spec import load_spec
from corral.state import State
from tests.unit.builders import role_release

SKIP = "stages unit test"
SPEC = """\
fleet: stg
roles:
  db:
    base: {image: localhost/base:1}
    run: {command: [db], user: app, env: {MODE: "%s"}}
    volumes: {data: /var/lib/db}
  web:
    base: {image: localhost/base:1}
    run: {command: [web], user: app, env: {MODE: "%s"}}
    after: [db]
"""


class Engine(FakeEngine):
    """A FakeEngine that records the calls that would change something beyond ``calls``,
    and holds one stored secret whose container never came to be."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, str]] = []
        self.stored = ["stg-web-r2-3--TOKEN"]

    def collect_leftovers(self, prefix: str) -> list[str]:
        self.changes.append(("collect_leftovers", prefix))
        gone = [n for n in self.stored if n.startswith(prefix)]
        gone = [n for n in gone if self.inspect(n.rsplit("--", 1)[0]) is None]
        self.stored = [n for n in self.stored if n not in gone]
        return gone

    def tag_image(self, ref: str, tag: str) -> None:
        self.changes.append(("tag_image", tag))
        super().tag_image(ref, tag)

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.changes.append(("ensure_volume", name))
        super().ensure_volume(name, labels)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = Engine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/base:1", {})
    return engine


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC % ("a", "a"))
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
    spec.write_text(SPEC % ("a", "b"))
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


# -- read-only commands and corral gc ----------------------------------------------------


def _start_release_and_die(path: str, roles: dict[str, object]) -> None:
    with State.open(Path(path)) as state:
        state.start_release("stg", "deploy", roles)


def _killed_deploy(spec: Path, engine: Engine) -> None:
    """Release 1 live, then what a deploy killed with -9 leaves: release 2 still
    deploying (its process gone), one of its instances stopped and one running."""
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:
        roles = dict(state.releases("stg")[-1].roles)
        fleet_id = state.fleet_id("stg")
    child = multiprocessing.get_context("spawn").Process(
        target=_start_release_and_die, args=(str(loaded.state_path), roles)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    scope = Scope("stg", fleet_id=fleet_id)  # the killed deploy's, marked as it marks them
    for index in (1, 2):
        labels = instance_labels(scope, "web", 2, index, "new-config")
        engine.start(ContainerSpec(name=f"stg-web-r2-{index}", image="img", labels=labels))
    engine.stop("stg-web-r2-1")


class Snapshot(NamedTuple):
    releases: list[tuple[int, str]]
    audit: list[str]  # the actions audited
    containers: dict[str, str]
    calls: list[tuple[str, str]]  # the fake's own record of starts, stops, removals
    changes: list[tuple[str, str]]  # our record of the other changing calls


def _snapshot(spec: Path, engine: Engine) -> Snapshot:
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:
        releases = [(r.number, r.status) for r in state.releases("stg")]
        audit = [entry.action for entry in state.audit_log("stg", limit=1000)]
    containers = {name: c.state for name, c in engine.containers.items()}
    return Snapshot(releases, audit, containers, list(engine.calls), list(engine.changes))


def test_status_plan_and_history_change_nothing_after_a_killed_deploy(
    spec: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed_deploy(spec, engine)
    before = _snapshot(spec, engine)

    def no_lock(*args: object, **kwargs: object) -> None:
        pytest.fail("a read-only command took a lock")

    monkeypatch.setattr(State, "lock", no_lock)
    seen = app.status(spec, engine=engine)
    app.plan(spec, engine=engine)
    app.history(spec, engine=engine)

    assert _snapshot(spec, engine) == before  # no release marked, nothing removed or stored
    assert seen.unfinished_releases == (2,)  # reported, not aborted
    assert seen.leftovers == ("stg-web-r2-1",)
    assert seen.unfinished == ("stg-web-r2-2",)
    assert seen.cleaned == ()
    # Stopped by no deploy: down, not the "standby" a new-user trial saw for a dead one.
    [stopped] = [i for r in seen.roles for i in r.instances if i.name == "stg-web-r2-1"]
    assert stopped.state == "exited" and stopped.health == "down"


def test_gc_removes_what_a_killed_deploy_left_and_never_a_volume(
    spec: Path, engine: Engine
) -> None:
    _killed_deploy(spec, engine)
    volumes = engine.list_volumes({})
    assert volumes == ["stg-db-data"]

    done = app.gc(spec, engine=engine)

    assert done.releases == (2,)
    assert done.instances == ("stg-web-r2-1",)  # stopped: nothing serves from it
    assert done.secrets == ("stg-web-r2-3--TOKEN",)
    assert done.failed == () and done.removed == 2
    assert "stg-web-r2-2" in engine.containers  # running: only a deploy replaces it, safely
    assert engine.list_volumes({}) == volumes
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:
        assert state.get_release("stg", 2).status == "aborted"  # type: ignore[union-attr]
        [entry] = [e for e in state.audit_log("stg") if e.action == "gc"]
        assert entry.outcome == "ok"
    again = app.gc(spec, engine=engine)
    assert again.releases == () and again.removed == 0
    after = app.status(spec, engine=engine)
    assert after.leftovers == () and after.unfinished_releases == ()


def test_gc_refuses_while_a_deploy_holds_the_lock(spec: Path, engine: Engine) -> None:
    loaded = load_spec(spec)
    with (
        State.open(loaded.state_path) as state,
        state.lock("deploy", purpose="deploy all"),
        pytest.raises(LockedError),
    ):
        app.gc(spec, engine=engine)


def test_corral_gc_json_and_exit_code(
    spec: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _killed_deploy(spec, engine)
    monkeypatch.setattr("corral.app.get_engine", lambda: engine)
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "gc", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert exited.value.code == 0
    assert data["releases"] == [2] and data["instances"] == ["stg-web-r2-1"]
    assert data["removed"] == 2 and data["failed"] == []
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "gc"])
    assert exited.value.code == 0
    assert "nothing to clean up" in capsys.readouterr().out


# -- the orchestrator's hooks --------------------------------------------------------------


class Recorder:
    """A hook that keeps what it was told, and what ran when it was told."""

    def __init__(self, engine: FakeEngine, refuse: bool = False) -> None:
        self.engine, self.refuse = engine, refuse
        self.seen: list[tuple[Planned, list[str]]] = []

    def __call__(self, planned: Planned) -> None:
        self.seen.append((planned, sorted(self.engine.containers)))
        if self.refuse:
            raise GateError("no backup of db: refusing to replace it")


def test_a_hook_sees_the_plan_before_apply_and_which_volumes_are_replaced(
    spec: Path, engine: Engine
) -> None:
    first = Recorder(engine)
    app.deploy(spec, engine=engine, skip_tests=SKIP, hooks=[first])
    [(planned, running)] = first.seen
    assert running == [] and planned.replaced_volumes() == {}  # nothing to replace yet

    spec.write_text(SPEC % ("b", "a"))  # db's configuration changes: its instance goes
    hook = Recorder(engine)
    result = app.deploy(spec, engine=engine, skip_tests=SKIP, hooks=[hook])
    [(planned, running)] = hook.seen
    assert planned.kind == "deploy" and planned.plan == result.plan
    assert planned.replaced_volumes() == {"db": ("stg-db-data",)}
    assert running == ["stg-db-r1-1", "stg-web-r1-1"]  # told before anything changed
    assert "stg-db-r2-1" in engine.containers


def test_a_hook_that_refuses_stops_the_deploy_before_anything_changes(
    spec: Path, engine: Engine
) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(SPEC % ("b", "a"))
    before = _snapshot(spec, engine)
    with pytest.raises(GateError, match="no backup"):
        app.deploy(spec, engine=engine, skip_tests=SKIP, hooks=[Recorder(engine, refuse=True)])
    after = _snapshot(spec, engine)
    assert after.releases == before.releases  # no release recorded
    assert after.containers == before.containers and after.calls == before.calls
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:
        last = state.audit_log("stg")[-1]
    assert (last.action, last.outcome) == ("deploy", "refused")


def test_a_rollback_runs_the_hooks_with_its_plan(spec: Path, engine: Engine) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(SPEC % ("b", "a"))
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    hook = Recorder(engine)
    result = app.rollback(spec, engine=engine, skip_tests=SKIP, hooks=[hook])
    [(planned, _)] = hook.seen
    assert result.status == "active" and planned.kind == "rollback"
    assert planned.replaced_volumes() == {"db": ("stg-db-data",)}


def test_the_undo_after_a_failure_runs_no_hook(ctx: Context, spec: Path, engine: Engine) -> None:
    app.deploy(spec, engine=engine, skip_tests=SKIP)
    spec.write_text(SPEC % ("b", "a"))
    ctx.spec = load_spec(spec)

    def smoke_fails(desired: Desired) -> None:
        raise DeployError("the smoke test failed")

    hook = Recorder(engine)
    with pytest.raises(ReleaseFailed):
        orchestrate.deploy(ctx, checks=orchestrate.Checks(after=smoke_fails), hooks=[hook])
    assert len(hook.seen) == 1  # the deploy's, before apply; the undo went back without one
    assert ctx.state.get_release("stg", 2).status == "rolled-back"  # type: ignore[union-attr]
    assert ctx.state.active_release("stg").number == 1  # type: ignore[union-attr]


def test_plan_judges_the_edge_with_every_public_role_built_or_not(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unbuilt role was left out of the edge's judgement, as if it had gone: a trial was
    # told "public ports changed" after a code change; and a new unbuilt public role,
    # which needs a new pod, showed no edge line at all. Both are judged as a deploy will.
    path = tmp_path / "public.yaml"
    role = "    base: {image: localhost/base:1}\n    run: {command: [web], user: app, port: 8000}\n"
    path.write_text(
        f"fleet: pub\nroles:\n  web:\n{role}    public: 18080\n  admin:\n{role}    public: 18081\n"
    )
    with State.open(load_spec(path).state_path) as state:
        web = role_release("web", public=18080, run={"port": 8000})
        release = state.start_release("pub", "deploy", {"web": web.to_record()})
        state.finish_release(release.id, "active")
    asked: dict[str, object] = {}

    def observed(*args: object, **kwargs: object) -> Observed:
        asked.update(kwargs)
        return Observed((), (), {1}, (), datetime.now(UTC), edge_servers={"web": ()})

    running = ContainerInfo("id", "pub-edge", "img-edge", {}, "running", {}, "")
    monkeypatch.setattr(service, "observe_fleet", observed)
    monkeypatch.setattr(Edge, "container", lambda self, listing=None: running)
    planned = app.plan(path, engine=engine)
    assert planned.unbuilt == ("web", "admin")  # in the order of the spec
    view = asked["edge_view"]
    assert isinstance(view, dict) and view["web"].public == 18080 and "admin" not in view
    edge = planned.plan.edge
    assert edge.action == "replace" and "new public role admin needs a new pod" in edge.reason
    assert "publishes port 18081, and every public port (18081, 18080)" in edge.reason
