"""Refresh a Debian base: ``apt-get upgrade`` from its archives, layered over the base.

Why a layer rather than a new mmdebstrap run: measured on this host, ``apt-get update``
against deb.debian.org takes ~4 s and an upgrade a few more, where a bootstrap takes
minutes; the issue allows "a later snapshot", and an upgraded base is exactly the
bootstrap's package set at the archive's newest versions. The layer goes on the newest
refresh (or the bootstrap), so its own layers are reused, and it moves the base's tag:
every role built on the base gets a new content hash (it covers the base image's id) and
is rebuilt by the next bake, every other role is untouched.

Extra archives are local folders holding a flat repository (``Packages`` made by
dpkg-scanpackages or apt-ftparchive): a security fix staged by hand, or a test's. They
are bind-mounted read-only into the build step only, with the apt source list: nothing of
either stays in the image. The host's own archive settings are never read.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.build.bake import inventory
from corral.build.base import LABEL_BASE_HASH, BaseRecipe, bootstrap_base, ensure_base
from corral.engines.base import Engine
from corral.engines.values import ImageInfo
from corral.errors import BuildError, UsageError
from corral.formats import label, utc_now
from corral.progress import Progress
from corral.spec.load import LoadedSpec
from corral.spec.model import DebianBase

LABEL_REFRESHED = label("base-refreshed-at")
LABEL_PARENT = label("base-parent")
_MOUNT = "/run/corral-refresh"
# One shell script, no spec value in it: the sources come in a mounted file.
_UPGRADE = (
    "set -e; export DEBIAN_FRONTEND=noninteractive; "
    f"o='-o Dir::Etc::SourceList={_MOUNT}/sources.list -o Dir::Etc::SourceParts=/dev/null'; "
    "apt-get $o -q update; "
    "apt-get $o -q -y -o Dpkg::Options::=--force-confold upgrade; "
    "apt-get clean; rm -rf /var/lib/apt/lists/*"
)


@dataclass(frozen=True)
class Refreshed:
    """One base after a refresh: its tag, the image before and after, what changed."""

    tag: str
    old_id: str
    new_id: str
    changed: dict[str, tuple[str | None, str | None]]  # package -> (old, new) version
    seconds: float = 0.0

    @property
    def moved(self) -> bool:
        return self.old_id != self.new_id


def bases_of(
    spec: LoadedSpec, roles: Sequence[str] = ()
) -> dict[str, tuple[DebianBase, list[str]]]:
    """The Debian bases of the spec's roles (or of ``roles``): tag -> (base, roles on it).

    What is built on a base is read from the spec: the roles that name the same recipe.
    Once state records image ancestry, this is the one place to read it from there.
    """
    found: dict[str, tuple[DebianBase, list[str]]] = {}
    for name, role in spec.fleet.roles.items():
        if roles and name not in roles:
            continue
        if isinstance(role.base, DebianBase):
            tag = BaseRecipe.from_spec(role.base).tag
            found.setdefault(tag, (role.base, []))[1].append(name)
    return found


def check_archives(archives: Sequence[Path]) -> list[Path]:
    """The extra archives as absolute folders, each holding a ``Packages`` index.

    Raises:
        UsageError: naming a folder that is missing or has no index.
    """
    checked = []
    for folder in archives:
        path = folder.expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"--archive {folder}: no such folder")
        if not any((path / name).is_file() for name in ("Packages", "Packages.gz", "Packages.xz")):
            raise UsageError(
                f"--archive {folder}: no Packages index in it "
                "(make one with dpkg-scanpackages . > Packages, or apt-ftparchive packages .)"
            )
        checked.append(path)
    return checked


def refresh_base(
    engine: Engine,
    base: DebianBase,
    progress: Progress,
    archives: Sequence[Path] = (),
    default_archives: bool = True,
    revoked: Collection[str] = (),
) -> Refreshed:
    """Upgrade ``base`` from its archives (and ``archives``) and move its tag to the result.

    When no package changed the new layer is dropped and the tag stays where it was. A
    base that is, or is layered on, one of ``revoked`` (engine ids) is never built upon:
    it is bootstrapped anew with mmdebstrap first, and the upgrade goes on that.

    Raises:
        UsageError: no archive at all to upgrade from.
        BuildError: apt or mmdebstrap failed (an unreachable archive, a broken
            package...), or a new bootstrap made the revoked image again.
    """
    recipe = BaseRecipe.from_spec(base)
    lines = recipe.sources() if default_archives else []
    lines += [f"deb [trusted=yes] file:{_MOUNT}/archive-{i} ./" for i in range(len(archives))]
    if not lines:
        raise UsageError("nothing to refresh from: no default archives and no --archive")
    first = ensure_base(engine, base, progress)
    before = packages(engine, first.id)
    if not (revoked and lineage_of(engine, first) & set(revoked)):
        return _upgrade(
            engine, recipe, (first, first), before, lines, archives, default_archives, progress
        )
    progress.step("base", f"{recipe.tag} is built on a revoked base: bootstrapping it anew")
    fresh = bootstrap_base(engine, base, progress)  # the tag moves to it
    try:
        if lineage_of(engine, fresh) & set(revoked):
            raise BuildError(
                f"a new bootstrap of {recipe.tag} made the revoked image {fresh.id[:12]} "
                "again: the archive still serves what was revoked"
            )
        return _upgrade(
            engine, recipe, (first, fresh), before, lines, archives, default_archives, progress
        )
    except BaseException:
        engine.tag_image(first.id, recipe.tag)  # nothing untested stays under the tag
        raise


def _upgrade(
    engine: Engine,
    recipe: BaseRecipe,
    images: tuple[ImageInfo, ImageInfo],
    before: Mapping[str, str],
    lines: Sequence[str],
    archives: Sequence[Path],
    network: bool,
    progress: Progress,
) -> Refreshed:
    """The upgrade layer on ``old`` of ``images`` (``first``, the base found, or its fresh
    bootstrap), the tag moved when a package changed; ``before``: ``first``'s packages;
    ``network``: the build step may reach the default archives."""
    first, old = images
    staging = f"{recipe.tag}-refreshing"
    progress.step("base", f"refreshing {recipe.tag} from {len(lines)} archive(s)")
    with tempfile.TemporaryDirectory(prefix="corral-refresh-") as tmp:
        context = Path(tmp)
        (context / "sources.list").write_text("\n".join(lines) + "\n")
        for i, folder in enumerate(archives):
            shutil.copytree(folder, context / f"archive-{i}", symlinks=False)
        cfile = context / "Containerfile"
        cfile.write_text(
            f"FROM {old.id}\n"
            f'RUN --mount=type=bind,target={_MOUNT},ro ["/bin/sh", "-c", {json.dumps(_UPGRADE)}]\n'
        )
        labels = {
            LABEL_BASE_HASH: recipe.hash,
            LABEL_REFRESHED: utc_now(),
            LABEL_PARENT: old.id,
        }
        new = engine.build_image(
            context,
            cfile,
            staging,
            labels,
            log=lambda line: progress.log("base", line),
            network=network,
        )
    after = packages(engine, new.id)
    changed = diff_packages(before, after)
    if after == (before if old.id == first.id else packages(engine, old.id)):
        # the upgrade changed nothing: its layer is dropped
        engine.untag_image(staging)
        if old.id == first.id:
            progress.step("base", f"{recipe.tag}: no package has a newer version")
        return Refreshed(recipe.tag, first.id, old.id, changed)
    engine.tag_image(new.id, recipe.tag)
    engine.untag_image(staging)
    progress.step("base", f"{recipe.tag}: {len(changed)} package(s) upgraded")
    return Refreshed(recipe.tag, first.id, new.id, changed)


def lineage_of(engine: Engine, image: ImageInfo) -> set[str]:
    """The engine ids of ``image`` and of the bases it was refreshed from (each refresh
    labels its parent), as far as the engine still holds them."""
    found = {image.id}
    parent = image.labels.get(LABEL_PARENT)
    while parent and parent not in found:
        found.add(parent)
        held = engine.inspect_image(parent)
        parent = held.labels.get(LABEL_PARENT) if held is not None else None
    return found


def packages(engine: Engine, image_id: str) -> dict[str, str]:
    """Package name -> version in an image, from ``dpkg-query`` inside it."""
    listed, _ = inventory(engine, image_id)
    return dict(p.split("=", 1) for p in listed)


def label_packages(labels: Mapping[str, str]) -> dict[str, str]:
    """Package name -> version from a role image's ``packages`` label (set by the bake)."""
    listed = labels.get(label("packages"), "")
    return dict(p.split("=", 1) for p in listed.split(",") if "=" in p)


def diff_packages(
    before: Mapping[str, str], after: Mapping[str, str]
) -> dict[str, tuple[str | None, str | None]]:
    """Packages whose version differs: name -> (old or None, new or None), by name."""
    names = sorted(set(before) | set(after))
    return {n: (before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)}
