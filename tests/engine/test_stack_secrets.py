"""Reproduction 4 of issue 10 on the real stack (examples/stack): a new DB_PASSWORD
replaces the db and the app (PostgreSQL takes the new password, the app logs in with it,
no row is lost), nginx is untouched, and nginx deploys with DB_PASSWORD unset."""

from __future__ import annotations

import json
import os
import secrets

import httpx
import pytest

from tests.engine.test_stack import Stack, stack  # noqa: F401  (the example's fixture)


def _running(made: Stack) -> dict[str, list[str]]:
    return {
        role["role"]: sorted(i["name"] for i in role["instances"] if i["state"] == "running")
        for role in made.fleet.status()["roles"]
    }


def _deploy(made: Stack, *roles: str, env: dict[str, str] | None = None) -> None:
    """A deploy without the gate, given time: three images bake on a shared machine."""
    why = ("--skip-tests", "--reason", "stack secrets test")
    made.fleet.corral("deploy", *why, *roles, env=env, timeout=1200)


def _write_row(made: Stack) -> int:
    answer = httpx.post(made.app_url + "rows", content=b"rotation", timeout=10)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["id"])


# Three real images and three deploys: on a shared, loaded machine it took 15 minutes.
@pytest.mark.timeout(1800)
def test_rotating_the_db_password_on_the_stack(stack: Stack) -> None:  # noqa: F811
    assert "DB_PASSWORD" not in os.environ
    _deploy(stack, env=stack.env)
    before = _write_row(stack)
    first = _running(stack)

    new = f"rotated-'{secrets.token_hex(8)}"
    rotated = {**stack.env, "DB_PASSWORD": new}  # the backup password too: db is dumped first
    plan = stack.fleet.corral("--json", "plan", check=False, env=rotated)
    assert plan.returncode == 3, plan.stdout + plan.stderr  # changes pending
    planned = json.loads(plan.stdout)["plan"]["roles"]
    reasons = {r["role"]: {c["reason"] for c in r["stop"]} for r in planned}
    changed = {"secret DB_PASSWORD changed"}
    assert reasons == {"db": changed, "app": changed, "static": set()}  # nginx uses none

    _deploy(stack, env=rotated)
    now = _running(stack)
    assert not set(now["db"]) & set(first["db"]) and not set(now["app"]) & set(first["app"])
    assert now["static"] == first["static"]
    after = _write_row(stack)  # the new app logs in with the new password
    assert after > before and {before, after} <= stack.row_ids()

    # nginx alone needs no DB_PASSWORD; the db and the app stay as they are.
    stack.edit('BANNER: "static files"', 'BANNER: "static files, again"')
    _deploy(stack, "static")  # DB_PASSWORD is not in this environment
    again = _running(stack)
    assert again["db"] == now["db"] and again["app"] == now["app"]
    assert not set(again["static"]) & set(now["static"])
    for proc in (plan, stack.fleet.corral("history"), stack.fleet.corral("audit", "--json")):
        assert new not in proc.stdout + proc.stderr
