"""The small conventions every part of corral shares, each made in one place.

- **Labels**: every engine object corral makes carries labels under :data:`LABEL_PREFIX`
  (``io.corral.fleet``, ``io.corral.role``, ``io.corral.release``...); objects are found
  by their labels (:func:`labels_match`), never by parsing their names.
- **Times**: what corral writes down (state, labels, the audit trail, lock holders) is UTC
  ISO-8601 with seconds and a ``Z``: ``2026-11-29T15:40:00Z`` (:data:`UTC_FORMAT`).
- **Image versions**: ``<build number>-<first 12 characters of the content hash>``, such as
  ``3-1f2e3d4c5b6a`` (:func:`image_version`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

#: The prefix of every label corral puts on an engine object.
LABEL_PREFIX = "io.corral."
#: How corral writes a moment down: UTC, seconds, ``Z``.
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: How many characters of an image's content hash its version shows.
VERSION_HASH_CHARS = 12


def label(name: str) -> str:
    """The full name of corral's label ``name``: ``label("role")`` is ``io.corral.role``."""
    return LABEL_PREFIX + name


def labels_match(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    """Whether an object labelled ``have`` carries every one of ``want``, with its value
    (as an engine's label filter selects: other labels do not matter)."""
    return all(have.get(key) == value for key, value in want.items())


def utc_text(moment: datetime) -> str:
    """``moment`` (an aware datetime) as corral writes times: ``2026-11-29T15:40:00Z``."""
    return moment.astimezone(UTC).strftime(UTC_FORMAT)


def utc_now() -> str:
    """The current time as corral writes times (see :func:`utc_text`)."""
    return utc_text(datetime.now(UTC))


def image_version(number: int, content_hash: str) -> str:
    """The version of an image: its build number and the start of its content hash."""
    return f"{number}-{content_hash[:VERSION_HASH_CHARS]}"


_ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_time(text: str) -> datetime | None:
    """An aware datetime from an engine's ISO time (nanoseconds allowed) or corral's own
    format, or None."""
    match = _ISO_TIME.match(text or "")
    if not match:
        return None
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "", None) else zone
    try:
        return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None
