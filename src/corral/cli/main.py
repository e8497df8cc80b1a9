"""The ``corral`` command. Each command parses, calls one library function, shows the result.

Exit codes: ``corral.cli.exitcodes`` (and docs/cli.md). This module is the one place that
turns exceptions into a message and an exit code.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from corral import __version__, app
from corral import patch as lane
from corral.build.refresh import check_archives
from corral.cli import views
from corral.cli.exitcodes import ExitCode, for_error
from corral.cli.params import PACKAGE, ROLE, Count, Duration, Seconds, SpecFile, WebhookURL, Words
from corral.cli.progress import ConsoleProgress
from corral.deploy.breakglass import SHELL, BreakGlass
from corral.deploy.chaos import Chaos
from corral.deploy.metrics import parse_address
from corral.errors import CorralError, UsageError
from corral.hostfiles import open_private, private_dir
from corral.scrub import ScrubbedStream, Scrubber
from corral.testing import suite

INTERRUPTED = "interrupted: a build keeps nothing half-done; the next deploy finishes a deploy's"
DEBUG_LOG = Path.home() / ".cache" / "corral" / "debug.log"


@dataclass
class Options:
    file: Path = Path("corral.yaml")
    json: bool = False
    verbose: bool = False
    # Every line printed goes through it: no value of the fleet's secrets reaches a screen.
    scrubber: Scrubber = field(default_factory=Scrubber)

    @property
    def out(self) -> Console:
        # Piped output is not cut to 80 columns: tables stay whole for grep and logs.
        width = None if sys.stdout.isatty() else 200
        stream = ScrubbedStream(sys.stdout, self.scrubber)
        return Console(file=stream, highlight=False, soft_wrap=True, width=width)

    @property
    def err(self) -> Console:
        stream = ScrubbedStream(sys.stderr, self.scrubber)
        return Console(file=stream, highlight=False, soft_wrap=True)

    def emit(self, data: Any, show: Callable[[Console], None]) -> None:
        """The result as JSON on stdout for scripts (--json), or as the human view."""
        if self.json:
            views.print_json(self.out, data)
        else:
            show(self.out)


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """-f, --json and -v, accepted before or after the command name."""

    def wrapper(
        ctx: click.Context,
        /,
        file: Path | None,
        as_json: bool | None,
        verbose: bool | None,
        **kwargs: Any,
    ) -> Any:
        opts: Options = ctx.ensure_object(Options)
        opts.file = file or opts.file
        opts.json = bool(as_json) or opts.json
        opts.verbose = bool(verbose) or opts.verbose
        opts.scrubber = app.output_scrubber(opts.file)
        try:
            return command(opts, **kwargs)
        except Exception as exc:
            _scrub_error(exc, opts.scrubber)  # main() prints it, and its details (--json)
            raise

    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    decorated = click.pass_context(wrapper)
    for option in (
        click.option("-v", "--verbose", is_flag=True, default=None, help="Show full output."),
        click.option(
            "--json", "as_json", is_flag=True, default=None, help="Print results as JSON on stdout."
        ),
        click.option(
            "-f",
            "--file",
            "file",
            type=SpecFile(),
            default=None,
            help="The fleet spec (default: ./corral.yaml).",
        ),
    ):
        decorated = option(decorated)
    return decorated


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-f",
    "--file",
    "file",
    type=SpecFile(),
    default="corral.yaml",
    show_default=True,
    help="The fleet spec.",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Show full build output.")
@click.version_option(__version__, prog_name="corral")
@click.pass_context
def cli(ctx: click.Context, file: Path, as_json: bool, verbose: bool) -> None:
    """corral: bake versioned images, test them, replace instances, never patch."""
    ctx.obj = Options(file=file, json=as_json, verbose=verbose)


@cli.command()
@common_options
def validate(opts: Options) -> None:
    """Check the fleet spec; exit 0 when valid, 2 when not."""
    result = app.validate(opts.file)
    opts.emit(views.validation_data(result), lambda _: views.show_validation(opts.err, result))


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@click.option("--force", is_flag=True, help="Rebuild even when nothing changed.")
@common_options
def build(opts: Options, roles: tuple[str, ...], force: bool) -> None:
    """Bake versioned images for ROLES (default: every role)."""
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        results = app.build(opts.file, roles, force=force, progress=progress)
    opts.emit({"builds": results}, lambda out: views.show_builds(out, results))


@cli.command()
@click.argument("role", required=False, type=ROLE)
@common_options
def images(opts: Options, role: str | None) -> None:
    """List the fleet's images and running instances, each with its base: up to date or
    outdated against the newest base, and how old it is."""
    report = app.images_report(opts.file, role)
    opts.emit(report.to_dict(), lambda out: views.show_images_report(out, report))


@cli.command()
@click.argument("target", type=Words(300))
@click.option("--reason", required=True, type=Words(500), help="Why (goes to the audit log).")
@click.option("--undo", is_flag=True, help="Declare it fit again (audited too).")
@common_options
def revoke(opts: Options, target: str, reason: str, undo: bool) -> None:
    """Mark an image (tag, version or id) or a base (reference or id) unfit: deploys and
    rollbacks refuse to start it, or anything built on it."""
    result = app.revoke(opts.file, target, reason, undo=undo)
    opts.emit(result.to_dict(), lambda out: views.show_revocation(out, result))


@cli.command()
@click.argument("role", required=False, type=ROLE)
@click.option(
    "--version",
    "version",
    default=None,
    type=Words(100),
    help="An image version (default: latest).",
)
@click.option("--package", default=None, type=PACKAGE, help="Who carries this package?")
@click.option("--image", default=None, type=Words(300), help="An image: tag, version or id.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["list", "cyclonedx"]),
    default="list",
    show_default=True,
    help="cyclonedx: a CycloneDX 1.6 JSON SBOM on stdout.",
)
@common_options
def sbom(
    opts: Options,
    role: str | None,
    version: str | None,
    package: str | None,
    image: str | None,
    fmt: str,
) -> None:
    """The Debian packages of ROLE's image; --package: which images and instances carry
    one; --format cyclonedx: a standard SBOM (of an image, or of the active release)."""
    if package is not None:
        if role or version or image or fmt != "list":
            raise click.UsageError("--package takes no ROLE, --version, --image or --format")
        found = app.sbom_package(opts.file, package)
        opts.emit(found.to_dict(), lambda out: views.show_carriers(out, found))
    elif fmt == "cyclonedx":
        if version:
            raise click.UsageError("--format cyclonedx names an image with --image, not --version")
        click.echo(opts.scrubber.values(app.sbom_cyclonedx(opts.file, role, image)))
    else:
        if role is None or image is not None:
            raise click.UsageError("name a ROLE (--image goes with --format cyclonedx)")
        result = app.sbom(opts.file, role, version)
        opts.emit(result, lambda out: views.show_sbom(out, result))


@cli.command()
@click.option("--limit", default=100, show_default=True, type=Count(1, 100000))
@common_options
def audit(opts: Options, limit: int) -> None:
    """Show the audit trail: who did what, when, and how it ended."""
    entries = app.audit(opts.file, limit)
    opts.emit({"audit": entries}, lambda out: views.show_audit(out, entries))


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@common_options
def plan(opts: Options, roles: tuple[str, ...]) -> int:
    """Show what deploy would change; exit 0 if nothing, 3 if something would."""
    result = app.plan(opts.file, roles)
    opts.emit(views.plan_data(result), lambda out: views.show_plan(out, result))
    return ExitCode.CHANGES if result.has_changes else ExitCode.OK


wait_option = click.option(
    "--wait",
    default=0.0,
    show_default=True,
    type=Seconds(0, 3600),
    help="Seconds to wait for another deploy (or edge replacement) to finish.",
)


def skip_tests_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--skip-tests and --reason: deploying untested images is possible, and audited."""
    command = click.option(
        "--reason",
        default=None,
        type=Words(500),
        help="Why the test gate is skipped (needed with --skip-tests).",
    )(command)
    return click.option(
        "--skip-tests",
        is_flag=True,
        help="Skip the test gate and the smoke test: images without a passing test record"
        " go too (audited with the reason).",
    )(command)


def _skip_reason(skip_tests: bool, reason: str | None) -> str | None:
    if skip_tests and not (reason or "").strip():
        raise click.UsageError('--skip-tests needs --reason "..." (it goes to the audit log)')
    return reason.strip() if skip_tests and reason else None


yes_option = click.option(
    "--yes",
    is_flag=True,
    help="Go ahead when the plan cuts data off from its role (a role with data shrunk to 0 "
    "replicas or removed, a volume going to another role); asked on a terminal otherwise.",
)


def _approver(opts: Options, yes: bool) -> Callable[[Sequence[str]], bool]:
    """The data guard's question: --yes answers it; a terminal is asked; else it refuses."""

    def approve(concerns: Sequence[str]) -> bool:
        if yes:
            return True
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            return False
        for concern in concerns:
            opts.err.print(f"data: {concern}", markup=False)
        return click.confirm("Go ahead (no volume is deleted)?", err=True)

    return approve


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@wait_option
@skip_tests_options
@yes_option
@common_options
def deploy(
    opts: Options,
    roles: tuple[str, ...],
    wait: float,
    skip_tests: bool,
    reason: str | None,
    yes: bool,
) -> None:
    """Build what changed, check the test gate, replace instances, smoke-test the edge."""
    skip = _skip_reason(skip_tests, reason)
    approve = _approver(opts, yes)
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        result = app.deploy(
            opts.file, roles, progress=progress, wait=wait, skip_tests=skip, approve=approve
        )
    opts.emit(views.deploy_data(result), lambda out: views.show_deploy(out, result))


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@click.option(
    "--dry-run", is_flag=True, help="Say what would be rebuilt and replaced; change nothing."
)
@click.option(
    "--watch",
    "watch_s",
    default=10.0,
    show_default=True,
    type=Seconds(0, 3600),
    help="Seconds the canary takes its share of requests before the rest is replaced.",
)
@click.option(
    "--archive",
    "archives",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local folder with a flat Debian archive (a Packages index) to upgrade from too.",
)
@click.option(
    "--no-default-archives",
    is_flag=True,
    help="Upgrade from the --archive folders only, not the base's own archives.",
)
@wait_option
@common_options
def patch(
    opts: Options,
    roles: tuple[str, ...],
    dry_run: bool,
    watch_s: float,
    archives: tuple[Path, ...],
    no_default_archives: bool,
    wait: float,
) -> None:
    """Refresh the Debian base, rebuild, test and canary-deploy the roles built on it."""
    options = lane.Options(
        archives=tuple(check_archives(archives)),
        default_archives=not no_default_archives,
        watch=watch_s,
    )
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        report = app.patch(opts.file, roles, options, dry_run, progress=progress, wait=wait)
    opts.emit(report.to_dict(), lambda out: views.show_patch(out, report))


@cli.command("test")
@click.argument("roles", nargs=-1, type=ROLE)
@click.option("--again", is_flag=True, help="Test even images that already passed.")
@click.option("--report", is_flag=True, help="Show the coverage matrix instead of testing.")
@click.option(
    "--per-test-timeout",
    default=60.0,
    show_default=True,
    type=Seconds(1, 3600),
    help="Seconds one test may take.",
)
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=Seconds(5, 86400),
    help="Seconds one role's test files may take in all.",
)
@common_options
def test_command(
    opts: Options,
    roles: tuple[str, ...],
    again: bool,
    report: bool,
    per_test_timeout: float,
    timeout: float,
) -> int:
    """Test the images that would be deployed, in a throwaway environment."""
    if report:
        rows = app.coverage_report(opts.file)
        opts.emit({"roles": rows}, lambda out: views.show_coverage(out, rows))
        return ExitCode.OK
    timeouts = suite.Timeouts(per_test=per_test_timeout, total=timeout)
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        results = app.run_tests(opts.file, roles, again, progress, timeouts)
    opts.emit({"results": results}, lambda out: views.show_test_results(out, results))
    return ExitCode.FAILED if any(r.outcome == "failed" for r in results) else ExitCode.OK


@cli.command()
@click.option(
    "--to",
    "to",
    type=Count(1, 10**9),
    default=None,
    metavar="N",
    help="Release number (default: previous).",
)
@wait_option
@skip_tests_options
@yes_option
@common_options
def rollback(
    opts: Options, to: int | None, wait: float, skip_tests: bool, reason: str | None, yes: bool
) -> None:
    """Deploy an earlier release's images and configuration again."""
    skip = _skip_reason(skip_tests, reason)
    approve = _approver(opts, yes)
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        result = app.rollback(
            opts.file, to, progress=progress, wait=wait, skip_tests=skip, approve=approve
        )
    opts.emit(views.deploy_data(result), lambda out: views.show_deploy(out, result))


@cli.command()
@click.option(
    "--drift",
    is_flag=True,
    help="Also inspect each instance for drift from its release (one engine read each).",
)
@common_options
def status(opts: Options, drift: bool) -> int:
    """Roles, instances, versions, health and the edge URL of each public role; exits 1
    when the edge is not running, a role has fewer instances serving than its replicas,
    is degraded, or (--drift) an instance drifted from its release."""
    result = app.status(opts.file, drift=drift)
    problems = result.problems()
    data = {**views.to_data(result), "problems": list(problems)}
    opts.emit(data, lambda out: views.show_status(out, result))
    for problem in problems:
        opts.err.print(f"unwell: {problem}")
    return 1 if problems else 0


@cli.command()
@wait_option
@common_options
def gc(opts: Options, wait: float) -> int:
    """Remove what killed deploys and test runs left; never a volume or a backup."""
    result = app.gc(opts.file, wait=wait)
    opts.emit(views.gc_data(result), lambda out: views.show_gc(out, result))
    return 1 if result.failed else 0


@cli.command()
@common_options
def reconcile(opts: Options) -> int:
    """One pass of the watcher: replace dead, drifted or burned instances, remove orphans."""
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        result = app.reconcile(opts.file, progress=progress)
    opts.emit(result.to_dict(), lambda out: _show_pass(out, result))
    return 0


def _show_pass(out: Console, result: app.Reconciled) -> None:
    for burn in result.burns:
        out.print(f"burned {burn.instance}: {burn.reason}")
    for name in result.started:
        out.print(f"started {name}")
    out.print(f"{result.status}{': ' + result.message if result.message else ''}")


@cli.command()
@click.option(
    "--interval", default=2.0, show_default=True, type=Seconds(0.2, 3600), help="Between passes."
)
@click.option("--passes", default=None, type=Count(1, 10**9), help="Stop after this many.")
@click.option(
    "--diff-interval",
    default=30.0,
    show_default=True,
    type=Seconds(0, 86400),
    help="Between diffs of the instances' root filesystems.",
)
@click.option(
    "--metrics",
    "metrics",
    default=None,
    metavar="ADDR:PORT",
    help="Serve /metrics in Prometheus' text format there (e.g. 127.0.0.1:9464).",
)
@click.option(
    "--alert-webhook",
    default=None,
    envvar="CORRAL_ALERT_WEBHOOK",
    type=WebhookURL(),
    help="POST a JSON alert here when a role is degraded or recovers "
    "(better from $CORRAL_ALERT_WEBHOOK: a URL with a token is a secret, and argv is not).",
)
@common_options
def watch(
    opts: Options,
    interval: float,
    passes: int | None,
    diff_interval: float,
    alert_webhook: str | None,
    metrics: str | None,
) -> int:
    """Reconcile the live fleet towards its active release, until interrupted."""
    out = opts.err
    where = parse_address(metrics) if metrics is not None else None

    def failed(exc: Exception, delay: float) -> None:
        out.print(f"reconcile failed: {exc}; next pass in {delay:g}s")

    def alerted(alert: app.Alert) -> None:
        out.print(alert.line(), highlight=False)

    def passed(result: app.Reconciled) -> None:
        if result.status == "converged" or opts.verbose:
            _show_pass(out, result)

    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        app.watch(
            opts.file,
            interval,
            passes,
            diff_interval,
            progress,
            on_pass=passed,
            on_failure=failed,
            metrics=where,
            on_alert=alerted,
            webhook=alert_webhook,
        )
    return 0


@cli.command("break-glass")
@click.argument("instance", type=Words(200))
@click.option("--reason", required=True, type=Words(500), help="Why (goes to the audit trail).")
@click.option(
    "--time-limit",
    default="15m",
    show_default=True,
    type=Duration(1, 4 * 3600),
    help="The session is cut after this long (90s, 15m, 1h).",
)
@click.option(
    "--command",
    "command",
    default=None,
    type=Words(2000),
    help="Run this program (words split as a shell would, run as an argv) instead of /bin/sh.",
)
@common_options
def break_glass(
    opts: Options, instance: str, reason: str, time_limit: float, command: str | None
) -> int:
    """Open an audited shell in a live INSTANCE; it is burned and replaced afterwards,
    whether anything changed or not. Exits 1 if the replacement is not done yet."""
    argv = shlex.split(command) if command is not None else None
    if argv == []:
        raise click.UsageError("--command names no program")
    opts.err.print(
        f"break-glass: {instance} is tainted and will be replaced when the session ends "
        f"(at the latest in {time_limit:g}s); this session is in the audit trail",
        markup=False,
    )
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        result = app.break_glass(
            opts.file,
            instance,
            reason,
            time_limit,
            command=argv or SHELL,
            tty=sys.stdin.isatty() and sys.stdout.isatty(),
            progress=progress,
        )
    opts.emit(result.to_dict(), lambda out: _show_break_glass(out, result))
    return 0 if result.replaced else 1


def _show_break_glass(out: Console, result: BreakGlass) -> None:
    ended = "cut at its time limit" if result.status is None else f"ended ({result.status})"
    out.print(f"session in {result.instance} {ended} after {result.seconds:.1f}s", markup=False)
    repair = result.repair
    ours = repair is not None and bool(repair.burns or repair.started)
    if repair is not None and (ours or not result.replaced):
        _show_pass(out, repair)
    # A pass of its own that found nothing to do: the watcher's had replaced it already.
    by = "" if ours else " (by another pass: corral watch)"
    out.print(
        f"{result.instance} replaced{by}" if result.replaced else f"not replaced: {result.message}",
        markup=False,
    )


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@click.option(
    "--interval", default=5.0, show_default=True, type=Seconds(0.2, 3600), help="Between kills."
)
@click.option(
    "--duration", default=60.0, show_default=True, type=Seconds(0, 86400), help="How long."
)
@click.option(
    "--seed",
    default=None,
    type=Count(0, 2**63 - 1),
    help="Makes the choices repeatable (default: a random one, printed).",
)
@click.option(
    "--drain-first",
    is_flag=True,
    help="Take each instance out of the edge (its requests finish) before killing it.",
)
@common_options
def chaos(
    opts: Options,
    roles: tuple[str, ...],
    interval: float,
    duration: float,
    seed: int | None,
    drain_first: bool,
) -> int:
    """Kill random instances of ROLES (default: all) every --interval for --duration,
    never leaving a role fewer than replicas - max_unavailable healthy."""
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    opts.err.print(f"chaos: seed {seed}", markup=False)

    def ticked(tick: int, victim: tuple[str, str] | None) -> None:
        what = f"killing {victim[1]} ({victim[0]})" if victim else "nothing to spare"
        opts.err.print(f"tick {tick}: {what}", markup=False)

    result = app.chaos(opts.file, roles, interval, duration, seed, drain_first, on_tick=ticked)
    opts.emit(result.to_dict(), lambda out: _show_chaos(out, result))
    return 1 if result.errors else 0


def _show_chaos(out: Console, result: Chaos) -> None:
    for error in result.errors:
        out.print(f"failed: {error}", markup=False)
    out.print(
        f"{len(result.kills)} kill(s) in {result.ticks} tick(s), {len(result.spared)} spared "
        f"(seed {result.seed})",
        markup=False,
    )


@cli.command()
@click.option("--limit", default=50, show_default=True, type=Count(1, 100000))
@click.option(
    "--release",
    type=Count(1, 10**9),
    default=None,
    help="Show only this release, with why it failed in full.",
)
@common_options
def history(opts: Options, limit: int, release: int | None) -> None:
    """Releases, newest last, and what each changed."""
    entries = app.history(opts.file, limit, release)
    if release is not None:
        opts.emit({"releases": entries}, lambda out: views.show_release(out, entries[0]))
        return
    opts.emit({"releases": entries}, lambda out: views.show_history(out, entries))


@cli.command()
@click.argument("names", nargs=-1, type=Words(200))
@click.option("--prune", is_flag=True, help="Apply retention (needs the prune credential).")
@click.option("--list", "listing", is_flag=True, help="List the recorded backups.")
@wait_option
@common_options
def backup(opts: Options, names: tuple[str, ...], prune: bool, listing: bool, wait: float) -> int:
    """Snapshot volumes (ROLE, ROLE/VOLUME or an engine volume; default: all) into the
    repository through corral's append-only server. `corral backup verify [NAMES]` runs
    restore drills instead."""
    if listing:
        records = app.backups_of(opts.file)
        opts.emit({"backups": records}, lambda out: views.show_backups(out, records))
        return ExitCode.OK
    if prune:
        pruned = app.backup_prune(opts.file, wait=wait)
        opts.emit({"pruned": pruned}, lambda out: views.show_pruned(out, pruned))
        return ExitCode.OK
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        if names[:1] == ("verify",):
            drills = app.backup_verify(opts.file, names[1:], progress=progress, wait=wait)
            opts.emit({"verified": drills}, lambda out: views.show_verified(out, drills))
            return ExitCode.OK if all(d.ok for d in drills) else ExitCode.FAILED
        made = app.backup(opts.file, names, progress=progress, wait=wait)
    opts.emit({"backups": made}, lambda out: views.show_backups(out, made))
    return ExitCode.OK


@cli.command()
@click.argument("volume", metavar="ROLE/VOLUME", type=Words(200))
@click.option(
    "--snapshot", default=None, type=Words(64), help="Snapshot id or its start (default: newest)."
)
@wait_option
@skip_tests_options
@common_options
def restore(
    opts: Options,
    volume: str,
    snapshot: str | None,
    wait: float,
    skip_tests: bool,
    reason: str | None,
) -> None:
    """Restore a snapshot into a NEW volume and switch the role to it by a deploy; the old
    volume is kept (retained), and a rollback goes back to it."""
    skip = _skip_reason(skip_tests, reason)
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        done = app.restore(opts.file, volume, snapshot, progress, wait, skip_tests=skip)
    data = {
        "role": done.role,
        "volume": done.volume,
        "snapshot": done.snapshot,
        "new_volume": done.new_volume,
        "retained_volume": done.retained_volume,
        "deploy": views.deploy_data(done.deploy),
    }
    opts.emit(data, lambda out: views.show_restored(out, done))


@cli.command()
@common_options
def volumes(opts: Options) -> int:
    """The fleet's data volumes: size, users, last backup and verified restore; exits 1
    when one has no verified backup younger than backup.max_age, or has gone missing."""
    listing = app.volumes(opts.file)
    problems = listing.problems()
    data = {**views.to_data(listing), "problems": list(problems)}
    opts.emit(data, lambda out: views.show_volumes(out, listing))
    for problem in problems:
        opts.err.print(f"warning: {problem}", markup=False)
    return ExitCode.FAILED if problems else ExitCode.OK


@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask before removing the instances.")
@click.option(
    "--delete-data",
    "delete_data",
    multiple=True,
    type=Words(200),
    metavar="VOLUME",
    help="Also delete this data volume (its engine name, as `corral volumes` shows it); "
    "repeat for each. Needs a verified backup younger than backup.max_age.",
)
@click.option(
    "--confirm",
    "confirm",
    multiple=True,
    type=Words(200),
    metavar="VOLUME",
    help="Confirm the deletion of VOLUME without a terminal; repeat for each.",
)
@click.option(
    "--no-backup-check",
    "no_backup_check",
    is_flag=True,
    help="Delete the named volumes without a recent verified backup (needs --reason).",
)
@click.option(
    "--reason", default=None, type=Words(500), help="Why (with --no-backup-check; audited)."
)
@common_options
def destroy(
    opts: Options,
    yes: bool,
    delete_data: tuple[str, ...],
    confirm: tuple[str, ...],
    no_backup_check: bool,
    reason: str | None,
) -> None:
    """Remove the fleet's instances and edge. Data volumes are kept, except each one
    named with --delete-data, confirmed and backed up."""
    if no_backup_check and not (reason or "").strip():
        raise click.UsageError('--no-backup-check needs --reason "..." (it goes to the audit log)')
    if (no_backup_check or confirm) and not delete_data:
        raise click.UsageError("--confirm and --no-backup-check go with --delete-data VOLUME")
    if delete_data:  # a name that is no volume is refused before any question
        named = app.Deletion(tuple(delete_data), frozenset(confirm), None)
        app.refuse_unknown_volumes(opts.file, named)
    confirmed = set(confirm) | _typed_confirmations(opts, delete_data, set(confirm))
    kept = "volumes are kept" if not delete_data else f"and delete {', '.join(delete_data)}"
    question = f"Remove every instance and the edge of this fleet ({kept})?"
    if not yes:
        # With no terminal to ask (a script, stdin from /dev/null), the answer is no, as
        # documented (exit 1), not the "interrupted" an unanswerable question raised.
        if not sys.stdin.isatty():
            opts.err.print("nothing removed: no terminal to ask; pass --yes")
            raise click.exceptions.Exit(ExitCode.FAILED)
        if not click.confirm(question, err=True):
            opts.err.print("nothing removed")
            raise click.exceptions.Exit(ExitCode.FAILED)
    skip = reason.strip() if no_backup_check and reason else None
    deletion = app.Deletion(tuple(delete_data), frozenset(confirmed), skip)
    removed = app.destroy(opts.file, deletion=deletion)
    deleted = [name for name in removed if name in delete_data]
    opts.emit(
        {"removed": removed, "deleted_volumes": deleted},
        lambda out: out.print(
            f"removed {len(removed) - len(deleted)} container(s); "
            + (f"deleted volume(s) {', '.join(deleted)}" if deleted else "volumes kept"),
            markup=False,
        ),
    )


def _typed_confirmations(opts: Options, names: tuple[str, ...], given: set[str]) -> set[str]:
    """On a terminal, the operator types each volume's name not confirmed by --confirm."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return set()
    typed = set()
    for name in names:
        if name in given:
            continue
        opts.err.print(f"Deleting volume {name} deletes its data.", markup=False)
        answer = click.prompt("Type the volume's name to delete it", default="", err=True)
        if answer.strip() == name:
            typed.add(name)
    return typed


@cli.group()
def edge() -> None:
    """The fleet's edge proxy."""


@edge.command("replace")
@wait_option
@common_options
def edge_replace(opts: Options, wait: float) -> None:
    """Bring the edge to the active release: a reload in place when its image and ports
    are unchanged, a new container taking over the open ports for a new image (neither
    refuses a connection), else a new pod (its ports closed for about a second)."""
    with ConsoleProgress(opts.err, verbose=opts.verbose) as progress:
        done = app.replace_edge(opts.file, progress=progress, wait=wait)
    how = (
        "configuration reloaded in place"
        if done.reloaded
        else "new container, took over the open ports"
        if done.handed_over
        else "new pod, its ports were closed for about a second"
    )
    said = (
        f"edge reloaded in place, unchanged: it already ran the active release's "
        f"configuration and image {done.image[:12]}"
        if done.unchanged
        else f"edge replaced ({how}, image {done.image[:12]})"
    )
    data = {"edge_image": done.image, "reloaded": done.reloaded, "handed_over": done.handed_over}
    opts.emit({**data, "unchanged": done.unchanged}, lambda out: out.print(said, markup=False))


@cli.group("state")
def state_group() -> None:
    """The fleet's state: move it between backends, rebuild a lost one."""


@state_group.command("export")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file."
)
@common_options
def state_export(opts: Options, output: Path | None) -> None:
    """Write every table of the state as one versioned JSON document (stdout by default)."""
    document = app.state_export(opts.file)
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        fd = open_private(output, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
    rows = sum(len(r) for r in document["tables"].values())
    opts.emit(
        {"output": str(output), "rows": rows, "schema_version": document["schema_version"]},
        lambda out: out.print(f"exported {rows} row(s) to {output}", markup=False),
    )


@state_group.command("import")
@click.argument("export", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Move a SQLite state that is not empty aside first.")
@common_options
def state_import(opts: Options, export: Path, replace: bool) -> None:
    """Load an export into the fleet's state, which must be empty."""
    try:
        document = json.loads(export.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the export {export}: {exc}") from exc
    done = app.state_import(opts.file, document, str(export), replace=replace)
    rows = sum(done.rows.values())
    aside = f" (the earlier state is kept as {done.replaced})" if done.replaced else ""
    opts.emit(
        {"state": done.state, "rows": done.rows, "replaced": done.replaced},
        lambda out: out.print(f"imported {rows} row(s) into {done.state}{aside}", markup=False),
    )


@state_group.command("recover")
@common_options
def state_recover(opts: Options) -> None:
    """Rebuild a lost state from the engine's labels: the fleet's id, the active release,
    its instances and images (test records and the old audit trail are lost)."""
    done = app.state_recover(opts.file)
    opts.emit(
        views.to_data(done),
        lambda out: out.print(
            f"recovered fleet {done.fleet} (id {done.fleet_id}): release {done.release} "
            f"active with {len(done.instances)} instance(s) of {', '.join(done.roles)}, "
            f"{done.images} image(s); volumes kept: {', '.join(done.volumes) or 'none'}. "
            f"Test records were lost: the next deploy tests again",
            markup=False,
        ),
    )


def _scrub_error(exc: BaseException, scrubber: Scrubber) -> None:
    """Remove the fleet's secrets from an error, its fields and the errors that led to
    it (the debug log writes the whole chain), in place."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CorralError):
            current.scrub(scrubber)
        else:
            current.args = tuple(
                scrubber.text(a) if isinstance(a, str) else a for a in current.args
            )
        current = current.__cause__ or current.__context__


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and exit with a code that means something (see the module docstring)."""
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        code = cli.main(args=argv, prog_name="corral", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:  # Ctrl-C inside a command, or no answer to a question
        err.print(INTERRUPTED)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(ExitCode.INTERRUPTED)
    except CorralError as exc:
        _fail(exc, as_json, err)
    except Exception as exc:
        log = _write_debug_log()
        detail = f" {type(exc).__name__}: {exc} (details in {log})"
        err.print(views.styled("internal error:", "red", detail), highlight=False)
        sys.exit(ExitCode.FAILED)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(exc: CorralError, as_json: bool, err: Console) -> NoReturn:
    if as_json:
        views.print_json(Console(highlight=False), exc.to_dict())
    views.show_error(err, exc)
    sys.exit(for_error(exc))


def _write_debug_log(path: Path = DEBUG_LOG) -> Path:
    """Append the current traceback to the debug log; where it went (``/dev/null`` if nowhere).

    A traceback can quote anything corral held, so the log is 0600 in a 0700 folder and
    never written through a link (see corral.hostfiles).
    """
    entry = f"--- {datetime.now(UTC).isoformat()} corral {__version__}\n{traceback.format_exc()}"
    try:
        private_dir(path.parent)
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "a", encoding="utf-8") as log:
            log.write(entry)
    except (OSError, CorralError):
        return Path("/dev/null")
    return path
