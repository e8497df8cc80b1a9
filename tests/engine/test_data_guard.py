"""Data outlives instances, releases and the spec, on real Podman (issue 12, the data guard).

Two fleets, each as lean as the point it proves:

- the stack example's PostgreSQL (its data on a volume): rows written survive a
  replacement, a rollback and ``corral destroy`` (without ``--delete-data``); a volume
  dropped from the spec stays, and the deploy says so; ``--delete-data`` refuses without a
  verified backup and deletes only the volume named once one is recorded;
- the example fleet's web role behind the edge: records POSTed through the edge are all
  still there after a deploy, a rollback, a destroy and a deploy again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.state import State
from tests.engine.helpers import Fleet, free_port, podman_json
from tests.engine.test_single_writer import Db, db, pg_base  # noqa: F401 (fixtures)
from tests.unit.builders import backed_up

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRATCH = "    volumes: {data: /var/lib/postgresql/data, scratch: /var/lib/scratch}\n"
DATA_ONLY = "    volumes: {data: /var/lib/postgresql/data}\n"


def volumes(fleet: str) -> list[str]:
    found = podman_json("volume", "ls", "--filter", f"label=io.corral.fleet={fleet}")
    return sorted(str(v["Name"]) for v in found)


def state_of(fleet: Fleet) -> State:
    return State.open(Path(os.environ["CORRAL_STATE_HOME"]) / fleet.name / "state.db")


def _write(db: Db, generation: int, scratch: bool) -> None:  # noqa: F811
    db.write(generation)
    text = db.fleet.spec.read_text()
    assert text.count(DATA_ONLY) == 1
    db.fleet.spec.write_text(text.replace(DATA_ONLY, SCRATCH if scratch else DATA_ONLY))


def _count(db: Db) -> int:  # noqa: F811
    return int(db.sql("SELECT count(*) FROM rows"))


@pytest.mark.timeout(600)
def test_postgres_rows_survive_deploy_rollback_destroy_and_a_dropped_volume_is_kept(
    db: Db,  # noqa: F811
) -> None:
    name = db.fleet.name
    data, scratch = f"{name}-db-data", f"{name}-db-scratch"
    _write(db, 1, scratch=True)
    db.deploy()
    db.sql("CREATE TABLE rows (id serial PRIMARY KEY, body text)")
    db.sql("INSERT INTO rows (body) SELECT 'r' || n FROM generate_series(1, 100) n")

    _write(db, 2, scratch=True)  # a new run configuration: the instance is replaced
    db.deploy()
    assert _count(db) == 100
    db.sql("INSERT INTO rows (body) SELECT 'r' || n FROM generate_series(101, 150) n")
    db.fleet.corral("rollback", "--skip-tests", "--reason", "data guard test", env=db.env)
    assert _count(db) == 150

    db.fleet.corral("destroy", "--yes", env=db.env)  # without --delete-data
    assert volumes(name) == [data, scratch]
    db.deploy()
    assert _count(db) == 150, "rows lost across destroy and deploy"

    _write(db, 2, scratch=False)  # the scratch volume is dropped from the spec
    said = db.fleet.deploy(env=db.env)
    assert f"volume {scratch}: retained, no longer used" in said.stdout, said.stdout
    assert volumes(name) == [data, scratch] and _count(db) == 150
    plan = json.loads(db.fleet.corral("plan", "--json", check=False, env=db.env).stdout)
    assert [v["volume"] for v in plan["plan"]["retained_volumes"]] == [scratch]

    listed = db.fleet.corral("volumes", "--json", check=False, env=db.env)
    assert listed.returncode == 1  # no verified backup of either volume
    rows = {v["name"]: v for v in json.loads(listed.stdout)["volumes"]}
    assert rows[scratch]["status"] == "retained" and rows[data]["status"] == "in use"
    assert rows[data]["size_bytes"] > 10 << 20  # PostgreSQL's files, measured on disk
    assert rows[data]["used_by"] and rows[scratch]["used_by"] == []

    delete = ["destroy", "--yes", "--delete-data", scratch, "--confirm", scratch]
    refused = db.fleet.corral(*delete, check=False, env=db.env)
    assert refused.returncode == 5 and "no verified backup" in refused.stderr, refused.stderr
    assert volumes(name) == [data, scratch]
    with state_of(db.fleet) as st:  # as `corral backup` and `backup verify` record them
        backed_up(st, name, scratch)
    db.fleet.corral(*delete, env=db.env)
    assert volumes(name) == [data]  # only the volume named
    audit = json.loads(db.fleet.corral("audit", "--json", env=db.env).stdout)["audit"]
    assert [(e["target"], e["outcome"]) for e in audit if e["action"] == "delete-data"] == [
        (scratch, "refused"),
        (scratch, "ok"),
    ]


@pytest.fixture
def web(tmp_path: Path, cleanup_fleet: str, shared_base: str) -> Iterator[Fleet]:
    """The example fleet's web role alone (its api left out), on a free port."""
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns(".corral", "stack"))
    fleet = Fleet(folder, cleanup_fleet, free_port())
    text = fleet.spec.read_text().replace("fleet: demo", f"fleet: {cleanup_fleet}")
    text = text.replace("public: 8080", f"public: {fleet.port}").replace(
        "replicas: 3", "replicas: 2"
    )
    text = text.replace("    after: [api]\n", "")
    fleet.spec.write_text(text[: text.index("  api:")])
    yield fleet
    fleet.corral("destroy", "--yes", check=False)


@pytest.mark.timeout(600)
def test_records_written_through_the_example_survive_deploy_rollback_and_destroy(
    web: Fleet,
) -> None:
    def write(n: int) -> dict[int, str]:
        acked = {}
        with httpx.Client(base_url=web.url, timeout=10) as client:
            for i in range(n):
                body = f"record {i} {os.urandom(4).hex()}"
                answer = client.post("/records", content=body.encode())
                assert answer.status_code == 200, answer.text
                acked[int(answer.json()["id"])] = body
        return acked

    def check(acked: dict[int, str], step: str) -> None:
        with httpx.Client(base_url=web.url, timeout=10) as client:
            ids = set(client.get("/records").json()["ids"])
            assert set(acked) <= ids, f"{step}: {len(set(acked) - ids)} records lost"
            for number in list(acked)[:: max(1, len(acked) // 10)]:
                assert client.get(f"/records/{number}").json()["body"] == acked[number]

    web.deploy()
    acked = write(40)
    web.spec.write_text(web.spec.read_text().replace("hello from corral", "hello again"))
    web.deploy()
    check(acked, "deploy")
    acked |= write(20)
    web.corral("rollback", "--skip-tests", "--reason", "data guard test")
    check(acked, "rollback")
    web.corral("destroy", "--yes")
    assert volumes(web.name) == [f"{web.name}-web-data"]
    web.deploy()
    check(acked, "destroy and deploy")
