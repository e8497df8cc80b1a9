"""Volumes in the state, on both backends: recorded, retained, never forgotten (their
backups are the backups store's, tested in test_backups.py and test_data_guard.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.state import State


def test_a_volume_is_recorded_retained_and_used_again(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        made = st.record_volume("f", "f-db-data", "db", "data", "/var/lib/db", release=3)
        assert (made.role, made.volume, made.created_release) == ("db", "data", 3)
        assert made.protection == "protected" and not made.retained
        st.retain_volume("f", "f-db-data", "role db is no longer in the spec")
        kept = st.volume("f", "f-db-data")
        assert kept is not None and kept.retained
        assert kept.retained_reason == "role db is no longer in the spec"
        again = st.record_volume("f", "f-db-data", "db", "data", "/srv/db", release=4)
        assert not again.retained and again.retained_reason is None
        assert again.path == "/srv/db" and again.created_release == 3  # creation is kept
        assert [v.name for v in st.volumes("f")] == ["f-db-data"]
        assert st.volumes("other") == []


def test_a_deleted_volume_stays_as_history_and_a_new_one_starts_afresh(
    state_location: Path | str,
) -> None:
    with State.open(state_location) as st:
        st.record_volume("f", "f-db-data", "db", "data", "/var/lib/db", release=1)
        st.volume_deleted("f", "f-db-data")
        assert st.volumes("f") == []
        (gone,) = st.volumes("f", deleted=True)
        assert gone.deleted_at is not None
        with pytest.raises(ValueError, match="no recorded volume f-db-data"):
            st.retain_volume("f", "f-db-data", "gone")
        fresh = st.record_volume("f", "f-db-data", "db", "data", "/var/lib/db", release=9)
        assert fresh.deleted_at is None and not fresh.retained
        assert fresh.created_release == 9


def test_unknown_volumes_are_refused_by_name(state_location: Path | str) -> None:
    with State.open(state_location) as st:
        for call in (
            lambda: st.retain_volume("f", "f-x-y", "gone"),
            lambda: st.volume_deleted("f", "f-x-y"),
        ):
            with pytest.raises(ValueError, match="f-x-y"):
                call()
