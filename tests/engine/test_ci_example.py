"""Issue 11, deliverable 5: the CI example (examples/ci/github-actions.yml) played out as
written, under load through the edge. Its job's ``run:`` steps run in fresh git clones of
one repository, each step in its own ``bash -eo pipefail`` as GitHub runs them: three
jobs in turn, then two at once. Build numbers continue, an image tested from one clone is
not tested again from another, the deploy lock makes the second job wait and says who
holds it, one audit trail, no failed request and the edge's counters clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from corral.state import State
from tests.engine.helpers import Fleet

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "ci" / "github-actions.yml"
# The example's test: the role serves, and says its version (any: the test is one file,
# unchanged across versions, so a second clone's run of the same image finds it passed).
HTTP_TEST = """
import httpx

def test_it_serves_its_version(edge_url):
    assert httpx.get(edge_url).json()["version"].startswith("v")
"""


@dataclass
class Job:
    """One run of the workflow's job in one clone: each step's exit code and stderr."""

    clone: Path
    codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def output(self, name: str) -> Any:
        """A step's --json output, kept as the workflow keeps it (its artifact)."""
        return json.loads((self.clone / f"corral-{name}.json").read_text())


def _steps() -> tuple[dict[str, str], list[str]]:
    """The job's environment (GitHub's ``${{ }}`` expressions as the push leaves them:
    empty) and its ``run:`` steps, as the workflow file has them."""
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["deploy"]
    env = {k: "" if "${{" in str(v) else str(v) for k, v in (job.get("env") or {}).items()}
    return env, [step["run"] for step in job["steps"] if "run" in step]


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _commit(folder: Path, message: str) -> None:
    _git("add", "-A", cwd=folder)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=folder)


def _run_job(origin: Path, clone: Path, bin_dir: Path) -> Job:
    """Clone afresh and run the job's steps in order, stopping at the first that fails."""
    _git("clone", "--quiet", str(origin), str(clone), cwd=origin.parent)
    env, steps = _steps()
    environ = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    job = Job(clone)
    for script in steps:
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=clone,
            env=environ,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        job.codes.append(proc.returncode)
        job.errors.append(proc.stderr)
        if proc.returncode != 0:
            break
    return job


def _corral_on_path(bin_dir: Path) -> None:
    """A ``corral`` command on PATH, as a runner has it: this checkout's corral."""
    bin_dir.mkdir()
    script = bin_dir / "corral"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m corral "$@"\n')
    script.chmod(0o755)


def _ok(job: Job) -> None:
    assert job.codes == [0, 0, 0, 0], "\n".join(job.errors)


def _web(job: Job, step: str) -> dict[str, Any]:
    key = {"build": "builds", "test": "results"}[step]
    return next(r for r in job.output(step)[key] if r["role"] == "web")


def test_the_ci_example_runs_as_written_from_fresh_clones(
    fleet: Fleet, shared_base: str, state_home: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    _corral_on_path(bin_dir)
    origin = fleet.folder
    (origin / "tests" / "test_http.py").write_text(HTTP_TEST)
    _git("init", "--quiet", "-b", "main", cwd=origin)
    _commit(origin, "v1")
    first = _run_job(origin, tmp_path / "a", bin_dir)
    _ok(first)
    assert first.output("deploy")["release"] == 1
    with fleet.load() as load:
        fleet.write(version="v2")
        _commit(origin, "v2")
        second = _run_job(origin, tmp_path / "b", bin_dir)
        third = _run_job(origin, tmp_path / "c", bin_dir)  # the same commit again
        fleet.write(version="v3")
        _commit(origin, "v3")
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda n: _run_job(origin, tmp_path / n, bin_dir), "de"))
    load.assert_no_failures()
    for job in (second, third, *both):
        _ok(job)
    assert load.versions["v2"] > 0 and load.versions["v3"] > 0
    # Build numbers continue across clones; the same commit builds nothing new.
    assert _web(first, "build")["version"].startswith("1-")
    assert _web(second, "build")["version"].startswith("2-")
    assert _web(third, "build")["status"] == "up-to-date"
    assert _web(third, "build")["version"] == _web(second, "build")["version"]
    assert {_web(j, "build")["version"][:2] for j in both} == {"3-"}
    # An image tested from one clone is not tested again from another (same digest).
    assert _web(second, "test")["outcome"] == "passed"
    assert _web(third, "test")["outcome"] == "already-passed"
    assert _web(third, "test")["image_digest"] == _web(second, "test")["image_digest"]
    assert sorted(_web(j, "test")["outcome"] for j in both) == ["already-passed", "passed"]
    assert len({_web(j, "test")["image_digest"] for j in both}) == 1
    # The deploys: r2, unchanged, then r3 and, after waiting for it, unchanged.
    assert second.output("deploy")["release"] == 2
    assert third.output("deploy")["status"] == "unchanged"
    assert sorted(j.output("deploy")["status"] for j in both) == ["active", "unchanged"]
    waited = [j.errors[3] for j in both if "waiting up to 900s: the deploy lock" in j.errors[3]]
    assert len(waited) == 1, [j.errors[3] for j in both]
    assert "lock is held by" in waited[0] and "for deploy all" in waited[0]
    status = fleet.status()
    assert status["release"] == 3
    with State.open(state_home / fleet.name / "state.db") as state:
        deploys = state.audit_log(fleet.name, action="deploy")
        passes = [r for r in state.test_runs(fleet.name) if r.outcome == "passed"]
    assert [e.details.get("release") for e in deploys if e.outcome == "ok"] == [1, 2, 3]
    assert len(passes) == 3  # v1, v2, v3: each image tested once, whichever clone asked
    for job in (first, second, third, *both):
        assert not (job.clone / ".corral").exists()
        assert sorted(p.name for p in job.clone.glob("corral-*.json")) == [
            "corral-build.json",
            "corral-deploy.json",
            "corral-test.json",
            "corral-validate.json",
        ]
