"""corral's library API: what the CLI calls, and what scripts and tests can call directly.

Each function takes the spec path and returns plain values; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.build import BuildResult, build_fleet
from corral.build.bake import LABEL
from corral.engines import Engine, get_engine
from corral.errors import Diagnostic, UsageError
from corral.progress import Progress
from corral.spec import LoadedSpec, load_spec
from corral.state import AuditEntry, ImageRecord, State


@dataclass(frozen=True)
class Validation:
    spec: LoadedSpec
    warnings: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class Sbom:
    fleet: str
    role: str
    version: str
    image_id: str
    packages: tuple[tuple[str, str], ...]  # (name, version)


def validate(path: Path) -> Validation:
    """Load and check the spec at ``path``; warnings are advice, not errors.

    Raises:
        SpecError: with every problem found, each located by file:line:column.
    """
    spec = load_spec(path)
    warnings = [
        Diagnostic(str(spec.path), 0, 0, f"roles.{name}.tests", "this role has no tests of its own")
        for name, role in spec.fleet.roles.items()
        if not role.tests
    ]
    return Validation(spec, tuple(warnings))


@contextmanager
def open_state(spec: LoadedSpec) -> Iterator[State]:
    state = State.open(spec.state_path)
    try:
        yield state
    finally:
        state.close()


def build(
    path: Path,
    roles: Sequence[str] = (),
    force: bool = False,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> list[BuildResult]:
    """Bake the images of ``roles`` (default: all) of the spec at ``path``."""
    spec = load_spec(path)
    engine = engine or get_engine()
    with open_state(spec) as state, state.lock("build", wait=600, purpose="build"):
        return build_fleet(spec, engine, state, roles, progress, force)


def images(path: Path, role: str | None = None) -> list[ImageRecord]:
    """Every image built for the fleet (or one role), oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.images(spec.fleet.fleet, role)


def sbom(path: Path, role: str, version: str | None = None) -> Sbom:
    """The Debian packages (name, version) in a role's latest (or given) image.

    Raises:
        UsageError: the role has no image yet, or no image with that version.
    """
    records = images(path, role)
    if version is not None:
        records = [r for r in records if r.version == version]
    if not records:
        what = f"version {version} of role {role}" if version else f"role {role}"
        raise UsageError(f"no image of {what} has been built; run: corral build {role}")
    record = records[-1]
    listed = record.labels.get(LABEL + "packages", "")
    packages = tuple(tuple(p.split("=", 1)) for p in listed.split(",") if "=" in p)
    return Sbom(
        record.fleet,
        role,
        record.version,
        record.image_id,
        tuple((name, ver) for name, ver in packages),
    )


def audit(path: Path, limit: int = 100) -> list[AuditEntry]:
    """The newest ``limit`` audit entries of the fleet, oldest first."""
    spec = load_spec(path)
    with open_state(spec) as state:
        return state.audit_log(spec.fleet.fleet, limit=limit)
