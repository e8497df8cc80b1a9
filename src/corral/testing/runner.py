"""Running a role's own pytest files against an environment, in a subprocess.

:func:`run_role_tests` runs::

    bwrap ... -- timeout --signal=INT <total> python -m pytest -p corral.testing.plugin
        -p no:cacheprovider -q -c <empty ini> --rootdir <root> --confcutdir <root>
        --junitxml <tmp>/junit.xml -o timeout=<per test> -o timeout_method=signal <paths>

in ``workdir`` (relative ``paths`` are relative to it), in a new session, inside the
sandbox of :mod:`corral.testing.sandbox`: the tests read their own folder and the Python
they run on, write only their run's folder and a private ``/tmp``, and reach the
environment's containers only through the exec broker (:mod:`corral.testing.broker`),
whose socket the environment names. ``CORRAL_TEST_ENV`` names a JSON file that describes
the environment (see :mod:`corral.testing.plugin`) and ``CORRAL_TEST_FIXTURES_OUT`` the
file the plugin writes the fixtures each test used to. Its environment is not corral's
(which holds the fleet's secrets): only :data:`PASSED_VARIABLES` and the variables the
caller passes.
The empty ini keeps the configuration of whatever project the tests live in (``addopts``,
plugins corral does not have) out of the run; ``conftest.py`` files under ``workdir``
still apply.

The junit XML is turned into :class:`CheckResult` values. Test failures are never
raised: they are results. A run that outlives ``total_timeout`` is interrupted (SIGINT,
from ``timeout`` inside the sandbox, so pytest still writes what it has), then killed;
the outcome then carries a check named ``pytest`` with the message ``timed out after
Ns``. The sandbox is killed after a normal exit too, and its PID namespace with it, so
nothing a test started outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import UsageError
from corral.testing import contract
from corral.testing.broker import ExecBroker, ExecIn
from corral.testing.sandbox import NO_ENGINE, sandbox_environ, sandboxed
from corral.testing.shell import OpenShell

#: The kinds of check the runner reports (callers add their own, e.g. health, lockdown).
CHECK_KINDS = ("pytest", "testinfra", "http")
#: How a check can end.
CHECK_OUTCOMES = ("passed", "failed", "skipped", "error")

#: How long an interrupted run gets to write its report before it is killed.
INTERRUPT_GRACE_S = 5.0
#: How many lines of pytest's output :attr:`PytestOutcome.log_tail` keeps.
LOG_TAIL_LINES = 40
#: How much of the end of pytest's output :func:`_tail` reads.
TAIL_BYTES = 256 * 1024
#: How many characters of a failure's text :attr:`CheckResult.message` keeps at most.
MESSAGE_MAX_CHARS = 2000

#: How much longer than ``timeout`` corral waits before it kills the sandbox itself.
BACKSTOP_S = 5.0

_NO_TESTS_COLLECTED = 5
#: coreutils timeout's status when the command timed out (124), or had to be killed (137).
_TIMED_OUT = (124, 128 + signal.SIGKILL)

#: What the test process inherits from corral's environment: what Python, pytest and
#: testinfra need (the search path, locale, time zone, TLS trust; the home and temporary
#: folders are the sandbox's own). Nothing else, not where Podman is: corral's
#: environment holds the fleet's live secrets, and tests get only what the role
#: declares (its ``test_secrets``). ``PYTEST_ADDOPTS`` and ``PYTEST_PLUGINS`` stay out too:
#: the run is corral's, not the shell's.
#: The pytest plugins a role's tests get, and no other: with autoloading, every plugin
#: installed beside corral loaded in each run (hypothesis's alone took a second of each
#: run's 2 s, for every role's tests and every smoke test).
PLUGINS = ("corral.testing.plugin", "pytest_timeout", "testinfra.plugin", "anyio.pytest_plugin")

PASSED_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PYTHONPATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
PASSED_PREFIXES = ("LC_",)


@dataclass(frozen=True)
class CheckResult:
    """One test's result.

    ``name`` is the pytest node id relative to the tests' root directory (for example
    ``test_web_http.py::test_healthz``, or the file for a collection error). ``kind``
    is ``testinfra`` if the test used ``host`` or ``hosts``, ``http`` if it used
    ``edge_url``, ``instance_url`` or ``instance_urls`` (and no testinfra fixture), else
    ``pytest`` (callers add their own kinds, e.g. ``health``). ``outcome`` is passed,
    failed, skipped or error; ``message`` says why it failed, errored or was skipped
    (empty when it passed).
    """

    name: str
    kind: str
    outcome: str
    seconds: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-able data (what the state database stores)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "outcome": self.outcome,
            "seconds": self.seconds,
            "message": self.message,
        }


@dataclass(frozen=True)
class PytestOutcome:
    """What one run of a role's tests found.

    ``ok`` is true when pytest exited 0 (every test passed or was skipped) or 5 (no test
    was collected; then ``checks`` is empty). ``ok`` says pytest found nothing wrong, not
    that anything was tested: a smoke run may rightly skip everything, but ``corral test``
    does not count a run where no test passed as a pass (``suite.untested_reason``).
    ``exit_code`` is pytest's exit status, or the negated signal number if the run had to
    be killed. ``log_tail`` is the last
    lines of pytest's combined output.
    """

    ok: bool
    checks: tuple[CheckResult, ...]
    exit_code: int
    log_tail: str
    seconds: float

    @property
    def counts(self) -> dict[str, int]:
        """How many checks ended each way, e.g. ``{"passed": 3, "failed": 1}``."""
        result: dict[str, int] = {}
        for check in self.checks:
            result[check.outcome] = result.get(check.outcome, 0) + 1
        return result


def run_role_tests(
    paths: Sequence[Path],
    env: Mapping[str, Any],
    *,
    per_test_timeout: float = 60,
    total_timeout: float = 600,
    mode: str = "full",
    workdir: Path,
    variables: Mapping[str, str] | None = None,
    exec_in: ExecIn | None = None,
    open_shell: OpenShell | None = None,
    hidden: Sequence[Path] = (),
) -> PytestOutcome:
    """Run a role's test files against an environment and collect their results.

    Args:
        paths: test files or directories; relative ones are relative to ``workdir``.
        env: the environment description the plugin's fixtures read (``fleet``,
            ``role``, ``edge_url``, ``instances``, ``engine``); ``mode`` overrides
            its ``mode``.
        per_test_timeout: seconds one test may take before it fails with "Timeout".
        total_timeout: seconds the whole run may take before it is killed.
        mode: ``"full"`` (every test) or ``"smoke"`` (only tests that need nothing
            but ``edge_url``; the rest are skipped).
        workdir: where pytest runs (its current directory); relative ``paths`` are
            relative to it. Node ids are relative to ``workdir`` if every path is
            inside it, else to the deepest directory holding all of them.
        variables: environment variables the role declared for its tests (the test
            values of its secrets). Of corral's own environment the tests see only
            :data:`PASSED_VARIABLES`.
        exec_in: how the exec broker runs a command in one of ``env``'s instances
            (``Engine.exec_in``); None: the ``host`` fixtures fail, saying so.
        open_shell: how the broker opens a long-lived shell in one (``Engine.shell``),
            which runs its commands faster; None: each is an ``exec_in``.
        hidden: paths the tests must not see even if they lie beside them (corral's
            state, the backup repository, password files).

    Returns:
        The outcome; failing tests make ``ok`` false but never raise.

    Raises:
        UsageError: no paths, a path that does not exist, a bad mode or timeout, a
            missing ``workdir``, an ``env`` that is not a JSON object, or no bubblewrap.
    """
    resolved = _check_args(paths, per_test_timeout, total_timeout, mode, workdir)
    started = time.monotonic()
    # A short folder: the broker's socket path must fit a Unix socket's 108 bytes.
    with tempfile.TemporaryDirectory(prefix="corral-test-", dir=_short_tmp()) as tmp_name:
        files = _Files(Path(tmp_name))
        files.make(_env_json(env, mode, files.socket))
        rootdir = _rootdir(resolved, workdir)
        argv = sandboxed(
            _argv(resolved, rootdir, files, per_test_timeout, total_timeout),
            readable=[files.inputs, *resolved, *_support_files(resolved, rootdir)],
            writable=[workdir, files.outputs],
            hidden=hidden,
            cwd=workdir,
            no_engine=files.no_engine,
        )
        broker = ExecBroker(files.socket, _containers(env), exec_in, per_test_timeout, open_shell)
        with broker:
            exit_code, timed_out = _run(argv, workdir, files, total_timeout, variables or {})
        seconds = time.monotonic() - started
        log_tail = _tail(files.log)
        used = dict(contract.fixtures_used(files.fixtures))
        checks = parse_junit(files.junit, used, rootdir)
    if timed_out:
        note = f"timed out after {total_timeout:g}s"
        checks = (*checks, CheckResult("pytest", "pytest", "error", round(seconds, 3), note))
        log_tail = f"{log_tail}\n{note}".lstrip("\n")
        return PytestOutcome(False, checks, exit_code, log_tail, seconds)
    if exit_code == _NO_TESTS_COLLECTED:
        return PytestOutcome(True, (), exit_code, log_tail, seconds)
    if exit_code != 0 and not any(c.outcome in ("failed", "error") for c in checks):
        # pytest gave up without saying which test: an internal or usage error.
        message = _last_lines(log_tail, 10) or f"pytest exited {exit_code}"
        checks = (*checks, CheckResult("pytest", "pytest", "error", 0.0, message))
    return PytestOutcome(exit_code == 0, checks, exit_code, log_tail, seconds)


@dataclass(frozen=True)
class _Files:
    """The run's folder. The sandbox reads ``inputs/``, writes ``outputs/`` (its reports
    and the broker's socket) and never sees the log, which corral writes itself."""

    tmp: Path

    def make(self, env_json: str) -> None:
        self.inputs.mkdir()
        self.outputs.mkdir()
        self.env.write_text(env_json, "utf-8")
        self.ini.write_text("[pytest]\n", "utf-8")
        self.no_engine.write_text(NO_ENGINE, "utf-8")
        self.no_engine.chmod(0o755)

    @property
    def inputs(self) -> Path:
        return self.tmp / "in"

    @property
    def outputs(self) -> Path:
        return self.tmp / "out"

    @property
    def env(self) -> Path:
        return self.inputs / "env.json"

    @property
    def ini(self) -> Path:
        return self.inputs / "pytest.ini"

    @property
    def no_engine(self) -> Path:
        return self.inputs / "no-engine"

    @property
    def junit(self) -> Path:
        return self.outputs / "junit.xml"

    @property
    def fixtures(self) -> Path:
        return self.outputs / "fixtures.json"

    @property
    def socket(self) -> Path:
        return self.outputs / "exec.sock"

    @property
    def log(self) -> Path:
        return self.tmp / "output.log"


def _short_tmp() -> str | None:
    """/tmp when it can be used (whatever TMPDIR says), else the default."""
    return "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None


def _support_files(paths: list[Path], rootdir: Path) -> list[Path]:
    """What pytest and the tests read around the listed paths: the ``conftest.py`` and
    ``__init__.py`` files between each path and ``rootdir``, and the Python modules beside
    a listed file (helpers it imports); shown with the tests, nothing else around them."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found += sorted(p for p in path.parent.glob("*.py") if p.is_file())
        folder = path if path.is_dir() else path.parent
        while True:
            found += [folder / n for n in ("conftest.py", "__init__.py") if (folder / n).is_file()]
            if folder == rootdir or not folder.is_relative_to(rootdir) or folder == folder.parent:
                break
            folder = folder.parent
    return list(dict.fromkeys(found))


def _containers(env: Mapping[str, Any]) -> list[str]:
    """The containers the tests may run commands in: the environment's instances."""
    instances = env.get("instances") if isinstance(env, Mapping) else None
    if not isinstance(instances, list):
        return []
    return [str(i["name"]) for i in instances if isinstance(i, Mapping) and i.get("name")]


def _check_args(
    paths: Sequence[Path],
    per_test_timeout: float,
    total_timeout: float,
    mode: str,
    workdir: Path,
) -> list[Path]:
    if mode not in contract.MODES:
        raise UsageError(f"the test mode must be one of {contract.MODES}, not {mode!r}")
    if not per_test_timeout > 0 or not total_timeout > 0:
        raise UsageError(
            f"test timeouts must be positive, not {per_test_timeout!r} and {total_timeout!r}"
        )
    if not workdir.is_dir():
        raise UsageError(f"the test working directory {workdir} does not exist")
    if isinstance(paths, str | Path) or not paths:
        raise UsageError("no test paths given: list the role's tests, e.g. tests: [tests/web/]")
    resolved = [(workdir / p).resolve() for p in paths]
    missing = [str(p) for p in resolved if not p.exists()]
    if missing:
        raise UsageError(f"test path does not exist: {', '.join(missing)}")
    return resolved


def _env_json(env: Mapping[str, Any], mode: str, socket: Path) -> str:
    if not isinstance(env, Mapping):
        raise UsageError("the test environment must be a mapping (a JSON object)")
    described = {**env, "mode": mode, "exec_socket": str(socket)}
    try:
        return json.dumps(described, indent=1, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the test environment is not JSON-able: {exc}") from exc


def _rootdir(paths: list[Path], workdir: Path) -> Path:
    """``workdir`` if it holds every path, else the deepest directory that does."""
    base = workdir.resolve()
    if all(p == base or p.is_relative_to(base) for p in paths):
        return base
    dirs = [p if p.is_dir() else p.parent for p in paths]
    return Path(os.path.commonpath([str(d) for d in dirs]))


def _argv(
    paths: list[Path], rootdir: Path, files: _Files, per_test_timeout: float, total_timeout: float
) -> list[str]:
    return [
        # Inside the sandbox: its init would not pass a signal from outside on to pytest.
        "timeout",
        "--signal=INT",
        f"--kill-after={INTERRUPT_GRACE_S:g}",
        f"{total_timeout:g}",
        sys.executable,
        "-m",
        "pytest",
        *(arg for plugin in PLUGINS for arg in ("-p", plugin)),
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfEs",
        "-c",
        str(files.ini),
        "--rootdir",
        str(rootdir),
        "--confcutdir",
        str(rootdir),
        "--continue-on-collection-errors",
        f"--junitxml={files.junit}",
        "-o",
        f"timeout={per_test_timeout:g}",
        "-o",
        "timeout_method=signal",
        "-o",
        "junit_family=xunit2",
        "--",
        *(str(p) for p in paths),
    ]


def child_environ(
    environ: Mapping[str, str], variables: Mapping[str, str], env_file: Path, fixtures_out: Path
) -> dict[str, str]:
    """The environment of the pytest process: never a copy of corral's own, which holds
    every secret of the fleet. Only :data:`PASSED_VARIABLES` (and ``LC_*``) come from
    ``environ``; then the variables the role declared for its tests; corral's contract
    variables last, so nothing overrides them."""
    passed = {
        name: value
        for name, value in environ.items()
        if name in PASSED_VARIABLES or name.startswith(PASSED_PREFIXES)
    }
    return {
        **passed,
        **variables,
        contract.ENV_VAR: str(env_file),
        contract.FIXTURES_OUT_VAR: str(fixtures_out),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # only PLUGINS
    }


def _run(
    argv: list[str],
    workdir: Path,
    files: _Files,
    total_timeout: float,
    variables: Mapping[str, str],
) -> tuple[int, bool]:
    """Run pytest; (exit code, whether it hit ``total_timeout``)."""
    environ = sandbox_environ(child_environ(os.environ, variables, files.env, files.fixtures))
    with files.log.open("wb") as log:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # pragma: no cover - sys.executable always exists
            raise UsageError(f"cannot start pytest: {exc}") from exc
        timed_out = False
        started = time.monotonic()
        try:
            try:
                proc.wait(timeout=total_timeout + INTERRUPT_GRACE_S + BACKSTOP_S)
            except subprocess.TimeoutExpired:  # timeout itself did not end it
                timed_out = True
        finally:
            # Nothing the tests started may outlive the run (also on Ctrl-C in corral):
            # killing bwrap takes its PID namespace, and everything in it, along.
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                proc.wait()
    # 124 or 137 from timeout, and only once the time is up: a test's own kill -9 (or the
    # kernel's, out of memory) also ends 137.
    late = time.monotonic() - started >= total_timeout
    return proc.returncode, timed_out or (late and proc.returncode in _TIMED_OUT)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log, read from its last :data:`TAIL_BYTES` only (a
    test may print without end)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return _last_lines(text, lines)


def _last_lines(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def parse_junit(
    path: Path,
    fixtures: Mapping[str, frozenset[str]] | None = None,
    rootdir: Path | None = None,
) -> tuple[CheckResult, ...]:
    """The checks in a pytest junit XML file; none if it is missing or unreadable.

    Args:
        path: the ``--junitxml`` file.
        fixtures: node id -> the corral fixtures the test used (from the plugin's
            sidecar file), to classify each check.
        rootdir: pytest's root directory, to name the file of a collection error.
    """
    data = contract.read_report(path)
    if data is None:
        return ()
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return ()
    used = fixtures or {}
    # An interrupted test leaves an empty <testcase/>: no check (the timeout is one).
    cases = [c for c in root.iter("testcase") if c.get("name") or c.get("classname")]
    return tuple(_check(case, used, rootdir) for case in cases)


def _check(
    case: ET.Element, fixtures: Mapping[str, frozenset[str]], rootdir: Path | None
) -> CheckResult:
    nodeid = _nodeid(case, rootdir)
    outcome = "passed"
    message = ""
    for tag, result in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        element = case.find(tag)
        if element is not None:
            outcome = result
            message = _message(element)
            break
    return CheckResult(
        name=nodeid,
        kind=classify(fixtures.get(nodeid, frozenset())),
        outcome=outcome,
        seconds=_float(case.get("time")),
        message=message,
    )


def classify(fixtures: frozenset[str]) -> str:
    """The kind of a check that used ``fixtures``: testinfra, http or plain pytest."""
    if fixtures & contract.TESTINFRA_FIXTURES:
        return "testinfra"
    if fixtures & contract.HTTP_FIXTURES:
        return "http"
    return "pytest"


def _nodeid(case: ET.Element, rootdir: Path | None) -> str:
    for prop in case.iter("property"):
        if prop.get("name") == contract.NODEID_PROPERTY and prop.get("value"):
            return str(prop.get("value"))
    classname = case.get("classname") or ""
    name = case.get("name") or "pytest"
    if classname:
        return f"{classname}::{name}"
    # A collection error: junit names the file (or folder) with dots for slashes.
    path = name.replace(".", "/")
    if rootdir is not None and (rootdir / path).is_dir():
        return path
    return f"{path}.py"


#: The note pytest 9 ends a shortened junit ``message`` with.
_SHORTENED = re.compile(r"\[(\+\d+ more lines?|truncated); full report in element text\]")


def _message(element: ET.Element) -> str:
    """The reason in a failure/error/skipped element: its message, plus the ``E`` lines."""
    summary = (element.get("message") or "").strip()
    text = element.text or ""
    details = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    if _SHORTENED.search(summary) and details:
        summary = ""  # pytest 9 cut it short; the E lines are the whole of it
    details = [line for line in details if line and line not in summary]
    if element.tag == "skipped":
        details = []
    message = "\n".join([summary, *details]) if summary else "\n".join(details)
    if not message:
        message = _last_lines(text, 5)
    if len(message) > MESSAGE_MAX_CHARS:
        message = message[: MESSAGE_MAX_CHARS - 3] + "..."
    return message


def _float(value: str | None) -> float:
    try:
        return round(float(value or 0), 3)
    except ValueError:
        return 0.0
