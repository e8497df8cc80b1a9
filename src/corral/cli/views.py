"""Views: each result shown for a person (rich) or for a script (stable JSON on stdout).

The JSON shapes are documented in docs/cli.md; scripts depend on them, so change them
only by adding fields.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from corral.app import Sbom, Validation
from corral.build import BuildResult
from corral.errors import CorralError, SpecError
from corral.state import AuditEntry, ImageRecord


def to_data(value: Any) -> Any:
    """Plain JSON-able data from dataclasses, mappings and sequences."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    return value


def print_json(console: Console, data: Any) -> None:
    console.print_json(json.dumps(to_data(data), sort_keys=True))


def show_error(console: Console, error: CorralError) -> None:
    if isinstance(error, SpecError):
        for diagnostic in error.diagnostics:
            console.print(f"[red]error[/red] {diagnostic}", highlight=False)
        console.print(error.message, highlight=False)
        return
    console.print(f"[red]error:[/red] {error.message}", highlight=False)
    for line in error.details.get("log", [])[-15:]:
        console.print(f"  | {line}", highlight=False, markup=False)


def show_validation(console: Console, result: Validation) -> None:
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    roles = ", ".join(result.spec.fleet.roles)
    console.print(f"[green]ok[/green]: fleet {result.spec.fleet.fleet} ({roles})", highlight=False)


def validation_data(result: Validation) -> dict[str, Any]:
    return {
        "ok": True,
        "fleet": result.spec.fleet.fleet,
        "roles": list(result.spec.fleet.roles),
        "warnings": [w.to_dict() for w in result.warnings],
    }


def show_builds(console: Console, results: Sequence[BuildResult]) -> None:
    table = Table(box=None)
    for column in ("ROLE", "STATUS", "VERSION", "IMAGE", "SECONDS"):
        table.add_column(column)
    for r in results:
        style = "green" if r.status == "built" else "dim"
        table.add_row(
            r.role, f"[{style}]{r.status}[/{style}]", r.version, r.tag, f"{r.seconds:.1f}"
        )
    console.print(table)


def show_images(console: Console, records: Sequence[ImageRecord]) -> None:
    table = Table(box=None)
    for column in ("ROLE", "VERSION", "BUILT", "GIT", "IMAGE ID"):
        table.add_column(column)
    for r in records:
        git = (r.git_commit or "-")[:10] + ("+dirty" if r.git_dirty else "")
        table.add_row(r.role, r.version, r.built_at, git, r.image_id[:12])
    console.print(table)


def show_sbom(console: Console, sbom: Sbom) -> None:
    console.print(
        f"# {sbom.fleet}/{sbom.role} {sbom.version} ({len(sbom.packages)} packages)",
        highlight=False,
        markup=False,
    )
    for name, version in sbom.packages:
        console.print(f"{name}\t{version}", highlight=False, markup=False)


def show_audit(console: Console, entries: Sequence[AuditEntry]) -> None:
    table = Table(box=None)
    for column in ("WHEN (UTC)", "WHO", "ACTION", "TARGET", "OUTCOME", "DETAILS"):
        table.add_column(column)
    for e in entries:
        details = " ".join(f"{k}={v}" for k, v in e.details.items())
        table.add_row(e.at, e.user, e.action, e.target, e.outcome, details[:80])
    console.print(table)
