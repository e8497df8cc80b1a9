"""``corral images``: every image with its base and revocation, and every running instance
with the image it runs, that image's base, and whether that base is the newest of its line.

Read-only: one listing of the fleet's instances, the state, and one image inspection per
base reference (a base refreshed under its tag is seen before anything is built on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corral.build.lineage import UNKNOWN, Freshness, freshness, newest_bases
from corral.deploy.observe import KIND_EDGE, list_scope, observe, pick
from corral.deploy.scope import Scope
from corral.edge.container import EDGE_ROLE
from corral.engines.base import Engine
from corral.state import ImageRecord, RevocationRecord, Revoked, State


@dataclass(frozen=True)
class ImageLine:
    """One image of the fleet, its base against the newest, and its revocation if any
    (its own, or its base's)."""

    image: ImageRecord
    freshness: Freshness
    revoked: RevocationRecord | None

    def to_dict(self) -> dict[str, Any]:
        """The image's fields (as ``corral images --json`` always printed them) plus
        ``base``, ``base_status``, ``base_age_s``, ``newest_base`` and ``revoked``."""
        image = self.image
        return {
            "fleet": image.fleet,
            "role": image.role,
            "number": image.number,
            "content_hash": image.content_hash,
            "version": image.version,
            "tag": image.tag,
            "image_id": image.image_id,
            "digest": image.digest,
            "built_at": image.built_at,
            "git_commit": image.git_commit,
            "git_dirty": image.git_dirty,
            "labels": dict(image.labels),
            "base_id": image.base_id,
            **_base_fields(self.freshness),
            "revoked": self.revoked.to_dict() if self.revoked else None,
        }


@dataclass(frozen=True)
class InstanceLine:
    """One running instance, the image it runs and that image's ancestry."""

    name: str
    role: str
    release: int
    image_id: str
    image: ImageLine | None  # None: an image the state has no record of

    def to_dict(self) -> dict[str, Any]:
        """``name, role, release, image_id, version, tag`` and the image's base fields."""
        image = self.image
        fields = _base_fields(image.freshness if image else Freshness(None, None, UNKNOWN, None))
        return {
            "name": self.name,
            "role": self.role,
            "release": self.release,
            "image_id": self.image_id,
            "version": image.image.version if image else None,
            "tag": image.image.tag if image else None,
            **fields,
            "revoked": image.revoked.to_dict() if image and image.revoked else None,
        }


@dataclass(frozen=True)
class ImagesReport:
    """What ``corral images`` shows."""

    fleet: str
    images: tuple[ImageLine, ...]
    instances: tuple[InstanceLine, ...]

    @property
    def outdated(self) -> tuple[InstanceLine, ...]:
        """The running instances whose image is on an older base than the newest."""
        return tuple(
            i for i in self.instances if i.image and i.image.freshness.status == "outdated"
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"fleet", "images": [...], "instances": [...]}`` (docs/cli.md)."""
        return {
            "fleet": self.fleet,
            "images": [line.to_dict() for line in self.images],
            "instances": [line.to_dict() for line in self.instances],
        }


def _base_fields(fresh: Freshness) -> dict[str, Any]:
    base, newest = fresh.base, fresh.newest
    return {
        "base": base.ref if base else None,
        "base_line": base.line if base else None,
        "base_created_at": base.created_at if base else None,
        "base_source": base.source if base else None,
        "base_age_s": None if fresh.age_s is None else round(fresh.age_s),
        "base_status": fresh.status,
        "newest_base": {"id": newest.image_id, "created_at": newest.created_at} if newest else None,
    }


def images_report(
    state: State, engine: Engine, fleet: str, role: str | None = None
) -> ImagesReport:
    """Every image of the fleet (or one role) and every running instance, with ancestry.

    Raises:
        StateError: the state cannot be read.
        EngineError: the engine cannot list the fleet's instances.
    """
    now = datetime.now(UTC)
    bases = {b.image_id: b for b in state.stores.ancestry.bases(fleet)}
    newest = newest_bases(state, engine, fleet)
    standing = state.stores.revocations.standing(fleet)
    lines = {
        image.image_id: ImageLine(
            image, freshness(image, bases, newest, now), _revoked(image, standing)
        )
        for image in state.images(fleet)
    }
    instances = tuple(
        InstanceLine(name, of_role, release, image_id, lines.get(image_id))
        for name, of_role, release, image_id in _running(engine, fleet)
        if role is None or of_role == role
    )
    shown = tuple(line for line in lines.values() if role is None or line.image.role == role)
    return ImagesReport(fleet, shown, instances)


def _running(engine: Engine, fleet: str) -> list[tuple[str, str, int, str]]:
    """(name, role, release, image id) of the fleet's running instances and of its edge
    (role ``edge``, release 0: it runs a baked image on a base too), in one listing."""
    scope = Scope(fleet)
    listing = list_scope(engine, scope)
    found = [
        (i.name, i.role, i.release, i.image_id)
        for i in observe(engine, scope, listing)
        if i.running
    ]
    edges = pick(listing, scope.labels(KIND_EDGE))
    found += [(c.name, EDGE_ROLE, 0, c.image_id) for c in edges if c.state == "running"]
    return found


def _revoked(image: ImageRecord, standing: Revoked) -> RevocationRecord | None:
    return standing.of(image.image_id, image.base_id)


@dataclass(frozen=True)
class Carrier:
    """An image holding the package asked about, its version there, and the running
    instances of that image."""

    role: str
    version: str  # the image's version
    tag: str
    image_id: str
    package_version: str
    instances: tuple[str, ...]


@dataclass(frozen=True)
class PackageReport:
    """What ``corral sbom --package NAME`` shows: who carries the package, at what version."""

    fleet: str
    package: str
    images: tuple[Carrier, ...]

    @property
    def running(self) -> tuple[tuple[str, Carrier], ...]:
        """(instance name, its image) for every running instance carrying the package."""
        return tuple((name, c) for c in self.images for name in c.instances)

    def to_dict(self) -> dict[str, Any]:
        """``{"fleet", "package", "images": [...], "instances": [...]}`` (docs/cli.md)."""
        return {
            "fleet": self.fleet,
            "package": self.package,
            "images": [
                {
                    "role": c.role,
                    "version": c.version,
                    "tag": c.tag,
                    "image_id": c.image_id,
                    "package_version": c.package_version,
                    "instances": list(c.instances),
                }
                for c in self.images
            ],
            "instances": [
                {
                    "name": name,
                    "role": c.role,
                    "image_id": c.image_id,
                    "version": c.version,
                    "package_version": c.package_version,
                }
                for name, c in self.running
            ],
        }


def package_report(state: State, engine: Engine, fleet: str, package: str) -> PackageReport:
    """Every image of the fleet holding ``package`` and the running instances of each.

    Raises:
        StateError: the state cannot be read.
        EngineError: the engine cannot list the fleet's instances.
    """
    running: dict[str, list[str]] = {}
    for instance in observe(engine, Scope(fleet)):
        if instance.running:
            running.setdefault(instance.image_id, []).append(instance.name)
    carriers = tuple(
        Carrier(
            image.role,
            image.version,
            image.tag,
            image.image_id,
            version,
            tuple(running.get(image.image_id, ())),
        )
        for image, version in state.stores.ancestry.carrying(fleet, package)
    )
    return PackageReport(fleet, package, carriers)
