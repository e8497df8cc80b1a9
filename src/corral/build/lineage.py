"""Ancestry read back: whether an image's base is the newest of its line, and what
descends from a revoked base.

A base's *line* is what it is a base of (see :class:`~corral.state.BaseRecord`). The
newest base of a line is the most recently made one that is not revoked, among the bases
the state recorded and the images the engine holds under their references today (a base
refreshed under the same tag counts before anything is built on it). Only reads: nothing
here changes the state or the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from corral.build.base import LABEL_BASE_LINE, LABEL_BASE_SOURCE
from corral.engines.base import Engine
from corral.errors import UsageError
from corral.formats import parse_time, utc_now, utc_text
from corral.state import BaseRecord, ImageRecord, State

UP_TO_DATE = "up to date"
OUTDATED = "outdated"
UNKNOWN = "unknown"  # an image baked before corral recorded its base


@dataclass(frozen=True)
class Freshness:
    """An image's base against the newest of its line.

    ``status`` is ``up to date``, ``outdated`` or ``unknown``; ``age_s`` is how old the
    image's base is (seconds since it was made), None when unknown.
    """

    base: BaseRecord | None
    newest: BaseRecord | None
    status: str
    age_s: float | None


def newest_bases(state: State, engine: Engine, fleet: str) -> dict[str, BaseRecord]:
    """Per line, the newest base that is not revoked.

    Raises:
        StateError: the state cannot be read.
    """
    known = state.stores.ancestry.bases(fleet)
    revoked = state.stores.revocations.standing(fleet).bases
    candidates = [*known, *_tagged_now(engine, known)]
    newest: dict[str, BaseRecord] = {}
    for base in candidates:
        if base.image_id in revoked:
            continue
        current = newest.get(base.line)
        if current is None or _made(base) >= _made(current):
            newest[base.line] = base
    return newest


def _tagged_now(engine: Engine, known: list[BaseRecord]) -> list[BaseRecord]:
    """The images the engine holds today under the references of the known bases, when
    they are not known yet (a base refreshed under its tag)."""
    ids = {b.image_id for b in known}
    found = []
    for ref, base in {b.ref: b for b in known}.items():
        info = engine.inspect_image(ref)
        if info is None or info.id in ids:
            continue
        made = parse_time(info.created)
        found.append(
            dataclasses.replace(
                base,
                image_id=info.id,
                digest=info.digest,
                line=info.labels.get(LABEL_BASE_LINE) or base.line,
                created_at=utc_text(made) if made else utc_now(),
                source=info.labels.get(LABEL_BASE_SOURCE) or base.source,
                recorded_at="",
            )
        )
    return found


def _made(base: BaseRecord) -> datetime:
    return parse_time(base.created_at) or datetime.min.replace(tzinfo=UTC)


def freshness(
    image: ImageRecord,
    bases: Mapping[str, BaseRecord],
    newest: Mapping[str, BaseRecord],
    now: datetime,
) -> Freshness:
    """How ``image``'s base (looked up in ``bases``, by engine id) compares with the newest
    of its line (``newest``, from :func:`newest_bases`)."""
    base = bases.get(image.base_id) if image.base_id else None
    if base is None:
        return Freshness(None, None, UNKNOWN, None)
    top = newest.get(base.line)
    status = UP_TO_DATE if top is None or top.image_id == base.image_id else OUTDATED
    made = parse_time(base.created_at)
    age = (now - made).total_seconds() if made else None
    return Freshness(base, top, status, age)


def revoked_descendants(state: State, fleet: str) -> list[ImageRecord]:
    """Every image of the fleet built on a revoked base (what ``corral patch`` rebuilds
    on a new base); by role, then number.

    Raises:
        StateError: the state cannot be read.
    """
    standing = state.stores.revocations.standing(fleet)
    return state.stores.ancestry.descendants(fleet, list(standing.bases))


def releases_running(state: State, fleet: str, image_ids: Collection[str]) -> list[int]:
    """The numbers of the fleet's releases (any status) that ran one of ``image_ids``.

    Raises:
        StateError: the state cannot be read.
    """
    wanted = set(image_ids)
    return [
        release.number
        for release in state.releases(fleet, limit=1_000_000)
        if any(_image_of(role) in wanted for role in release.roles.values())
    ]


def _image_of(role: object) -> str | None:
    """The image id a release record keeps for a role (see ``deploy.desired.RoleRelease``)."""
    return str(role.get("image_id")) if isinstance(role, Mapping) else None


@dataclass(frozen=True)
class Revocable:
    """What ``corral revoke`` was pointed at: an image or a base, by engine id."""

    kind: str  # image | base
    image_id: str
    name: str  # its tag or reference, for messages

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, image id, name)."""
        return self.kind, self.image_id, self.name


def find_revocable(state: State, fleet: str, text: str) -> Revocable:
    """The image (by tag, version or id) or base (by reference or id) ``text`` names.

    An id may be shortened to 12 characters or more.

    Raises:
        UsageError: nothing, or more than one thing, of the fleet has that name.
    """
    images = state.images(fleet)
    bases = state.stores.ancestry.bases(fleet)
    found = {
        ("image", i.image_id): i.tag
        for i in images
        if text in (i.tag, i.version, f"{i.role}:{i.version}") or _id_match(i.image_id, text)
    }
    found |= {
        ("base", b.image_id): b.ref for b in bases if text == b.ref or _id_match(b.image_id, text)
    }
    if len(found) == 1:
        (kind, image_id), name = next(iter(found.items()))
        return Revocable(kind, image_id, name)
    if not found:
        raise UsageError(
            f"no image or base of fleet {fleet} is called {text!r}: name an image by its "
            "tag, version or id, or a base by its reference or id (corral images lists them)"
        )
    names = ", ".join(sorted(f"{kind} {name}" for (kind, _), name in found.items()))
    raise UsageError(f"{text!r} names more than one thing ({names}): give a longer id")


def _id_match(image_id: str, text: str) -> bool:
    bare = text.removeprefix("sha256:")
    return len(bare) >= 12 and image_id.removeprefix("sha256:").startswith(bare)
