"""corral state export / import: a state moved SQLite -> PostgreSQL -> SQLite is equal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corral.errors import StateError
from corral.state import State
from corral.state.records import ImageRecord, image_version
from tests.pgcluster import Cluster


def _fill(st: State) -> None:
    """One of everything: builds and images, releases and instances, a test run, a
    stop-first replacement, audit entries, a fleet id, and a held lock (not exported)."""
    st.claim_fleet("f", "id-1", "deploy")
    for n, content in enumerate(("h1", "h2"), start=1):
        build = st.start_build("f", "web", content)
        st.finish_build(
            build.id,
            ImageRecord(
                fleet="f",
                role="web",
                number=n,
                content_hash=content,
                version=image_version(n, content),
                tag=f"corral/f-web:{n}",
                image_id=f"img{n}",
                digest=f"sha256:{n}",
                built_at="2026-01-01T00:00:00Z",
                git_commit="abc" if n == 1 else None,
                git_dirty=n == 2,
                labels={"io.corral.role": "web"},
            ),
        )
    st.start_build("f", "web", "h3")  # a build still running
    first = st.start_release("f", "deploy", {"web": {"replicas": 2}})
    st.record_instance("f", "f-web-r1-1", "web", 1, "img1")
    st.finish_release(first.id, "active")
    second = st.start_release("f", "deploy", {"web": {"replicas": 3}})
    st.record_instance("f", "f-web-r2-1", "web", 2, "img2")
    st.retire_instance("f", "f-web-r1-1", "replaced")
    st.finish_release(second.id, "failed", "it broke", {"error": "deploy", "reason": "x"})
    st.record_test_run(
        "f",
        "web",
        "img2",
        "sha256:2",
        "2-h2",
        "passed",
        [{"name": "t", "ok": True}],
        1.5,
        "log",
        test_key="a" * 64,
    )
    st.record_replacement("f", "web", 2, 0.25)
    st.record_audit("f", "deploy", "fleet", "ok", {"release": 1})
    st.record_audit("f", "rollback", "fleet", "failed", {"error": "e"})


def _tables(st: State) -> dict[str, Any]:
    return dict(st.export()["tables"])


def _move(source: Path | str, target: Path | str) -> None:
    with State.open(source) as src, State.open(target) as dst:
        dst.load(json.loads(json.dumps(src.export())), "test")


def test_a_state_moves_sqlite_to_postgresql_and_back_unchanged(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    first, last = tmp_path / "a.db", tmp_path / "b.db"
    with State.open(first) as st:
        _fill(st)
        with st.lock("deploy", purpose="held while exporting"):
            original = _tables(st)
    assert "locks" not in original and "fleets" in original
    assert len(original["builds"]) == 3 and len(original["audit"]) == 2
    url = pg_cluster.new_database()
    _move(first, url)
    _move(url, last)
    with State.open(url) as pg, State.open(last) as back:
        assert _tables(pg) == original
        assert _tables(back) == original
        # The copy goes on as the original would: numbers continue, ids do not clash.
        assert pg.start_build("f", "web", "h4").number == 4
        assert back.start_release("f", "deploy", {}).number == 3
        assert pg.record_audit("f", "gc", "fleet", "ok").id == 3
        assert pg.fleet_id("f") == "id-1"
        assert [i.name for i in pg.instances("f")] == ["f-web-r2-1"]


def test_import_refuses_a_state_that_holds_rows(state_location: Path | str, tmp_path: Path) -> None:
    with State.open(tmp_path / "src.db") as src:
        _fill(src)
        document = src.export()
    with State.open(state_location) as dst:
        dst.record_audit("f", "deploy", "fleet", "refused")
        with pytest.raises(StateError, match=r"is not empty \(it holds rows in audit\)"):
            dst.load(document, "x.json")
        assert len(dst.audit_log("f")) == 1  # nothing was written


def test_import_refuses_another_schema_version_or_format(
    state_location: Path | str, tmp_path: Path
) -> None:
    with State.open(tmp_path / "src.db") as src:
        document = src.export()
    with State.open(state_location) as dst:
        newer = {**document, "schema_version": document["schema_version"] + 1}
        with pytest.raises(StateError, match="upgrade corral") as caught:
            dst.load(newer, "new.json")
        assert caught.value.schema_version == document["schema_version"] + 1
        with pytest.raises(StateError, match="not a corral state export"):
            dst.load({"tables": {}}, "other.json")
        with pytest.raises(StateError, match="format version 2"):
            dst.load({**document, "version": 2}, "v2.json")


def test_a_bad_row_writes_nothing(state_location: Path | str, tmp_path: Path) -> None:
    with State.open(tmp_path / "src.db") as src:
        _fill(src)
        document = src.export()
    document["tables"]["audit"].append(dict(document["tables"]["audit"][0]))  # id clash
    with State.open(state_location) as dst:
        with pytest.raises(StateError):
            dst.load(document, "bad.json")
        assert dst.fleet_id("f") is None and dst.builds("f") == []
