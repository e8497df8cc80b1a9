"""Reproductions 2, 3, 5 and 6 of issue 10, replayed as a new user would on one live copy
of the real stack (examples/stack: PostgreSQL, a Python app, nginx).

The stack is built, tested and deployed once, through the gate; then, on that one fleet:

- 2: a health path that answers 404 fails the deploy, which goes back while the app
  serves every GET and POST (the clients' and the edge's own counters); the release is
  ``rolled-back`` with a reason in words. The fixed spec deploys, and a rollback works.
- 3: a new failing test file makes the gate refuse; ``corral test static`` fails, and
  the gate goes on refusing that digest until the file is gone.
- 5: the failed deploys and the refusals are audited with their error; no row of
  ``history --limit N`` claims "added" for a role that existed before; no failed
  release is relabelled "aborted" by a later command.
- 6: a smoke test that passed in the test environment fails against the live data (a
  test that holds on the empty test database, not on the live one): the deploy's
  output and ``history --release N`` quote the assertion and the instances' log lines.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import httpx
import pytest

from tests.engine.helpers import Load
from tests.engine.test_health_change import check_paths
from tests.engine.test_stack import Stack, stack  # noqa: F401  (the example's fixture)

# A page the static role does not have: a new test for it fails.
ABOUT_TEST = """
import httpx


def test_the_about_page_is_served(edge_url):
    answer = httpx.get(edge_url + "about.html", timeout=5)
    assert answer.status_code == 200, "no about page yet"
"""

# Holds on the test environment's fresh database, not on the live one the load filled.
ROWS_TEST = """
import httpx


def test_the_rows_fit_on_one_page(edge_url):
    count = httpx.get(edge_url + "rows", timeout=10).json()["count"]
    assert count <= 50, f"{count} rows do not fit on one page"
"""


def run(made: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """corral with the stack's password, whatever its exit code."""
    return made.fleet.corral(*args, env=made.env, check=False, timeout=900)


def read_json(made: Stack, *args: str) -> Any:
    return json.loads(made.fleet.corral(*args, "--json", env=made.env).stdout)


def history(made: Stack, *args: str) -> list[dict[str, Any]]:
    return list(read_json(made, "history", *args)["releases"])


def statuses(made: Stack) -> list[str]:
    return [r["status"] for r in history(made)]


def last_audit(made: Stack, action: str) -> dict[str, Any]:
    entries = read_json(made, "audit")["audit"]
    return dict([e for e in entries if e["action"] == action][-1])


def app_load(made: Stack) -> Load:
    """GET / and POST /rows through the edge, its counters read (every POST is a row)."""
    return Load(made.app_url, clients=3, edge=made.fleet.edge_api(), post_path="rows")


def app_check_paths(made: Stack) -> set[str]:
    return {path for name, path in check_paths(made.fleet).items() if "-app-r" in name}


def app_health(made: Stack, path: str) -> str:
    """The app role's health line (static has the same one: the public port tells them apart)."""
    return (
        f"health: {{http: {path}, interval: 500ms, retries: 40}}\n"
        f"    replicas: 2\n    public: {made.fleet.port}"
    )


def _reproduction_2(made: Stack) -> None:
    made.edit(app_health(made, "/healthz"), app_health(made, "/missing"))
    with app_load(made) as load:
        failed = run(made, "deploy", "--skip-tests", "--reason", "reproduction 2")
    said = failed.stdout + failed.stderr
    assert failed.returncode == 6, said  # failed, and the fleet went back
    assert "GET /missing: HTTP 404 Not Found" in said and "back on release r1" in said, said
    assert "L7STS" not in said
    load.assert_no_failures()
    assert app_check_paths(made) == {"/healthz"}
    [r2] = history(made, "--release", "2")
    assert r2["status"] == "rolled-back", r2
    assert "did not become healthy: GET /missing: HTTP 404" in r2["message"], r2
    assert "L7STS" not in json.dumps(r2)
    audited = last_audit(made, "deploy")  # reproduction 5: the failed deploy is audited
    assert audited["outcome"] == "rolled-back" and "HTTP 404" in audited["details"]["error"]

    made.edit(app_health(made, "/missing"), app_health(made, "/"))  # a path that answers
    with app_load(made) as load:
        made.corral("deploy", "--skip-tests", "--reason", "reproduction 2, fixed")
    load.assert_no_failures()
    assert app_check_paths(made) == {"/"}
    made.edit(app_health(made, "/"), app_health(made, "/healthz"))
    with app_load(made) as load:
        made.corral("rollback")  # through the gate: r1's images passed at the start
    load.assert_no_failures()
    assert app_check_paths(made) == {"/healthz"}
    assert statuses(made) == ["superseded", "rolled-back", "superseded", "active"]


def _refused(made: Stack, why: str) -> None:
    refused = run(made, "deploy")
    assert refused.returncode == 5, refused.stdout + refused.stderr  # the gate refused
    assert why in refused.stderr and "run: corral test static (" in refused.stderr, refused.stderr
    audited = last_audit(made, "deploy")  # reproduction 5: the refusal is audited
    assert audited["outcome"] == "refused" and why in audited["details"]["error"], audited


def _reproduction_3(made: Stack) -> None:
    # A third nginx is a change for the deploy, outside the image and the test key.
    public = f"\n    public: {made.static_port}"
    made.edit("replicas: 2" + public, "replicas: 3" + public)
    new_test = made.fleet.folder / "tests" / "static" / "test_about.py"
    new_test.write_text(ABOUT_TEST)
    _refused(made, "changed since it was last tested: tests/static/)")
    tested = run(made, "test", "--json", "static")
    assert tested.returncode == 1, tested.stdout + tested.stderr
    [result] = json.loads(tested.stdout)["results"]
    failed = [c for c in result["checks"] if c["outcome"] == "failed"]
    assert [c["name"] for c in failed] == ["test_about.py::test_the_about_page_is_served"]
    assert "no about page yet" in failed[0]["message"]
    _refused(made, "its newest test run")
    [static] = [r for r in read_json(made, "test", "--report")["roles"] if r["role"] == "static"]
    assert static["outcome"] == "failed" and "failed" in static["reason"], static
    new_test.unlink()  # the key of the pass made at the start again: the gate lets it through
    made.corral("deploy")
    [role] = [r for r in made.fleet.status()["roles"] if r["role"] == "static"]
    serving = sorted(i["release"] for i in role["instances"] if i["state"] == "running")
    assert serving == [1, 1, 5], role  # scaled up: the two nginx of r1 stay


def _reproduction_6(made: Stack) -> None:
    rows = httpx.get(made.app_url + "rows", timeout=10).json()["count"]
    assert rows > 50, f"the load wrote only {rows} rows"
    (made.fleet.folder / "tests" / "app" / "test_rows_page.py").write_text(ROWS_TEST)
    made.edit('GREETING: "rows on postgres"', 'GREETING: "rows, paged"')
    made.corral("test", "app")  # passes: the test database has a row or two
    failed = run(made, "deploy")
    said = failed.stdout + failed.stderr
    assert failed.returncode == 6, said  # failed, and the fleet went back
    assert "role app: smoke test failed: test_rows_page.py::test_the_rows_fit_on_one_page" in said
    # pytest's own text, its E lines included, then the new instances' last log lines
    assertion = re.compile(r"\| test_rows_page.py::test_the_rows_fit_on_one_page: assert \d+ <= 50")
    instance = f"| {made.fleet.name}-app-r6-"
    assert assertion.search(said) and instance in said, said
    assert "rows do not fit on one page" in said and "back on release r5" in said, said
    shown = run(made, "history", "--release", "6").stdout
    assert assertion.search(shown) and instance in shown, shown
    [r6] = history(made, "--release", "6")
    assert r6["status"] == "rolled-back"
    [smoke] = r6["failure"]["failures"]
    assert any("rows do not fit on one page" in c["message"] for c in smoke["checks"]), smoke
    audited = last_audit(made, "deploy")
    assert audited["outcome"] == "rolled-back", audited
    assert "smoke test failed" in audited["details"]["error"], audited
    now = made.releases()
    assert now["db"] == {1} and now["static"] == {1, 5} and len(now["app"]) == 1, now
    assert 6 not in now["app"], now


def _reproduction_5(made: Stack) -> None:
    """The records, read after everything above and after more commands."""
    run(made, "status")
    run(made, "plan")
    full = history(made)
    assert [r["status"] for r in full] == [
        "superseded",  # r1
        "rolled-back",  # r2: the 404 health path
        "superseded",  # r3: the fixed one
        "superseded",  # r4: the rollback
        "active",  # r5: the third nginx
        "rolled-back",  # r6: the failed smoke test
    ]
    for limit in range(1, len(full) + 1):
        rows = history(made, "--limit", str(limit))
        assert rows == full[-limit:], f"--limit {limit}"
    assert [c for r in full[1:] for c in r["changes"] if "added" in c] == []
    assert "added" not in json.dumps(history(made, "--limit", "2"))


# One stack, built and deployed once; about 30 corral commands. 4.6 minutes measured on
# the 2-core machine at load 2-4 (build 24 s, corral test 26 s, first deploy 11 s).
@pytest.mark.timeout(1800)
def test_reproductions_2_3_5_and_6_on_one_live_stack(stack: Stack) -> None:  # noqa: F811
    stack.corral("build", timeout=1200)
    stack.corral("test", timeout=1200)  # as a new user would: test, then deploy
    stack.corral("deploy")
    _reproduction_2(stack)
    _reproduction_3(stack)
    _reproduction_6(stack)
    _reproduction_5(stack)
