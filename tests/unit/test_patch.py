"""The emergency lane's pure parts: the canary's plan, weights and verdict, package diffs,
the stages' clock, which roles a base carries, and the archives' checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral import app
from corral.build import refresh
from corral.build.base import BaseRecipe
from corral.build.refresh import bases_of, check_archives, diff_packages, label_packages
from corral.cli.main import main
from corral.deploy import orchestrate
from corral.deploy.canary import OLD_WEIGHT, Side, canary_weights, compare, side
from corral.deploy.context import Context
from corral.deploy.observe import Instance
from corral.deploy.orchestrate import Canary, DeployResult
from corral.deploy.outcome import ReleaseFailed
from corral.deploy.plan import Observed, Plan, plan_canary, plan_deploy
from corral.deploy.scope import Scope
from corral.deploy.steps import Action
from corral.edge.runtime import ProxyCounters, RuntimeAPI
from corral.engines.base import Mount
from corral.engines.fake import FakeEngine
from corral.engines.values import ImageInfo
from corral.errors import BuildError, DeployError, UsageError
from corral.patch import Clock
from corral.progress import NullProgress
from corral.spec import load_spec
from corral.spec.model import CanaryPolicy, DebianBase
from corral.state import State
from tests.unit.builders import role_release

SCOPE = Scope("shop")


def _fleet(old_image: str = "img-a", replicas: int = 3) -> tuple[Observed, dict]:
    rr_old = role_release("web", "img-a", replicas=replicas, public=8080)
    olds = [
        Instance(
            f"shop-web-r1-{n}", "web", 1, n, old_image, rr_old.config_hash, "running", "10.0.0.1"
        )
        for n in range(1, replicas + 1)
    ]
    observed = Observed(olds, set(), {1}, set(), datetime(2026, 1, 1, tzinfo=UTC))
    desired = {"web": role_release("web", "img-b", replicas=replicas, public=8080)}
    return observed, desired


def test_canary_plan_starts_the_first_new_instances_held_and_stops_nothing() -> None:
    observed, desired = _fleet()
    full = plan_deploy(SCOPE, desired, observed, release=2)
    first = plan_canary(full, {"web": 1})
    rp = first.role("web")
    assert rp.new == (full.role("web").new[0],) and rp.stop == () and rp.cleanup == ()
    starts = [s for s in rp.steps if s.action == Action.START]
    assert [(s.instance, s.hold) for s in starts] == [(rp.new[0], True)]
    assert not any(s.action in (Action.DRAIN, Action.STOP, Action.REMOVE) for s in rp.steps)
    assert first.release == full.release and first.orphans == ()


def test_the_rest_keeps_the_canary_once_its_release_counts_as_good() -> None:
    observed, desired = _fleet()
    rr = desired["web"]
    canary = Instance("shop-web-r2-1", "web", 2, 1, "img-b", rr.config_hash, "running", "10.0.0.9")
    seen = Observed([*observed.instances, canary], set(), {1, 2}, set(), observed.now)
    rest = plan_deploy(SCOPE, desired, seen, release=2).role("web")
    assert rest.keep == ("shop-web-r2-1",)
    assert len(rest.new) == 2 and len(rest.stop) == 3
    assert rest.new[0] == "shop-web-r2-2"  # named on after the canary


def test_a_role_without_new_instances_is_left_alone_by_the_canary() -> None:
    observed, _ = _fleet()
    same = {"web": role_release("web", "img-a", replicas=3, public=8080)}
    first = plan_canary(plan_deploy(SCOPE, same, observed, release=2), {"web": 1})
    assert first.role("web").new == () and not first.has_changes


@pytest.mark.parametrize(
    ("old", "canaries", "traffic", "share"),
    [(3, 1, 20, 0.20), (2, 1, 30, 0.30), (5, 2, 10, 0.10), (1, 1, 50, 0.50)],
)
def test_canary_weights_give_the_canaries_their_share(
    old: int, canaries: int, traffic: int, share: float
) -> None:
    each = canary_weights(old, canaries, traffic)
    assert 1 <= each <= 256
    got = canaries * each / (canaries * each + old * OLD_WEIGHT)
    assert got == pytest.approx(share, abs=0.01)


def test_canary_count_is_at_least_one_and_at_most_the_replicas() -> None:
    assert CanaryPolicy().count(3) == 1
    assert CanaryPolicy(instances="50%").count(3) == 2
    assert CanaryPolicy(instances=0).count(3) == 1
    assert CanaryPolicy(instances=9).count(3) == 3


def _row(name: str, requests: int, errors: int = 0, ms: int = 5) -> ProxyCounters:
    return ProxyCounters("web", name, "server", 0, 0, 0, 0, errors, requests, requests, 0, 0, ms)


def test_side_counts_what_grew_between_two_readings() -> None:
    first = {("web", "a"): _row("a", 10, 1)}
    last = {("web", "a"): _row("a", 30, 3, ms=7), ("web", "b"): _row("b", 5, 0, ms=9)}
    got = side(first, last, "web", ["a", "b"])
    assert (got.requests, got.errors) == (25, 2)
    assert got.latency_ms == pytest.approx((7 * 20 + 9 * 5) / 25)


def _verdict(canary: Side, old: Side, **policy: object):  # type: ignore[no-untyped-def]
    observed, _desired = _fleet()
    rr = role_release("web", "img-b", replicas=3, public=8080, deploy={"canary": policy})
    full = plan_deploy(SCOPE, {"web": rr}, observed, release=2)
    return compare(plan_canary(full, {"web": 1}).role("web"), canary, old, 20)


def test_a_canary_failing_requests_fails_and_says_how_many() -> None:
    verdict = _verdict(Side(40, 40, 3.0), Side(160, 0, 3.0))
    assert not verdict.passed and "error rate 100.0% (40 of 40 requests)" in verdict.why


def test_a_canary_as_good_as_the_old_ones_passes() -> None:
    assert _verdict(Side(40, 0, 3.0), Side(160, 0, 3.0)).passed
    assert _verdict(Side(400, 1, 3.0), Side(1600, 0, 3.0)).passed  # within 1 %


def test_a_slow_canary_fails_on_latency() -> None:
    verdict = _verdict(Side(40, 0, 400.0), Side(160, 0, 20.0))
    assert not verdict.passed and "mean response time 400 ms" in verdict.why


def test_a_canary_that_took_no_request_passes_on_health_and_says_so() -> None:
    verdict = _verdict(Side(), Side(10, 0, 1.0))
    assert verdict.passed and "no request" in verdict.why


def test_set_weights_refuses_a_weight_out_of_range() -> None:
    api = RuntimeAPI("/nonexistent.sock")
    with pytest.raises(ValueError, match="not in 0-256"):
        api.set_weights("web", {"a": 300})


def test_package_diff_names_changed_added_and_removed() -> None:
    before = {"libc6": "2.36-9", "openssl": "3.0.11-1", "gone": "1"}
    after = {"libc6": "2.36-9", "openssl": "3.0.13-1", "new": "2"}
    assert diff_packages(before, after) == {
        "gone": ("1", None),
        "new": (None, "2"),
        "openssl": ("3.0.11-1", "3.0.13-1"),
    }
    assert label_packages({"io.corral.packages": "a=1,b=2:3"}) == {"a": "1", "b": "2:3"}


def test_clock_times_each_stage_in_order() -> None:
    clock = Clock()
    for stage in ("refresh", "build", "test"):
        clock.mark(stage)
    stages = clock.stop()
    assert [s for s, _ in stages] == ["refresh", "build", "test"]
    assert all(t >= 0 for _, t in stages)


def test_bases_of_groups_the_roles_built_on_each_debian_base(tmp_path: Path) -> None:
    (tmp_path / "corral.yaml").write_text(
        "fleet: shop\nroles:\n"
        "  web: {base: {debian: bookworm, packages: [python3]}, run: {command: [a]}}\n"
        "  api: {base: {debian: bookworm, packages: [python3]}, run: {command: [a]}}\n"
        "  db: {base: {debian: bookworm}, run: {command: [a]}}\n"
        "  other: {base: {image: localhost/x:1}, run: {command: [a]}}\n"
    )
    spec = load_spec(tmp_path / "corral.yaml")
    found = bases_of(spec)
    python = BaseRecipe.from_spec(DebianBase(debian="bookworm", packages=("python3",))).tag
    assert sorted(found[python][1]) == ["api", "web"]
    assert len(found) == 2 and "other" not in str(found)
    assert next(iter(bases_of(spec, ["db"]).values()))[1] == ["db"]


def test_base_repository_comes_from_the_environment_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = DebianBase(debian="bookworm")
    monkeypatch.setenv("CORRAL_BASE_REPO", "localhost/corral/t1/base")
    assert BaseRecipe.from_spec(base).tag.startswith("localhost/corral/t1/base:bookworm-")
    monkeypatch.setenv("CORRAL_BASE_REPO", "docker.io/evil;rm")
    with pytest.raises(UsageError, match="CORRAL_BASE_REPO"):
        _ = BaseRecipe.from_spec(base).tag


def test_an_archive_needs_a_packages_index(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        check_archives([tmp_path / "missing"])
    with pytest.raises(UsageError, match="no Packages index"):
        check_archives([tmp_path])
    (tmp_path / "Packages").write_text("")
    assert check_archives([tmp_path]) == [tmp_path.resolve()]


# -- the canary stage in the orchestrator, on the fake engine -------------------------------

STAGE_SPEC = """\
fleet: cny
roles:
  db:
    base: {image: localhost/base:1}
    run: {command: [db], user: app, env: {MODE: "%s"}}
    volumes: {data: /var/lib/db}
  web:
    base: {image: localhost/base:1}
    run: {command: [web], user: app, env: {MODE: "%s"}}
    replicas: 3
"""


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, FakeEngine]:
    engine = FakeEngine()
    engine.import_rootfs(tmp_path / "rootfs.tar", "localhost/base:1", {})
    spec = tmp_path / "corral.yaml"
    spec.write_text(STAGE_SPEC % ("a", "a"))
    app.deploy(spec, engine=engine, skip_tests="unit test")
    spec.write_text(STAGE_SPEC % ("b", "b"))
    return spec, engine


def _running(engine: FakeEngine) -> list[str]:
    return sorted(c.name for c in engine.list_containers({}) if c.state == "running")


def _deploy_with(spec: Path, engine: FakeEngine, canary: Canary) -> DeployResult:
    loaded = load_spec(spec)
    with State.open(loaded.state_path) as state:
        ctx = Context(loaded, engine, state)
        return orchestrate.deploy(ctx, canary=canary)


def test_the_canary_runs_beside_the_old_instances_and_is_kept_by_the_rest(
    staged: tuple[Path, FakeEngine],
) -> None:
    spec, engine = staged
    seen: list[list[str]] = []
    marks: list[str] = []
    canary = Canary({"web": 1, "db": 1}, lambda plan: seen.append(_running(engine)), marks.append)
    result = _deploy_with(spec, engine, canary)
    assert result.status == "active" and result.canary is not None
    assert result.canary.role("db").new == ()  # single-writer volume: no canary
    [during] = seen
    assert "cny-web-r2-1" in during and sum("cny-web-r1-" in n for n in during) == 3
    assert marks == ["canary", "watch", "rollout", "settle"]
    assert "cny-web-r2-1" in result.plan.role("web").keep
    assert _running(engine) == ["cny-db-r2-1", "cny-web-r2-1", "cny-web-r2-2", "cny-web-r2-3"]


def test_a_failed_canary_takes_the_fleet_back_with_the_reason(
    staged: tuple[Path, FakeEngine],
) -> None:
    spec, engine = staged
    before = _running(engine)

    def fail(plan: Plan) -> None:
        raise DeployError("role web: the canary cny-web-r2-1 failed: error rate 100.0%")

    with pytest.raises(ReleaseFailed, match=r"error rate 100\.0%.*back on release r1"):
        _deploy_with(spec, engine, Canary({"web": 1}, fail))
    assert _running(engine) == before


def test_the_cli_refuses_an_archive_without_an_index_and_an_unknown_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = Path(__file__).resolve().parents[2] / "examples" / "corral.yaml"
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "patch", "--archive", str(tmp_path)])
    assert exited.value.code == 2 and "no Packages index" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["-f", str(spec), "patch", "--dry-run", "nosuchrole"])
    assert exited.value.code == 2 and "no role called nosuchrole" in capsys.readouterr().err


# -- a revoked base is bootstrapped anew ----------------------------------------------------


class PackageEngine(FakeEngine):
    """A fake whose images all hold one package set (an upgrade finds nothing newer)."""

    def run_once(
        self, image: str, command: Sequence[str], timeout: float = 120, mounts: Sequence[Mount] = ()
    ) -> str:
        return "openssl=3.0.11-1\n"


BASE = DebianBase(debian="bookworm")
BASE_TAG = BaseRecipe.from_spec(BASE).tag


def fake_bootstrap(engine: PackageEngine, made: list[str]) -> Callable[..., ImageInfo]:
    """Stands in for mmdebstrap: each call imports a new image under the base's tag."""

    def bootstrap(*_: object) -> ImageInfo:
        engine.untag_image(BASE_TAG)
        image = engine.import_rootfs(Path("rootfs.tar"), BASE_TAG, {})
        made.append(image.id)
        return image

    return bootstrap


@pytest.mark.parametrize("layered", [False, True])
def test_a_revoked_base_is_bootstrapped_anew_before_its_upgrade(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layered: bool
) -> None:
    """Revoked: the base itself, or (``layered``) the base an earlier refresh went on."""
    engine = PackageEngine()
    revoked = engine.import_rootfs(tmp_path / "rootfs.tar", BASE_TAG, {}).id
    if layered:  # an earlier refresh: a layer on the revoked base, under the tag
        engine.untag_image(BASE_TAG)
        (tmp_path / "Containerfile").write_text(f"FROM {revoked}\n")
        labels = {refresh.LABEL_PARENT: revoked}
        engine.build_image(tmp_path, tmp_path / "Containerfile", BASE_TAG, labels)
    first = engine.inspect_image(BASE_TAG)
    assert first is not None
    made: list[str] = []
    monkeypatch.setattr(refresh, "bootstrap_base", fake_bootstrap(engine, made))

    done = refresh.refresh_base(engine, BASE, NullProgress(), revoked={revoked})

    assert made and (done.old_id, done.new_id, done.moved) == (first.id, made[0], True)
    new = engine.inspect_image(BASE_TAG)
    assert new is not None and new.id == made[0]  # the upgrade found nothing newer
    assert revoked not in refresh.lineage_of(engine, new)
    # Without a revocation a refresh goes on the base it finds, and keeps it.
    again = refresh.refresh_base(engine, BASE, NullProgress())
    assert len(made) == 1 and (again.old_id, again.new_id) == (made[0], made[0])


def test_a_bootstrap_that_makes_the_revoked_image_again_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine = PackageEngine()
    revoked = engine.import_rootfs(tmp_path / "rootfs.tar", BASE_TAG, {})
    monkeypatch.setattr(refresh, "bootstrap_base", lambda *_: revoked)
    with pytest.raises(BuildError, match="still serves what was revoked"):
        refresh.refresh_base(engine, BASE, NullProgress(), revoked={revoked.id})


def test_a_revoked_bases_refresh_that_fails_puts_the_tag_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fresh bootstrap took the tag; its upgrade failed: nothing untested stays."""
    engine = PackageEngine()
    revoked = engine.import_rootfs(tmp_path / "rootfs.tar", BASE_TAG, {}).id
    made: list[str] = []
    monkeypatch.setattr(refresh, "bootstrap_base", fake_bootstrap(engine, made))

    def broken(*_: object, **__: object) -> ImageInfo:
        raise BuildError("apt-get upgrade failed (exit 100)")

    monkeypatch.setattr(engine, "build_image", broken)
    with pytest.raises(BuildError, match="exit 100"):
        refresh.refresh_base(engine, BASE, NullProgress(), revoked={revoked})
    assert made and BASE_TAG in engine.images[revoked].tags  # podman moves a tag
