"""Views: each result shown for a person (rich) or for a script (stable JSON on stdout).

The JSON shapes are documented in docs/cli.md; scripts depend on them, so change them
only by adding fields.

Text that comes from a spec, the state database or an engine is never read as rich markup:
a fleet named "[/oops]" or a test message with brackets is shown as written. Data goes to
rich as ``Text`` (see ``styled`` and ``cells``); markup appears only in literals here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from corral.app import Revocation, Sbom, Validation
from corral.build import BuildResult
from corral.deploy.ancestry import ImageLine, ImagesReport, PackageReport
from corral.deploy.gc import Collected
from corral.deploy.orchestrate import DeployResult
from corral.deploy.plan import Plan, RolePlan, summarize
from corral.deploy.service import PlanResult
from corral.deploy.status import FleetStatus, HistoryEntry
from corral.deploy.volumes import VolumeList
from corral.errors import (
    BuildError,
    CorralError,
    DeployError,
    EngineError,
    LockedError,
    SpecError,
)
from corral.patch import PatchReport
from corral.state import AuditEntry, RevocationRecord
from corral.testing.suite import ALREADY_PASSED, KINDS, CoverageRow, RoleTestResult


def to_data(value: Any) -> Any:
    """Plain JSON-able data from dataclasses, mappings and sequences (a plan: its own
    documented form)."""
    if isinstance(value, Plan):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    return value


def print_json(console: Console, data: Any) -> None:
    """``data`` as indented JSON, written straight to the console's stream: rich's own
    ``print_json`` renders it token by token, 0.2 s for a 100-instance status."""
    text = json.dumps(to_data(data), sort_keys=True, indent=2, ensure_ascii=False)
    console.file.write(text + "\n")
    console.file.flush()


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with control characters written as escapes: a spec key such as "\\e]0;x\\a"
    must not reach the terminal as an escape sequence."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def say(console: Console, text: str) -> None:
    """One line of data, shown as written: no markup, no highlighting, no control codes."""
    console.print(Text(visible(text)), highlight=False)


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style`` then ``rest``, which is shown exactly as written (no markup)."""
    return Text.assemble((label, style), visible(rest))


def cells(*values: str | Text) -> list[Text]:
    """Table cells as ``Text``: rich would otherwise read markup in plain strings."""
    return [value if isinstance(value, Text) else Text(visible(str(value))) for value in values]


def show_error(console: Console, error: CorralError) -> None:
    """``error`` for a person: its message, then the log lines it carries."""
    if isinstance(error, SpecError):
        for diagnostic in error.diagnostics:
            console.print(styled("error", "red", f" {diagnostic}"), highlight=False)
        say(console, error.message)
        return
    console.print(styled("error:", "red", f" {error.message}"), highlight=False)
    if isinstance(error, LockedError):
        say(console, "retry when it is done, or give the command --wait SECONDS to wait for it")
    if isinstance(error, DeployError):
        for failure in error.failures:
            _show_failure(console, failure.message, failure.log, bool(failure.checks), False)
    if isinstance(error, DeployError | EngineError | BuildError):
        _show_log(console, error.log)


LOG_LINES = 15  # of each failing instance or test, shown under its reason


def show_reason(console: Console, failure: Mapping[str, Any]) -> None:
    """A stored failure (a release's, as data, whatever corral wrote it) as ``show_error``
    shows an error: each failure inside it (a role's failed health check, a smoke test's
    assertion...) under its message, then its own log lines."""
    for inner in failure.get("failures", []):
        if isinstance(inner, Mapping):
            log = [str(entry) for entry in inner.get("log", [])]
            _show_failure(console, str(inner.get("message") or ""), log, bool(inner.get("checks")))
    _show_log(console, [str(entry) for entry in failure.get("log", [])])


def _show_failure(
    console: Console, message: str, log: Sequence[str], checks: bool, messages: bool = True
) -> None:
    if messages and message:
        say(console, f"  {message}")
    for entry in shown_log(log, checks):
        say(console, f"    | {entry}")


def _show_log(console: Console, log: Sequence[str]) -> None:
    for entry in list(log)[-LOG_LINES:]:
        say(console, f"  | {entry}")


def shown_log(log: Sequence[str], checks: bool) -> list[str]:
    """The lines of a failure's ``log`` shown under it: the last LOG_LINES of each source.

    A smoke test's log (it has ``checks``) is ``source: line``, each failed test's whole
    text and then each instance's last lines; cutting the whole list to its last lines
    showed only the instances' logs and hid the assertion whenever they were long. Any
    other log (a failed health check's, one instance's) is cut to its last lines.
    """
    if not checks:
        return list(log[-LOG_LINES:])
    sources: dict[str, list[str]] = {}
    for entry in log:  # a test's name may hold ": ", but every line of it the same way
        sources.setdefault(entry.split(": ", 1)[0], []).append(entry)
    return [entry for lines in sources.values() for entry in lines[-LOG_LINES:]]


def show_validation(console: Console, result: Validation) -> None:
    for warning in result.warnings:
        console.print(styled("warning", "yellow", f" {warning}"), highlight=False)
    roles = ", ".join(result.spec.fleet.roles)
    summary = f": fleet {result.spec.fleet.fleet} ({roles})"
    console.print(styled("ok", "green", summary), highlight=False)


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
            *cells(r.role, Text(r.status, style=style), r.version, r.tag, f"{r.seconds:.1f}")
        )
    console.print(table)


def age(seconds: float | None) -> str:
    """``3d 4h``, ``5h 12m``, ``40m``: how old, in the two largest units."""
    if seconds is None:
        return "-"
    minutes = int(seconds) // 60
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins}m" if hours else f"{mins}m"


def show_images_report(console: Console, report: ImagesReport) -> None:
    show_images_lines(console, report.images)
    say(console, "")
    if not report.instances:
        say(console, f"no instance of fleet {report.fleet} is running")
        return
    table = Table(box=None)
    for column in ("INSTANCE", "IMAGE", "BASE", "BASE AGE", "BASE STATUS", "REVOKED"):
        table.add_column(column)
    for i in report.instances:
        line = i.image
        fresh = line.freshness if line else None
        base = fresh.base.image_id[:12] if fresh and fresh.base else "-"
        status = fresh.status if fresh else "unknown"
        table.add_row(
            *cells(
                i.name,
                line.image.version if line else i.image_id[:12],
                base,
                age(fresh.age_s if fresh else None),
                styled(status, "yellow" if status == "outdated" else ""),
                _revoked_text(line.revoked if line else None),
            )
        )
    console.print(table)
    if report.outdated:
        say(console, f"{len(report.outdated)} instance(s) run on an outdated base")


def show_images_lines(console: Console, lines: Sequence[ImageLine]) -> None:
    table = Table(box=None)
    for column in ("ROLE", "VERSION", "BUILT", "GIT", "IMAGE ID", "BASE", "BASE STATUS", "REVOKED"):
        table.add_column(column)
    for line in lines:
        r = line.image
        git = (r.git_commit or "-")[:10] + ("+dirty" if r.git_dirty else "")
        base = (r.base_id or "-")[:12]
        revoked = _revoked_text(line.revoked)
        table.add_row(
            *cells(
                r.role,
                r.version,
                r.built_at,
                git,
                r.image_id[:12],
                base,
                line.freshness.status,
                revoked,
            )
        )
    console.print(table)


def _revoked_text(record: RevocationRecord | None) -> str:
    if record is None:
        return ""
    return f"{record.kind} revoked: {record.reason}"


def show_revocation(console: Console, result: Revocation) -> None:
    undo = result.record.action == "undo"
    verb = "is fit again" if undo else "is revoked"
    if not result.changed:
        verb = "was revoked already"
    say(console, f"{result.kind} {result.name} {verb}: {result.record.reason}")
    if result.releases:
        say(console, "releases that ran it: " + ", ".join(f"r{n}" for n in result.releases))
    if result.kind == "base" and result.images:
        say(console, f"{len(result.images)} image(s) are built on it:")
        for image in result.images:
            say(console, f"  {image.tag}")


def show_carriers(console: Console, report: PackageReport) -> None:
    if not report.images:
        say(console, f"no image of fleet {report.fleet} holds package {report.package}")
        return
    table = Table(box=None)
    for column in ("ROLE", "IMAGE", report.package.upper(), "RUNNING INSTANCES"):
        table.add_column(column)
    for c in report.images:
        table.add_row(*cells(c.role, c.version, c.package_version, " ".join(c.instances) or "-"))
    console.print(table)


def show_sbom(console: Console, sbom: Sbom) -> None:
    say(console, f"# {sbom.fleet}/{sbom.role} {sbom.version} ({len(sbom.packages)} packages)")
    for name, version in sbom.packages:
        say(console, f"{name}\t{version}")


def show_audit(console: Console, entries: Sequence[AuditEntry]) -> None:
    table = Table(box=None)
    for column in ("WHEN (UTC)", "WHO", "ACTION", "TARGET", "OUTCOME", "DETAILS"):
        table.add_column(column)
    for e in entries:
        details = " ".join(f"{k}={v}" for k, v in e.details.items())
        table.add_row(*cells(e.at, e.user, e.action, e.target, e.outcome, details[:80]))
    console.print(table)


# -- deploy -------------------------------------------------------------------------------


def plan_lines(plan: Plan, unbuilt_volumes: Sequence[str] = ()) -> list[str]:
    """The plan in plain words, one line per change."""
    lines = []
    if plan.edge.blocked:  # first: a deploy of this plan is refused
        lines.append(f"REFUSED: a deploy would stop here: {plan.edge.blocked}")
    if plan.edge.action != "none":
        lines.append(f"edge: {plan.edge.action} ({plan.edge.reason})")
    # In the order the deploy goes (a role after the roles it is ``after``), then by name.
    order = {name: n for n, name in enumerate(name for wave in plan.waves for name in wave)}
    for rp in sorted(plan.roles, key=lambda rp: (order.get(rp.role, len(order)), rp.role)):
        head = f"{rp.role} ({rp.strategy}, {rp.image_version}, x{rp.replicas}):"
        changes = [f"  keep {name}" for name in rp.keep]
        changes += [f"  start {name}" for name in rp.new]
        changes += [f"  restart stand-by {name}" for name in rp.restart]
        changes += [f"  replace {c.instance}: {c.reason}" for c in rp.stop]
        changes += [f"  remove {c.instance}: {c.reason}" for c in rp.cleanup]
        changes += [f"  create volume {v}" for v in rp.new_volumes]
        lines += [head, *changes] if rp.changed else [f"{head} up to date"]
        lines += [outage] if (outage := unavailable_line(rp)) else []
    lines += [f"retire {c.instance}: {c.reason}" for c in plan.orphans]
    lines += [f"create volume {v} (for a role still to build)" for v in unbuilt_volumes]
    lines += data_lines(plan)
    touched = plan.volumes_touched + len(unbuilt_volumes)
    lines.append(
        f"touches {touched} volume{'s' if touched != 1 else ''} "
        "(volumes are never deleted by a deploy)"
    )
    return lines


def data_lines(plan: Plan) -> list[str]:
    """What the plan does to data, in words: retained volumes, moves, concerns."""
    lines = [f"volume {r.name}: retained, no longer used ({r.reason})" for r in plan.data.retained]
    lines += [f"note: {note}" for note in plan.data.notes]
    lines += [f"data guard: {c} (needs --yes)" for c in plan.data.concerns]
    return lines


def unavailable_line(rp: RolePlan) -> str | None:
    """How long a stop-first replacement will leave the role without an instance, if it will."""
    if not rp.interrupts:
        return None
    if rp.unavailable_s is None:
        return f"{rp.role}: stop-first, unavailable for an unknown time (never measured)"
    return f"{rp.role}: stop-first, about {rp.unavailable_s:.1f} s unavailable (last replacement)"


def show_plan(console: Console, result: PlanResult) -> None:
    for role in result.unbuilt:
        say(console, f"{role}: image not built for the current spec (corral build {role})")
    for line in plan_lines(result.plan, result.unbuilt_volumes):
        say(console, line)
    for volume in result.plan.backs_up:
        say(console, f"{volume}: backed up first (no verified backup young enough)")
    if result.settings_only:
        say(
            console,
            "settings: the release's recorded settings change (deploy.*, tests...);"
            f" a deploy records release r{result.plan.release}, replacing nothing",
        )
    verdict = "changes pending" if result.has_changes else "no changes"
    console.print(f"[bold]{verdict}[/bold]")


def plan_data(result: PlanResult) -> dict[str, Any]:
    return {
        "has_changes": result.has_changes,
        "settings_only": result.settings_only,
        "unbuilt": list(result.unbuilt),
        "volumes_touched": result.volumes_touched,
        "unbuilt_volumes": list(result.unbuilt_volumes),
        "plan": to_data(result.plan),
        "summary": dict(summarize(result.plan)),
    }


def show_deploy(console: Console, result: DeployResult) -> None:
    for note in result.notes:
        say(console, f"note: {note}")
    for kept in result.plan.data.retained:
        say(console, f"volume {kept.name}: retained, no longer used ({kept.reason})")
    if result.status == "unchanged":
        console.print("nothing to change: the fleet already runs the spec")
        return
    console.print(
        styled(
            f"release r{result.release} is live",
            "green",
            f" ({result.kind}, {result.seconds:.1f}s)",
        )
    )


def deploy_data(result: DeployResult) -> dict[str, Any]:
    data = to_data(result)
    data["summary"] = dict(summarize(result.plan))
    return dict(data)


def show_status(console: Console, status: FleetStatus) -> None:
    release = f"r{status.release}" if status.release else "none"
    say(console, f"fleet {status.fleet}: release {release}, edge {status.edge}")
    if any(role.instances for role in status.roles):
        _status_table(console, status)
    else:  # a new (or destroyed) fleet: a sentence, not an empty table's header
        say(console, "no instances" if status.release else "nothing deployed: run corral deploy")
    for role in status.roles:
        if role.url:
            say(console, f"{role.role}: {role.url}")
    if status.unfinished:
        console.print(
            f"{len(status.unfinished)} instance(s) of an unfinished release still "
            "run; `corral deploy` converges them",
            highlight=False,
        )
    for number in status.unfinished_releases:
        say(
            console,
            f"release r{number} is still deploying: a deploy runs now, or one was killed "
            "(`corral gc` or the next deploy marks it aborted)",
        )
    if status.leftovers:
        say(
            console,
            f"left by killed deploys: {', '.join(status.leftovers)}; `corral gc` removes them",
        )
    _show_supervision(console, status)


def _status_table(console: Console, status: FleetStatus) -> None:
    table = Table(box=None)
    for column in ("ROLE", "INSTANCE", "VERSION", "RELEASE", "STATE", "HEALTH", "AGE"):
        table.add_column(column, no_wrap=True)
    for role in status.roles:
        for i in role.instances:
            table.add_row(
                *cells(
                    role.role, i.name, i.version, f"r{i.release}", i.state, i.health, _age(i.age_s)
                )
            )
    console.print(table)


def _show_supervision(console: Console, status: FleetStatus) -> None:
    """What ``corral watch`` found: degraded roles, drift, the last burn."""
    for role in status.roles:
        if role.degraded is not None:
            say(console, f"role {role.role} is DEGRADED: {role.degraded}")
    for name, why in sorted(status.drift.items()):
        say(console, f"{name} drifted: {why}")
    burn = status.last_burn
    if burn is not None:
        say(console, f"last burn: {burn.instance} at {burn.at}: {burn.reason}")


def gc_data(result: Collected) -> dict[str, Any]:
    """``corral gc --json``: what was marked and removed, and the count removed."""
    return {**to_data(result), "removed": result.removed}


def show_gc(console: Console, result: Collected) -> None:
    """One line per thing done, then a summary; what failed is said, and retried next time."""
    for number in result.releases:
        say(console, f"release r{number}: marked aborted (its deploy process died)")
    for kind, names in (
        ("container", result.instances),
        ("probe container", result.probes),
        ("stored secret", result.secrets),
        ("test environment", result.test_environments),
    ):
        for name in names:
            say(console, f"removed {kind} {name}")
    for problem in result.failed:
        console.print(styled("could not remove", "yellow", f" {problem}; the next gc retries"))
    if not (result.releases or result.removed or result.failed):
        say(console, "nothing to clean up")
        return
    say(
        console,
        f"gc: removed {result.removed} object(s), marked {len(result.releases)} release(s) "
        "aborted; volumes and backups are never touched",
    )


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 3 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def show_history(console: Console, entries: Sequence[HistoryEntry]) -> None:
    table = Table(box=None)
    for column in ("RELEASE", "KIND", "STATUS", "WHEN (UTC)", "WHO", "CHANGES"):
        table.add_column(column)
    for e in entries:
        kind = f"{e.kind} to r{e.source}" if e.source else e.kind
        changes = "; ".join(e.changes) or "-"
        if e.message:
            changes += f" [{e.message}]"
        table.add_row(*cells(f"r{e.release}", kind, e.status, e.started_at, e.user, changes))
    console.print(table)


def show_release(console: Console, entry: HistoryEntry) -> None:
    """One release: its row, then why it ended as it did, in full."""
    show_history(console, [entry])
    if entry.message:
        say(console, f"why: {entry.message}")
    show_reason(console, entry.failure)


# -- tests --------------------------------------------------------------------------------


def show_test_results(console: Console, results: Sequence[RoleTestResult]) -> None:
    for r in results:
        style = {"passed": "green", "failed": "red"}.get(r.outcome, "dim")
        console.print(
            styled(f"{r.role}: {r.outcome}", style, f" ({r.image_version}, {r.seconds:.1f}s)"),
            highlight=False,
        )
        if r.outcome == ALREADY_PASSED:
            say(console, f"  {r.log_excerpt}")
        for check in r.checks:
            if check.outcome not in ("passed", "skipped"):
                say(console, f"  {check.outcome}: {check.name}: {check.message}")
        if r.outcome == "failed" and r.log_excerpt:
            for line in r.log_excerpt.splitlines()[-15:]:
                say(console, f"  | {line}")


def show_coverage(console: Console, rows: Sequence[CoverageRow]) -> None:
    table = Table(box=None)
    for column in ("ROLE", "IMAGE", "RESULT", *(k.upper() for k in KINDS), "AGE"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        age = _age(row.age_s) if row.age_s is not None else "-"
        table.add_row(
            *cells(
                row.role,
                row.image_version or "not built",
                row.outcome,
                *(row.cells[k] for k in KINDS),
                age,
            )
        )
    console.print(table)
    for row in rows:
        if row.reason is not None and row.image_version is not None:
            say(console, f"{row.role}: the gate refuses it: {row.reason}")
        if not row.has_own_tests:
            console.print(
                styled("warning", "yellow", f": role {row.role} has no tests of its own"),
                highlight=False,
            )


# -- backups ------------------------------------------------------------------------------


def show_backups(console: Console, records: Sequence[Any]) -> None:
    """One line per backup: volume (and the engine volume it was taken of: a restore
    makes a new one), snapshot, mode, when, bytes added, last drill."""
    if not records:
        console.print("no backups recorded", markup=False)
    for r in records:
        drill = f"verified {r.verify_result} {r.verified_at}" if r.verified_at else "not verified"
        gone = f"  pruned {r.pruned_at}" if r.pruned_at else ""
        console.print(
            f"{r.role}/{r.volume} ({r.engine_volume})  {r.snapshot_id[:8]}  {r.mode}  "
            f"{r.finished}  "
            f"+{r.bytes_added} B  {drill}{gone}",
            markup=False,
        )


def show_verified(console: Console, drills: Sequence[Any]) -> None:
    for d in drills:
        rest = f" {d.role}/{d.volume} {d.snapshot[:8]}: {d.detail}"
        console.print(styled("ok", "green", rest) if d.ok else styled("FAILED", "red", rest))


def show_pruned(console: Console, pruned: Sequence[Any]) -> None:
    for p in pruned:
        console.print(f"{p.volume}: kept {p.kept}, forgot {p.removed}", markup=False)


def show_restored(console: Console, done: Any) -> None:
    console.print(
        f"{done.role}/{done.volume}: snapshot {done.snapshot[:8]} restored into "
        f"{done.new_volume}; {done.retained_volume} is retained (kept, unused)",
        markup=False,
    )
    show_deploy(console, done.deploy)


def show_patch(console: Console, report: PatchReport) -> None:
    """The time-to-fix report: bases, packages changed, instances replaced, stages."""
    if report.status == "dry-run":
        for base in report.bases:
            what = f"refresh {base['tag']}"
            if base["bootstrap"]:
                what = f"bootstrap {base['tag']} anew, as it is built on a revoked base,"
            say(console, f"would {what} (roles built on it: {', '.join(base['roles'])})")
        for name, names in report.would_replace.items():
            running = ", ".join(names) or "no running instance"
            say(console, f"would rebuild {name} and replace: {running}")
        say(console, "(whether a package has a newer version is only known by refreshing)")
        return
    for base in report.bases:
        state = "refreshed" if base["refreshed"] else "no newer package"
        say(console, f"base {base['tag']}: {state}")
    for role in report.roles:
        say(console, f"{role.role}: {role.old_version or '-'} -> {role.new_version}")
        for name, (old, new) in role.packages.items():
            say(console, f"  {name} {old or '(none)'} -> {new or '(removed)'}")
        if role.retired or role.started:
            say(
                console, f"  replaced {', '.join(role.retired) or '-'} by {', '.join(role.started)}"
            )
    for verdict in report.canary:
        say(
            console,
            f"canary {verdict.role}: {'passed' if verdict.passed else 'failed'} ({verdict.why})",
        )
    table = Table(box=None)
    table.add_column("STAGE", no_wrap=True)
    table.add_column("SECONDS", justify="right", no_wrap=True)
    for stage, seconds in report.stages:
        table.add_row(*cells(stage, f"{seconds:.2f}"))
    table.add_row(*cells("total", f"{report.total:.2f}"))
    console.print(table)
    if report.status == "patched":
        console.print(styled(f"release r{report.release} is live", "green", " (patched)"))
    else:
        say(console, "nothing to change: the fleet already runs the newest base")


# -- volumes ------------------------------------------------------------------------------


def show_volumes(console: Console, listing: VolumeList) -> None:
    """``corral volumes``: one row per volume; the problems go to stderr (the command)."""
    table = Table(box=None)
    columns = ("ROLE", "VOLUME", "ENGINE NAME", "STATUS", "SIZE", "USED BY")
    for column in (*columns, "LAST BACKUP", "VERIFIED"):
        table.add_column(column, no_wrap=True)
    for v in listing.volumes:
        table.add_row(
            *cells(
                v.role or "?",
                v.volume or "?",
                v.name,
                v.status,
                _size(v.size_bytes),
                ", ".join(v.used_by) or "-",
                _when(v.last_backup_at, v.backup_age_s),
                _when(v.verified_backup_at, v.verified_age_s),
            )
        )
    console.print(table)
    for v in listing.volumes:
        if v.retained_reason:
            say(console, f"{v.name}: retained, no longer used ({v.retained_reason})")
    if not listing.volumes:
        say(console, f"fleet {listing.fleet} has no volumes")


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _when(at: str | None, age_s: int | None) -> str:
    if at is None:
        return "never"
    return f"{at} ({_age(age_s)} ago)" if age_s is not None else at
