"""Test environments get test values of secrets, never the live ones unless the spec says
so; the spec's names for tests must be secrets of the fleet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.deploy.desired import RoleRelease
from corral.deploy.instances import resolve_secrets, secrets_for_test_run
from corral.deploy.service import Context
from corral.engines.fake import FakeEngine
from corral.errors import GateError, SpecError
from corral.spec import load_spec
from corral.spec.model import Fleet
from corral.state import State
from corral.testing.suite import gate, smoke_variables
from tests.unit.builders import role_release

LIVE = {"DB_PASSWORD": "live-db-password", "API_TOKEN": "live-api-token"}


def _desired() -> dict[str, RoleRelease]:
    return {
        "db": role_release("db", run={"secrets": ["DB_PASSWORD"]}),
        "web": role_release("web", run={"secrets": ["DB_PASSWORD", "API_TOKEN"]}),
    }


def test_each_secret_gets_a_fresh_value_per_run_never_the_live_one() -> None:
    first = secrets_for_test_run(_desired(), environ=LIVE)
    second = secrets_for_test_run(_desired(), environ=LIVE)
    assert set(first) == {"DB_PASSWORD", "API_TOKEN"}
    assert not set(first.values()) & set(LIVE.values())
    assert first["DB_PASSWORD"] != second["DB_PASSWORD"]
    assert len(first["DB_PASSWORD"]) == 32 and first["DB_PASSWORD"] != first["API_TOKEN"]


def test_the_test_run_needs_no_secret_exported() -> None:
    values = secrets_for_test_run(_desired(), also=["EXTRA"], environ={})
    assert set(values) == {"DB_PASSWORD", "API_TOKEN", "EXTRA"}
    with pytest.raises(GateError):
        resolve_secrets(_desired(), environ={})  # a deploy does need them


def test_live_values_only_on_purpose() -> None:
    values = secrets_for_test_run(_desired(), live=["API_TOKEN"], environ=LIVE)
    assert values["API_TOKEN"] == "live-api-token"
    assert values["DB_PASSWORD"] != "live-db-password"
    with pytest.raises(GateError, match=r"API_TOKEN.*live_secrets_in_tests"):
        secrets_for_test_run(_desired(), live=["API_TOKEN"], environ={})


SPEC = """\
fleet: shop
{live}roles:
  db:
    base: {{image: localhost/db}}
    run: {{command: [db], secrets: [DB_PASSWORD]}}
  web:
    base: {{image: localhost/web}}
    run: {{command: [web], secrets: [API_TOKEN]}}
    test_secrets: [{declared}]
"""


def _load(tmp_path: Path, declared: str, live: str = "") -> Fleet:
    path = tmp_path / "corral.yaml"
    path.write_text(SPEC.format(declared=declared, live=live))
    return load_spec(path).fleet


def test_the_spec_declares_secrets_for_tests(tmp_path: Path) -> None:
    fleet = _load(tmp_path, "DB_PASSWORD, API_TOKEN", "live_secrets_in_tests: [API_TOKEN]\n")
    assert fleet.roles["web"].test_secrets == ("DB_PASSWORD", "API_TOKEN")
    assert fleet.live_secrets_in_tests == ("API_TOKEN",)
    assert _load(tmp_path, "").roles["db"].test_secrets == ()


@pytest.mark.parametrize(
    ("declared", "live", "message"),
    [
        ("NOPE", "", "role 'web': test_secrets names what no role's run.secrets has: NOPE"),
        ("API_TOKEN", "live_secrets_in_tests: [GONE]\n", "live_secrets_in_tests names .*GONE"),
        ("'bad name'", "", "should match pattern|expected"),
    ],
)
def test_names_for_tests_must_be_the_fleets_secrets(
    tmp_path: Path, declared: str, live: str, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, declared, live)
    assert any(re.search(message, d.message) for d in caught.value.diagnostics)


SMOKE_SPEC = """\
fleet: shop
live_secrets_in_tests: [API_TOKEN]
roles:
  web:
    base: {image: localhost/web}
    run: {command: [web], port: 80, secrets: [API_TOKEN, DB_PASSWORD]}
    public: 8080
    tests: [tests/]
    test_secrets: [API_TOKEN, DB_PASSWORD]
"""


@pytest.fixture
def smoke_ctx(tmp_path: Path) -> Iterator[Context]:
    (tmp_path / "tests").mkdir()
    path = tmp_path / "corral.yaml"
    path.write_text(SMOKE_SPEC)
    with State.open(tmp_path / "state.db") as state:
        yield Context(load_spec(path), FakeEngine(), state)


def test_a_smoke_test_gets_only_declared_secrets_listed_as_live(
    smoke_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "live-api-token")
    monkeypatch.setenv("DB_PASSWORD", "live-db-password")
    ctx = smoke_ctx
    desired = {"web": role_release("web", public=8080, tests=["tests/"])}
    assert smoke_variables(ctx, desired) == {"web": {"API_TOKEN": "live-api-token"}}


def test_a_missing_smoke_secret_is_refused_before_the_deploy(
    smoke_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    ctx = smoke_ctx
    desired = {"web": role_release("web", public=8080, tests=["tests/"])}
    with pytest.raises(GateError, match=r"API_TOKEN.*smoke test"):
        gate(ctx, desired, None, smoke=True)
    with pytest.raises(GateError, match="no passing test record"):
        gate(ctx, desired, None, smoke=False)  # a rollback runs no smoke test
