"""The planner, table-driven: every tests/unit/plan_cases/*.yaml is one scenario.

A case file holds ``desired`` (roles, with defaults filled in by ``role_from_case``),
``observed`` (instances, volumes, good releases, stand-bys, now), an optional
``untouched`` list and ``expect``: what ``plan_deploy`` must answer. A case may carry
``xfail: "BUG: ..."`` when it documents a known bug in the planner.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.cli.views import plan_lines
from corral.deploy.desired import RoleRelease
from corral.deploy.observe import Instance
from corral.deploy.plan import Observed, Plan, RolePlan, parse_time, plan_deploy, summarize
from corral.deploy.scope import Scope
from tests.unit.builders import role_release

CASES = Path(__file__).parent / "plan_cases"
DEFAULT_NOW = "2026-01-01T00:10:00Z"

# -- building inputs -------------------------------------------------------------------

ROLE_KEYS = {
    "image_id",
    "image_tag",
    "image_version",
    "image_digest",
    "run",
    "health",
    "replicas",
    "volumes",
    "deploy",
    "after",
    "public",
    "lockdown",
    "resources",
    "shareable",
}


def role_from_case(name: str, data: Mapping[str, Any] | None = None) -> RoleRelease:
    """A case's role: only known fields, the rest defaulted."""
    fields = dict(data or {})
    unknown = set(fields) - ROLE_KEYS
    assert not unknown, f"unknown role field(s) in a case: {sorted(unknown)}"
    return role_release(name, fields.pop("image_id", "img-a"), **fields)


def build_instance(
    scope: Scope, desired: Mapping[str, RoleRelease], data: Mapping[str, Any]
) -> Instance:
    role, release, index = data["role"], int(data["release"]), int(data["index"])
    config = data.get("config_hash", "same")
    if config == "same":
        config = desired[role].config_hash if role in desired else "orphan-config"
    return Instance(
        name=data.get("name", scope.instance_name(role, release, index)),
        role=role,
        release=release,
        index=index,
        image_id=data["image_id"],
        config_hash=config,
        state=data.get("state", "running"),
        address=data.get("address"),
        finished=data.get("finished", ""),
        created=data.get("created", ""),
    )


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    known = {"description", "fleet", "desired", "observed", "untouched", "source", "expect"}
    known.add("xfail")
    assert set(case) <= known, f"{path.name}: unknown keys {sorted(set(case) - known)}"
    return case


def build_inputs(
    case: Mapping[str, Any],
) -> tuple[Scope, dict[str, RoleRelease], Observed, list[str]]:
    scope = Scope(case.get("fleet", "shop"))
    desired = {name: role_from_case(name, data) for name, data in case["desired"].items()}
    obs = case.get("observed") or {}
    instances = [build_instance(scope, desired, i) for i in obs.get("instances", [])]
    observed = Observed(
        instances=instances,
        volumes=set(obs.get("volumes", [])),
        good_releases=set(obs.get("good_releases", [])),
        standby=set(obs.get("standby", [])),
        now=_time(obs.get("now", DEFAULT_NOW)),
        networks=set(obs.get("networks", [])),
        last_unavailable=dict(obs.get("last_unavailable", {})),
    )
    return scope, desired, observed, list(case.get("untouched", []))


def _time(text: str) -> datetime:
    parsed = parse_time(text)
    assert parsed is not None, f"bad time {text!r}"
    return parsed


# -- checking outputs ------------------------------------------------------------------

ROLE_EXPECT_KEYS = {
    "strategy",
    "keep",
    "start",
    "restart",
    "stop",
    "cleanup",
    "standby",
    "new_volumes",
    "volumes",
    "exclusive",
    "interrupts",
    "unavailable_s",
}


def check_changes(label: str, got: Sequence[Any], want: Sequence[Mapping[str, str]]) -> None:
    assert [c.instance for c in got] == [w["instance"] for w in want], label
    for change, wanted in zip(got, want, strict=True):
        assert wanted["reason"] in change.reason, f"{label}: {change}"


def check_role(rp: RolePlan, want: Mapping[str, Any]) -> None:
    unknown = set(want) - ROLE_EXPECT_KEYS
    assert not unknown, f"unknown expect key(s) for {rp.role}: {sorted(unknown)}"
    assert rp.strategy == want.get("strategy", "rolling")
    assert list(rp.keep) == want.get("keep", []), f"{rp.role}: keep"
    assert rp.start == want.get("start", 0), f"{rp.role}: start"
    assert list(rp.restart) == want.get("restart", []), f"{rp.role}: restart"
    check_changes(f"{rp.role}: stop", rp.stop, want.get("stop", []))
    check_changes(f"{rp.role}: cleanup", rp.cleanup, want.get("cleanup", []))
    assert list(rp.standby) == want.get("standby", []), f"{rp.role}: standby"
    assert list(rp.new_volumes) == want.get("new_volumes", []), f"{rp.role}: new_volumes"
    if "volumes" in want:
        assert list(rp.volumes) == want["volumes"], f"{rp.role}: volumes"
    assert list(rp.exclusive) == want.get("exclusive", []), f"{rp.role}: exclusive"
    assert rp.interrupts is want.get("interrupts", False), f"{rp.role}: interrupts"
    assert rp.unavailable_s == want.get("unavailable_s"), f"{rp.role}: unavailable_s"


def check_plan(plan: Plan, desired: Mapping[str, RoleRelease], expect: Mapping[str, Any]) -> None:
    assert plan.fleet == "shop"
    roles = expect.get("roles", {})
    assert sorted(roles) == sorted(desired), "expect.roles must name every desired role"
    assert [r.role for r in plan.roles] == sorted(desired)
    for rp in plan.roles:
        check_role(rp, roles[rp.role])
        assert rp.replicas == desired[rp.role].replicas
        assert rp.image_version == desired[rp.role].image_version
    check_changes("orphans", plan.orphans, expect.get("orphans", []))
    assert plan.has_changes is expect["has_changes"]
    assert plan.volumes_touched == expect.get("volumes_touched", 0)
    if "waves" in expect:
        assert [list(w) for w in plan.waves] == expect["waves"]
    assert plan.edge.action == "none"
    assert plan.ensure_network is expect.get("ensure_network", True)


def _case_params() -> list[Any]:
    params = []
    for path in sorted(CASES.glob("*.yaml")):
        case = load_case(path)
        marks = []
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=case["xfail"].strip()))
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def test_there_are_enough_cases() -> None:
    assert len(list(CASES.glob("*.yaml"))) >= 14


@pytest.mark.parametrize("path", _case_params())
def test_plan_case(path: Path) -> None:
    case = load_case(path)
    scope, desired, observed, untouched = build_inputs(case)
    source = case.get("source")  # a rollback's or an undo's: the release gone back to
    plan = plan_deploy(scope, desired, observed, untouched, source=source)
    check_plan(plan, desired, case["expect"])
    # The same inputs give the same plan, and the summary adds up.
    assert plan_deploy(scope, desired, observed, untouched, source=source) == plan
    counts = summarize(plan)
    assert counts["start"] == sum(r.start for r in plan.roles)
    assert counts["volumes_touched"] == plan.volumes_touched


# -- small pieces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        pytest.param(
            "2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=UTC), id="no-zone-means-utc"
        ),
        (
            "2026-01-01T00:00:00.123456789Z",
            datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
        ),
        ("2026-01-01T01:00:00.5+01:00", datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("", None),
        ("yesterday", None),
        ("2026-13-01T00:00:00Z", None),
    ],
)
def test_parse_time(text: str, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_stopped_instance_without_finish_time_never_expires() -> None:
    scope = Scope("shop")
    rr = role_from_case("web", {"image_id": "img-b", "deploy": {"keep_old": 1}})
    old = Instance("shop-web-r1-1", "web", 1, 1, "img-a", rr.config_hash, "exited", None)
    observed = Observed([old], set(), {1}, {old.name}, datetime(2030, 1, 1, tzinfo=UTC))
    assert plan_deploy(scope, {"web": rr}, observed).role("web").standby == (old.name,)


def test_config_hash_ignores_replicas_and_policy() -> None:
    base = role_from_case("web", {"run": {"port": 80}})
    other = role_from_case(
        "web",
        {
            "run": {"port": 80},
            "replicas": 5,
            "deploy": {"strategy": "blue-green", "keep_old": 10},
            "after": ["db"],
        },
    )
    assert base.config_hash == other.config_hash
    assert base.config_hash != role_from_case("web", {"run": {"port": 81}}).config_hash
    assert base.config_hash != role_from_case("web", {"volumes": {"d": "/d"}}).config_hash


def test_a_health_change_replaces_instances() -> None:
    """A new check must pass on instances started for it before they serve (issue 10)."""
    old = role_from_case("web", {"run": {"port": 80}, "health": {"http": "/healthz"}})
    new = role_from_case("web", {"run": {"port": 80}, "health": {"http": "/ready"}})
    slower = role_from_case(
        "web", {"run": {"port": 80}, "health": {"http": "/healthz", "retries": 3}}
    )
    assert len({old.config_hash, new.config_hash, slower.config_hash}) == 3
    running = [
        Instance(
            f"shop-web-r1-{n}", "web", 1, n, old.image_id, old.config_hash, "running", "10.0.0.9"
        )
        for n in (1, 2)
    ]
    observed = Observed(running, set(), {1}, set(), datetime(2030, 1, 1, tzinfo=UTC))
    plan = plan_deploy(Scope("shop"), {"web": new}, observed).role("web")
    assert plan.start == 1 and plan.keep == ()
    assert [c.reason for c in plan.stop] == ["run configuration changed"] * 2


# -- property: for any observed fleet -------------------------------------------------

NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
ROLES = ("api", "web", "worker")


@functools.cache
def cached_role(
    name: str, image: str, replicas: int, strategy: str, keep_old: int, command: str
) -> RoleRelease:
    return role_from_case(
        name,
        {
            "image_id": image,
            "replicas": replicas,
            "deploy": {"strategy": strategy, "keep_old": keep_old},
            "run": {"command": [command]},
        },
    )


ROLE_SPECS = st.tuples(
    st.sampled_from(["img-a", "img-b"]),  # image
    st.integers(0, 4),  # replicas
    st.sampled_from(["rolling", "blue-green"]),
    st.sampled_from([0, 60, 300]),  # keep_old
    st.sampled_from(["app", "app2"]),  # command (so the config hash)
)
FINISHED = ["", (NOW - timedelta(seconds=30)).isoformat(), "2025-12-31T00:00:00Z"]
INSTANCE_SPECS = st.dictionaries(
    st.tuples(st.sampled_from((*ROLES, "gone")), st.integers(1, 4), st.integers(1, 4)),
    st.tuples(
        st.sampled_from(["img-a", "img-b"]),
        st.booleans(),  # runs the desired configuration (else another one)
        st.sampled_from(["running", "running", "exited", "created"]),
        st.sampled_from(FINISHED),
        st.booleans(),  # a stand-by (corral stopped it on purpose)
    ),
    max_size=14,
)
FLEETS = st.tuples(
    st.dictionaries(st.sampled_from(ROLES), ROLE_SPECS, min_size=1),
    INSTANCE_SPECS,
    st.frozensets(st.integers(1, 4)),  # good releases
    st.frozensets(st.sampled_from(["shop-web-data", "shop-api-data"])),
    st.frozensets(st.sampled_from(["gone", "worker"])),  # untouched
)
OTHER_CONFIG = cached_role("x", "img-a", 1, "rolling", 0, "other").config_hash


def build_fleet(drawn: Any) -> tuple[dict[str, RoleRelease], Observed, list[str]]:
    roles, instance_specs, good, volumes, untouched = drawn
    desired = {name: cached_role(name, *spec) for name, spec in sorted(roles.items())}
    scope = Scope("shop")
    instances, standby = [], set()
    for (role, release, index), spec in sorted(instance_specs.items()):
        image, same, state, finished, is_standby = spec
        name = scope.instance_name(role, release, index)
        config = desired[role].config_hash if same and role in desired else OTHER_CONFIG
        instances.append(Instance(name, role, release, index, image, config, state, None, finished))
        if is_standby:
            standby.add(name)
    observed = Observed(instances, set(volumes), set(good), standby, NOW)
    return desired, observed, sorted(u for u in untouched if u not in desired)


@settings(max_examples=150, deadline=None)
@given(FLEETS)
def test_plan_properties(drawn: Any) -> None:
    desired, observed, untouched = build_fleet(drawn)
    scope = Scope("shop")
    plan = plan_deploy(scope, desired, observed, untouched)
    assert plan == plan_deploy(scope, dict(desired), observed, list(untouched))

    by_name = {i.name: i for i in observed.instances}
    listed: list[str] = [c.instance for c in plan.orphans]
    for c in plan.orphans:
        assert by_name[c.instance].role not in desired
        assert by_name[c.instance].role not in untouched
    for rp in plan.roles:
        rr = desired[rp.role]
        names = [
            *rp.keep,
            *rp.restart,
            *(c.instance for c in rp.stop),
            *(c.instance for c in rp.cleanup),
            *rp.standby,
        ]
        assert all(by_name[n].role == rp.role for n in names)
        listed += names
        assert rp.start >= 0
        assert len(rp.keep) + rp.start + len(rp.restart) == rr.replicas
        assert all(by_name[n].running for n in rp.keep)
        assert not any(by_name[n].running for n in (*rp.restart, *rp.standby))
        assert not any(by_name[c.instance].running for c in rp.cleanup)
        for name in rp.keep:  # only current instances of a good release are kept
            kept = by_name[name]
            assert kept.image_id == rr.image_id and kept.config_hash == rr.config_hash
            assert kept.release in observed.good_releases
        running = {i.name for i in observed.instances if i.role == rp.role and i.running}
        assert running == set(rp.keep) | {c.instance for c in rp.stop}
    assert len(listed) == len(set(listed)), "an instance is in two categories"
    for i in observed.instances:  # untouched roles are left exactly as they are
        if i.role in untouched:
            assert i.name not in listed
    assert sorted(n for w in plan.waves for n in w) == sorted(desired)


def test_the_plan_lists_roles_in_the_order_the_deploy_goes() -> None:
    """app is ``after`` db: db comes first in the plan's text, though app sorts before it."""
    desired = {
        "app": role_release("app", after=["db"]),
        "db": role_release("db"),
        "cache": role_release("cache"),
    }
    observed = Observed([], set(), set(), set(), datetime(2030, 1, 1, tzinfo=UTC))
    lines = plan_lines(plan_deploy(Scope("shop"), desired, observed))
    heads = [line.split(" ")[0] for line in lines]
    assert [h for h in heads if h in desired] == ["cache", "db", "app"]
