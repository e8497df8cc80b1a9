"""The shared conventions (corral.formats): one label prefix, one label matcher, one UTC
time format, one image version format, each written in one place only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from corral.deploy.scope import LABEL
from corral.formats import (
    LABEL_PREFIX,
    UTC_FORMAT,
    image_version,
    label,
    labels_match,
    utc_now,
    utc_text,
)
from corral.state import records

SRC = Path(__file__).resolve().parents[2] / "src" / "corral"


def test_labels_are_under_one_prefix() -> None:
    assert label("role") == "io.corral.role" == LABEL + "role"
    assert LABEL_PREFIX == "io.corral."


@pytest.mark.parametrize(
    ("have", "want", "matched"),
    [
        ({"io.corral.fleet": "a", "io.corral.role": "web"}, {"io.corral.fleet": "a"}, True),
        ({"io.corral.fleet": "a"}, {}, True),
        ({"io.corral.fleet": "a"}, {"io.corral.fleet": "b"}, False),
        ({"io.corral.fleet": "a"}, {"io.corral.fleet": "a", "io.corral.role": "web"}, False),
        ({"io.corral.role": ""}, {"io.corral.role": ""}, True),
        ({}, {"io.corral.role": ""}, False),  # missing is not the empty value
    ],
)
def test_the_label_matcher(have: dict[str, str], want: dict[str, str], matched: bool) -> None:
    assert labels_match(have, want) is matched


def test_times_are_utc_seconds_and_z() -> None:
    two_hours_east = timezone(timedelta(hours=2))
    moment = datetime(2026, 11, 29, 17, 40, 5, 999999, tzinfo=two_hours_east)
    assert utc_text(moment) == "2026-11-29T15:40:05Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())
    assert datetime.strptime(utc_now(), UTC_FORMAT).replace(tzinfo=UTC) <= datetime.now(UTC)
    assert records.utc_now is utc_now  # the state writes times the same way


def test_image_versions() -> None:
    assert image_version(3, "1f2e3d4c5b6a7988") == "3-1f2e3d4c5b6a"
    assert records.image_version is image_version


@pytest.mark.parametrize("literal", ['"io.corral.', '"%Y-%m-%dT%H:%M:%SZ"'])
def test_each_convention_is_written_in_one_place(literal: str) -> None:
    holders = sorted(
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py") if literal in path.read_text()
    )
    assert holders == ["formats.py"]
