"""``corral chaos``: the seeded choice of what to kill (pure), and a run on the fake
engine that never takes a role below ``replicas - max_unavailable`` (the proof under load
is tests/engine/test_breakglass_chaos.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from corral import app
from corral.deploy.chaos import RoleHealth, choose, ticks
from corral.engines.fake import FakeEngine
from tests.unit.test_cli import SKIP, WORKER_SPEC, run
from tests.unit.test_reconcile import _serve, _workers


def _picks(seed: int, roles: list[RoleHealth], n: int = 20) -> list[tuple[str, str] | None]:
    rng = random.Random(seed)
    return [choose(rng, roles) for _ in range(n)]


WEB = RoleHealth("web", keep=2, healthy=("w1", "w2", "w3"))
API = RoleHealth("api", keep=1, healthy=("a1", "a2"))


def test_the_same_seed_makes_the_same_choices() -> None:
    assert _picks(7, [WEB, API]) == _picks(7, [API, WEB])  # order of roles does not matter
    assert _picks(7, [WEB, API]) != _picks(8, [WEB, API])
    assert {p for p in _picks(1, [WEB, API], 200)} == {("web", n) for n in WEB.healthy} | {
        ("api", n) for n in API.healthy
    }


def test_a_role_with_nothing_to_spare_is_never_chosen() -> None:
    full = RoleHealth("web", keep=3, healthy=("w1", "w2", "w3"))  # max_unavailable 0
    short = RoleHealth("api", keep=2, healthy=("a1",))  # already below what it keeps
    assert full.spare == 0 and short.spare == 0
    assert _picks(3, [full, short]) == [None] * 20
    assert {p[0] for p in _picks(3, [full, API]) if p} == {"api"}


def test_a_tick_with_nothing_to_spare_does_not_shift_the_next_choices() -> None:
    rng_a, rng_b = random.Random(5), random.Random(5)
    choose(rng_a, [RoleHealth("web", keep=3, healthy=("w1",))])  # spared
    choose(rng_b, [WEB])
    assert choose(rng_a, [WEB]) == choose(rng_b, [WEB])


def test_ticks_cover_the_duration() -> None:
    assert ticks(60, 5) == [5.0 * n for n in range(12)]
    assert ticks(1, 5) == [0.0]
    assert ticks(0, 5) == []


SPARE_SPEC = WORKER_SPEC.replace(
    "    replicas: 2\n", "    replicas: 3\n    deploy: {max_unavailable: 1}\n"
)


@pytest.fixture
def spare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeEngine]:
    spec, engine = _serve(FakeEngine(), tmp_path, monkeypatch)
    spec.write_text(SPARE_SPEC)
    return spec, engine


def test_chaos_kills_at_most_what_a_role_can_lose_and_audits_it(
    spare: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, engine = spare
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0
    assert len(_workers(engine)) == 3
    code, out, err = run(
        capsys, "--json", "-f", str(spec), "chaos", "--interval", "0.2", "--duration", "0.6",
        "--seed", "42",
    )  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["seed"] == 42 and result["ticks"] == 3
    # Nothing replaces the first kill (no watcher): the next two ticks have nothing to spare.
    assert len(result["kills"]) == 1 and result["spared_ticks"] == [1, 2], result
    [killed] = [k["instance"] for k in result["kills"]]
    assert engine.containers[killed].state == "exited" and len(_workers(engine)) == 2
    assert "tick 1: nothing to spare" in err
    entries = [(e.action, e.target, e.outcome) for e in app.audit(spec)]
    assert ("chaos-kill", killed, "ok") in entries
    assert ("chaos", "fleet", "started") in entries and ("chaos", "fleet", "ended") in entries
    # The same seed on the same fleet kills the same instance.
    assert run(capsys, "-f", str(spec), "reconcile")[0] == 0 and len(_workers(engine)) == 3
    again = _workers(engine)
    code, out, _ = run(
        capsys, "--json", "-f", str(spec), "chaos", "--duration", "0.1", "--seed", "42"
    )
    expected = random.Random(42)
    assert (
        json.loads(out)["kills"][0]["instance"]
        == choose(expected, [RoleHealth("worker", 2, tuple(again))])[1]
    )  # type: ignore[index]


def test_chaos_refuses_a_role_that_is_not_there(
    spare: tuple[Path, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, _ = spare
    assert run(capsys, "--json", "-f", str(spec), "deploy", *SKIP)[0] == 0
    code, _, err = run(capsys, "-f", str(spec), "chaos", "ghost", "--duration", "1")
    assert code == 2 and "no role ghost in the active release" in err
