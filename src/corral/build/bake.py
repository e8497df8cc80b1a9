"""Bake versioned role images: resolve the base, hash the inputs, build only what changed.

A role image's version is ``<build number>-<content hash[:12]>``. The content hash covers
everything that shapes the image (the role's base and build sections, including
``build.network``, its user, workdir and volume paths, the base image id, and the bytes,
execute bits and symlinks of every copied file), so an unchanged role is never rebuilt and
the same version always means the same inputs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral import __version__
from corral.build import containerfile
from corral.build.base import LABEL_BASE_LINE, LABEL_BASE_SOURCE, BaseRecipe, ensure_base
from corral.build.git import git_info
from corral.build.hashing import combine, hash_json, hash_tree
from corral.build.tree import confined
from corral.engines.base import Engine, ImageInfo
from corral.errors import BuildError, CorralError, EngineError, GateError, UsageError
from corral.formats import LABEL_PREFIX, image_version, parse_time, utc_now, utc_text
from corral.progress import NullProgress, Progress
from corral.spec.load import LoadedSpec
from corral.spec.model import ContainerfileBase, DebianBase, ImageBase, Role
from corral.state import BaseRecord, ImageRecord, State
from corral.state.ancestry import parse_packages

# 2: spec values reach the Containerfile as data (build arguments, argv items).
IMAGE_RECIPE_VERSION = 2
SSH_SERVERS = ("openssh-server", "dropbear", "dropbear-bin", "tinysshd")
LABEL = LABEL_PREFIX  # corral.formats has the one prefix; modules import LABEL here


@dataclass(frozen=True)
class BuildResult:
    role: str
    status: Literal["built", "up-to-date"]
    version: str
    tag: str
    image_id: str
    seconds: float


def image_repo(fleet: str, role: str) -> str:
    return f"localhost/corral/{fleet}/{role}"


@dataclass(frozen=True)
class BakeTarget:
    """One image to bake: a role of the spec, or one corral makes itself (the edge)."""

    fleet: str
    name: str
    role: Role
    root: Path  # relative paths in the role resolve against it


def build_fleet(
    spec: LoadedSpec,
    engine: Engine,
    state: State,
    roles: Sequence[str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> list[BuildResult]:
    """Bake the images of ``roles`` (default: every role), side by side; results in
    spec order.

    Raises:
        UsageError: a named role is not in the spec.
        BuildError: a build step failed; the role has no new image.
        GateError: the image holds an SSH server and the role did not allow it.
    """
    progress = progress or NullProgress()
    sweep_stages(spec.fleet.fleet, engine, state)
    targets = [
        BakeTarget(spec.fleet.fleet, name, spec.fleet.roles[name], spec.root)
        for name in _select_roles(spec, roles)
    ]
    for target in targets:  # each base made once, before the roles on it are baked
        resolve_base(target, engine, progress)
    # Side by side: a build waits on the engine (a container per step, a commit each)
    # as much as it computes. A failed one leaves the others to finish; the first
    # failure in spec order is raised.
    workers = min(len(targets), os.cpu_count() or 1)
    if workers <= 1:
        return [bake_target(t, engine, state, progress, force) for t in targets]
    # Ctrl-C interrupts this thread only; the builds see their podman end (it got the
    # signal too) and must record "interrupted", not "failed".
    stopped = threading.Event()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        baking = [
            pool.submit(bake_target, t, engine, state, progress, force, stopped) for t in targets
        ]
        try:
            return [b.result() for b in baking]
        except KeyboardInterrupt:
            stopped.set()
            raise


def _select_roles(spec: LoadedSpec, roles: Sequence[str] | None) -> list[str]:
    if not roles:
        return list(spec.fleet.roles)
    unknown = [r for r in roles if r not in spec.fleet.roles]
    if unknown:
        known = ", ".join(spec.fleet.roles)
        raise UsageError(f"no role called {', '.join(unknown)} in the spec (roles: {known})")
    return list(dict.fromkeys(roles))


def bake_target(
    target: BakeTarget,
    engine: Engine,
    state: State,
    progress: Progress,
    force: bool = False,
    stopped: threading.Event | None = None,
) -> BuildResult:
    """Bake one image unless an image with the same content hash exists already;
    ``stopped`` is set when the build is interrupted from another thread."""
    started = time.monotonic()
    base = resolve_base(target, engine, progress)
    content_hash = role_content_hash(target, base.id)
    current = None if force else _current_image(target, content_hash, engine, state)
    record = current or _bake(
        target, base_record(target, base), content_hash, engine, state, progress, stopped
    )
    status: Literal["built", "up-to-date"] = "up-to-date" if current else "built"
    return BuildResult(
        target.name, status, record.version, record.tag, record.image_id, time.monotonic() - started
    )


def find_current_image(
    target: BakeTarget, engine: Engine, state: State, *, retag: bool = True
) -> ImageRecord | None:
    """The image baked from the target's current inputs, without building anything.

    With ``retag`` False it changes nothing at all (``plan``, ``status``): an image whose
    tag was removed is still found, and only a bake puts the tag back.
    """
    base = target.role.base
    if isinstance(base, DebianBase):
        found = engine.inspect_image(BaseRecipe.from_spec(base).tag)
    elif isinstance(base, ImageBase):
        found = engine.inspect_image(base.image)
    else:
        found = engine.inspect_image(_containerfile_base_tag(target, base)[1])
    if found is None:
        return None
    return _current_image(target, role_content_hash(target, found.id), engine, state, retag)


def _current_image(
    target: BakeTarget, content_hash: str, engine: Engine, state: State, retag: bool = True
) -> ImageRecord | None:
    """The recorded image with this content hash, if it still exists in the engine and
    was not revoked (a revoked image is never reused: the same inputs are baked again)."""
    record = state.find_image(target.fleet, target.name, content_hash)
    if record is None or state.stores.revocations.standing(target.fleet).of(record.image_id):
        return None
    tagged = engine.inspect_image(record.tag)
    if tagged is not None and tagged.id == record.image_id:
        return record  # the common case: one look
    if engine.inspect_image(record.image_id) is None:
        return None
    if retag:
        engine.tag_image(record.image_id, record.tag)  # someone removed or moved the tag only
    return record


def base_record(target: BakeTarget, base: ImageInfo) -> BaseRecord:
    """What the state keeps of the base ``target`` is built on: its line (what it is a
    base of), the reference it was found under, when it was made and where it came from.
    A base's own labels win (``corral patch`` labels the bases it refreshes)."""
    spec = target.role.base
    if isinstance(spec, DebianBase):
        recipe = BaseRecipe.from_spec(spec)
        line, ref, source = recipe.line, recipe.tag, recipe.source
    elif isinstance(spec, ImageBase):
        line, ref, source = f"image:{spec.image}", spec.image, spec.image
    else:
        ref = _containerfile_base_tag(target, spec)[1]
        line, source = f"containerfile:{target.fleet}/{target.name}", spec.containerfile
    made = parse_time(base.created)
    return BaseRecord(
        fleet=target.fleet,
        image_id=base.id,
        digest=base.digest,
        line=base.labels.get(LABEL_BASE_LINE) or line,
        ref=ref,
        created_at=utc_text(made) if made else utc_now(),
        source=base.labels.get(LABEL_BASE_SOURCE) or source,
    )


def resolve_base(target: BakeTarget, engine: Engine, progress: Progress) -> ImageInfo:
    """The image a role is built on, made or found according to its ``base`` section."""
    base = target.role.base
    if isinstance(base, DebianBase):
        return ensure_base(engine, base, progress)
    if isinstance(base, ImageBase):
        found = engine.inspect_image(base.image)
        if found is None:
            raise BuildError(
                f"role {target.name}: base image {base.image} is not in the "
                "engine's storage (nothing can be pulled here; build or import "
                "it first)"
            )
        return found
    return _containerfile_base(target, base, engine, progress)


def _containerfile_base(
    target: BakeTarget, base: ContainerfileBase, engine: Engine, progress: Progress
) -> ImageInfo:
    digest, tag = _containerfile_base_tag(target, base)
    found = engine.inspect_image(tag)
    if found is not None:
        return found
    path = confined(target.root, base.containerfile, "base.containerfile")
    progress.step(target.name, f"building base from {base.containerfile}")
    return engine.build_image(
        path.parent,
        path,
        tag,
        {LABEL + "base-hash": digest},
        log=lambda line: progress.log(target.name, line),
        network=target.role.build.network,
    )


def _containerfile_base_tag(target: BakeTarget, base: ContainerfileBase) -> tuple[str, str]:
    """(hash, tag) of a Containerfile base: its folder (the build context) and the network.

    The folder is inside the spec's folder (``confined``), and hashing it refuses a symlink
    that leaves it: a base's build context never reaches a host file.
    """
    path = confined(target.root, base.containerfile, "base.containerfile")
    digest = combine([hash_tree(path.parent), f"network:{target.role.build.network}"])
    return digest, f"{image_repo(target.fleet, target.name)}-base:{digest[:16]}"


def role_content_hash(target: BakeTarget, base_id: str) -> str:
    """The hash of every input that shapes the role's image."""
    role = target.role
    section = role.model_dump(mode="json", by_alias=True)
    shaping = {
        "base": section["base"],
        "build": section["build"],
        "user": role.run.user,
        "workdir": role.run.workdir,
        "volumes": sorted(role.mounts.values()),
    }
    parts = [f"recipe:{IMAGE_RECIPE_VERSION}", f"spec:{hash_json(shaping)}", f"base:{base_id}"]
    parts += [
        f"copy:{hash_tree(confined(target.root, step.src, f'build.copy[{index}].src'))}"
        for index, step in enumerate(role.build.copy_)
    ]
    return combine(parts)


def _bake(
    target: BakeTarget,
    base: BaseRecord,
    content_hash: str,
    engine: Engine,
    state: State,
    progress: Progress,
    stopped: threading.Event | None = None,
) -> ImageRecord:
    fleet, name = target.fleet, target.name
    build = state.start_build(fleet, name, content_hash)
    version = image_version(build.number, content_hash)
    tag = f"{image_repo(fleet, name)}:{version}"
    stage_tag = f"{image_repo(fleet, name)}:building-{build.number}"
    progress.step(name, f"building {tag}")
    try:
        record, packages = _bake_steps(
            target,
            base.image_id,
            content_hash,
            engine,
            progress,
            version=version,
            tag=tag,
            stage_tag=stage_tag,
        )
    except BaseException as exc:
        engine_cleanup(engine, stage_tag, tag)
        interrupted = isinstance(exc, KeyboardInterrupt) or (stopped and stopped.is_set())
        status = "interrupted" if interrupted else "failed"
        state.fail_build(build.id, status, _error_text(exc))
        state.record_audit(
            fleet, "build", name, status, {"version": version, "error": _error_text(exc)}
        )
        raise
    with contextlib.suppress(CorralError):
        engine.untag_image(stage_tag)  # keeps the layers: the next build reuses them
    state.finish_build(build.id, record, base=base, packages=packages)
    state.record_audit(fleet, "build", name, "ok", {"version": version, "tag": tag})
    progress.step(name, f"built {tag}")
    return record


def _bake_steps(
    target: BakeTarget,
    base_id: str,
    content_hash: str,
    engine: Engine,
    progress: Progress,
    *,
    version: str,
    tag: str,
    stage_tag: str,
) -> tuple[ImageRecord, dict[str, str]]:
    """The image, and its package list (name to version) read from it after the build."""
    name, role = target.name, target.role
    with tempfile.TemporaryDirectory(prefix="corral-build-") as tmp:
        cfile = containerfile.stage_context(role, target.root, Path(tmp))
        stage_labels = _stage_labels(target.fleet, build_number=int(version.split("-")[0]))
        rendered = containerfile.render(role, base_id, stage_labels)
        cfile.write_text(rendered.text)
        staged = engine.build_image(
            Path(tmp),
            cfile,
            stage_tag,
            {},
            log=lambda line: progress.log(name, line),
            build_args=rendered.build_args,
            network=role.build.network,
        )
    packages, ssh_files = inventory(engine, staged.id)
    check_no_ssh(name, role, packages, ssh_files)
    labels = image_labels(target, content_hash, version, packages)
    with tempfile.TemporaryDirectory(prefix="corral-label-") as tmp:
        cfile = Path(tmp, "Containerfile")
        cfile.write_text(f"FROM {staged.id}\n")
        final = engine.build_image(Path(tmp), cfile, tag, labels)
    record = ImageRecord(
        fleet=target.fleet,
        role=name,
        number=int(version.split("-")[0]),
        content_hash=content_hash,
        version=version,
        tag=tag,
        image_id=final.id,
        digest=final.digest,
        built_at=labels[LABEL + "built-at"],
        git_commit=labels[LABEL + "git-commit"] or None,
        git_dirty=labels[LABEL + "git-dirty"] == "true",
        labels=labels,
        base_id=base_id,
    )
    return record, parse_packages(packages)


# SSH servers found by file, whatever installed them (a package, a copy, a source build).
SSH_BINARIES = tuple(
    f"{folder}/{name}"
    for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin")
    for name in ("sshd", "dropbear", "tinysshd")
)
_INVENTORY = (
    "dpkg-query -W -f '${Package}=${Version}\\n' 2>/dev/null; "
    f"for f in {' '.join(SSH_BINARIES)}; do "
    '[ -e "$f" ] && echo "file:$f"; done; true'
)


def inventory(engine: Engine, image_id: str) -> tuple[list[str], list[str]]:
    """(``name=version`` of every Debian package, SSH server binaries) in the image.

    Every corral image runs ``/bin/sh`` in its last build step, so failing to look
    inside is an error, never an empty (and falsely clean) answer.
    """
    try:
        out = engine.run_once(image_id, ["/bin/sh", "-c", _INVENTORY])
    except EngineError as exc:
        raise BuildError(f"cannot look inside the image to check for an SSH server: {exc}") from exc
    lines = [line.strip() for line in out.splitlines()]
    files = sorted(line.removeprefix("file:") for line in lines if line.startswith("file:"))
    packages = sorted(line for line in lines if "=" in line and not line.startswith("file:"))
    return packages, files


def check_no_ssh(name: str, role: Role, packages: list[str], files: Sequence[str] = ()) -> None:
    """Refuse an image that carries an SSH server unless the role relaxed lockdown."""
    found = [p for p in packages if p.split("=")[0] in SSH_SERVERS] + list(files)
    if found and not role.lockdown.allow_ssh:
        raise GateError(
            f"role {name}: the image contains an SSH server ({', '.join(found)}); "
            "remove it, or set lockdown.allow_ssh: true if you really mean it",
            role=name,
            packages=found,
        )


def image_labels(
    target: BakeTarget, content_hash: str, version: str, packages: list[str]
) -> dict[str, str]:
    git = git_info(target.root)
    section = target.role.model_dump(mode="json", by_alias=True)
    return {
        LABEL + "fleet": target.fleet,
        LABEL + "role": target.name,
        LABEL + "version": version,
        LABEL + "content-hash": content_hash,
        LABEL + "spec-hash": hash_json(section),
        LABEL + "git-commit": git.commit or "",
        LABEL + "git-dirty": "true" if git.dirty else "false",
        LABEL + "built-at": utc_now(),
        LABEL + "corral-version": __version__,
        LABEL + "packages": ",".join(packages),
        LABEL + "stage": "",  # the stage's label is inherited; this is no stage
        "org.opencontainers.image.version": version,
    }


def _stage_labels(fleet: str, build_number: int) -> dict[str, str]:
    return {LABEL + "fleet": fleet, LABEL + "stage": str(build_number)}


def sweep_stages(fleet: str, engine: Engine, state: State) -> None:
    """Mark builds of dead processes interrupted and untag what their builders left.

    A build killed with -9 cannot clean up: its podman build may even finish later and
    tag a ``building-N`` stage. Any stage whose build is not running is removed here.
    The engine is only searched when a dead build was found: most runs find none.
    """
    if state.sweep_stale_builds() == 0:
        return
    running = {(b.role, b.number) for b in state.builds(fleet, limit=1000) if b.status == "running"}
    for image in engine.list_images({LABEL + "fleet": fleet}):
        number = image.labels.get(LABEL + "stage", "")
        role = image.labels.get(LABEL + "role")
        stage_tags = [t for t in image.tags if ":building-" in t]
        if number and role is None and stage_tags:
            owner = stage_tags[0].split("/")[-1].split(":")[0]
            if (owner, int(number)) not in running:
                engine_cleanup(engine, *stage_tags)


def engine_cleanup(engine: Engine, *refs: str) -> None:
    """Remove temporary tags; a failure here must not hide the error that led here."""
    for ref in refs:
        with contextlib.suppress(CorralError):
            engine.remove_image(ref)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) or type(exc).__name__
