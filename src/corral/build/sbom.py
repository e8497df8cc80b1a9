"""Software bills of materials in CycloneDX (JSON, spec 1.6), written with the CycloneDX
project's own library and checked with its validator before anyone sees them.

An image is a ``container`` component; its Debian packages (read from the image after
its build, kept in the state) are ``library`` components with a package URL
(``pkg:deb/debian/NAME@VERSION?distro=SUITE``), which is what scanners match advisories
against. One image's BOM has the image as ``metadata.component`` and its packages as
components; a fleet's has the fleet as ``metadata.component`` and each image as a
component holding its packages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from corral import __version__
from corral.errors import BuildError
from corral.formats import LABEL_PREFIX
from corral.state import BaseRecord, ImageRecord


@dataclass(frozen=True)
class ImageContents:
    """An image, the base it was built on (if recorded) and its packages."""

    image: ImageRecord
    base: BaseRecord | None
    packages: Mapping[str, str]


def image_bom(item: ImageContents) -> str:
    """One image's CycloneDX JSON document.

    Raises:
        BuildError: the document does not validate (a bug in corral, never written out).
    """
    bom = _new_bom()
    component, packages = _image_component(item, nest=False)
    bom.metadata.component = component
    for package in packages:
        bom.components.add(package)
    bom.register_dependency(component, packages)
    return _checked(bom)


def fleet_bom(fleet: str, items: Sequence[ImageContents]) -> str:
    """A fleet's CycloneDX JSON document: one container component per image.

    Raises:
        BuildError: the document does not validate.
    """
    bom = _new_bom()
    root = Component(name=fleet, type=ComponentType.APPLICATION, bom_ref=f"fleet:{fleet}")
    bom.metadata.component = root
    images = [_image_component(item, nest=True)[0] for item in items]
    for image in images:
        bom.components.add(image)
    bom.register_dependency(root, images)
    return _checked(bom)


def _new_bom() -> Bom:
    bom = Bom()
    bom.metadata.tools.components.add(
        Component(name="corral", version=__version__, type=ComponentType.APPLICATION)
    )
    return bom


def _image_component(item: ImageContents, nest: bool) -> tuple[Component, list[Component]]:
    image = item.image
    ref = f"image:{image.fleet}/{image.role}@{image.version}"
    distro = _suite(item.base)
    packages = [
        Component(
            name=name,
            version=version,
            type=ComponentType.LIBRARY,
            purl=PackageURL("deb", "debian", name, version, {"distro": distro} if distro else None),
            bom_ref=f"{ref}/deb:{name}@{version}",
        )
        for name, version in sorted(item.packages.items())
    ]
    properties = [
        Property(name=LABEL_PREFIX + "image-id", value=image.image_id),
        Property(name=LABEL_PREFIX + "built-at", value=image.built_at),
    ]
    if item.base is not None:
        properties += [
            Property(name=LABEL_PREFIX + "base-id", value=item.base.image_id),
            Property(name=LABEL_PREFIX + "base-created-at", value=item.base.created_at),
        ]
    component = Component(
        name=f"{image.fleet}/{image.role}",
        version=image.version,
        type=ComponentType.CONTAINER,
        bom_ref=ref,
        properties=properties,
        components=packages if nest else None,
    )
    return component, packages


def _suite(base: BaseRecord | None) -> str | None:
    """The Debian suite of a base's line (``debian:bookworm:...``), when it is Debian."""
    if base is None or not base.line.startswith("debian:"):
        return None
    return base.line.split(":")[1] or None


def _checked(bom: Bom) -> str:
    # Imported here, not with the module: the validator's JSON Schema format checkers
    # compile a grammar at import (1-4 s), which every corral command would pay otherwise.
    from cyclonedx.validation.json import JsonStrictValidator

    text = JsonV1Dot6(bom).output_as_string(indent=2)
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if problem is not None:
        raise BuildError(f"the CycloneDX document corral made is not valid: {problem}")
    return text
