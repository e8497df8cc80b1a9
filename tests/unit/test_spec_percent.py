"""deploy.max_surge and deploy.max_unavailable as percentages of the replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import SpecError
from corral.spec.load import load_spec
from corral.spec.model import DeployPolicy

SPEC = """\
fleet: shop
roles:
  web:
    base: {{debian: bookworm}}
    replicas: {replicas}
    run:
      command: [python3, app.py]
    deploy: {{max_surge: {surge}, max_unavailable: {unavailable}}}
"""


def _load(tmp_path: Path, surge: str, unavailable: str, replicas: int = 4) -> DeployPolicy:
    spec = tmp_path / "corral.yaml"
    spec.write_text(SPEC.format(surge=surge, unavailable=unavailable, replicas=replicas))
    return load_spec(spec).fleet.roles["web"].deploy


def _problem(tmp_path: Path, surge: str, unavailable: str, replicas: int = 4) -> str:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, surge, unavailable, replicas)
    [diagnostic] = caught.value.diagnostics
    return f"{diagnostic.path}:{diagnostic.line}: {diagnostic.message}"


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "resolved"),
    [
        ("'25%'", "0", 10, (3, 0)),  # surge rounds up: 2.5 -> 3
        ("0", "'25%'", 10, (0, 2)),  # unavailable rounds down: 2.5 -> 2
        ("'100%'", "'100%'", 7, (7, 7)),
        ("1", "'10%'", 4, (1, 0)),
        ("'1%'", "0", 100, (1, 0)),
        ("'1%'", "0", 1, (1, 0)),
        ("2", "1", 5, (2, 1)),
    ],
)
def test_percentages_resolve_as_kubernetes(
    tmp_path: Path, surge: str, unavailable: str, replicas: int, resolved: tuple[int, int]
) -> None:
    policy = _load(tmp_path, surge, unavailable, replicas)
    assert (policy.surge(replicas), policy.unavailable(replicas)) == resolved


@pytest.mark.parametrize("value", ["'101%'", "'25 %x'", "'-5%'", "'2.5%'", "'%'", "true", "1.5"])
def test_malformed_amounts_are_refused_with_the_field(tmp_path: Path, value: str) -> None:
    problem = _problem(tmp_path, value, "0")
    assert problem.startswith("roles.web.deploy.max_surge:8: ")
    assert "expected an integer 0-100 or a percentage of replicas such as '25%'" in problem


def test_amounts_that_come_to_nothing_are_refused(tmp_path: Path) -> None:
    problem = _problem(tmp_path, "0", "'10%'", replicas=4)
    assert "both come to 0 instances of 4 replicas" in problem
    assert problem.startswith("roles.web:3: ")
    assert "cannot both be 0" in _problem(tmp_path, "'0%'", "0")
    # the same policy is fine where 10% is at least one instance
    assert _load(tmp_path, "0", "'10%'", replicas=10).unavailable(10) == 1
