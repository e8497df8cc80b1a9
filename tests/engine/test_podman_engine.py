"""The Podman engine's own promises, checked against the real podman."""

from __future__ import annotations

import uuid

from corral.engines.podman import PodmanEngine


def test_listing_by_several_labels_needs_all_of_them(engine: PodmanEngine) -> None:
    # podman ORs repeated label filters for volumes and networks; corral must not.
    tag = uuid.uuid4().hex[:8]
    both = {"io.corral.fleet": f"corral-test-{tag}", "io.corral.env": "test-x"}
    one = {"io.corral.fleet": f"corral-test-{tag}", "io.corral.env": "live"}
    names = {f"corral-test-{tag}-both": both, f"corral-test-{tag}-one": one}
    try:
        for name, labels in names.items():
            engine.ensure_volume(name, labels)
            engine.ensure_network(name, labels)
        assert engine.list_volumes(both) == [f"corral-test-{tag}-both"]
        assert engine.list_networks(both) == [f"corral-test-{tag}-both"]
    finally:
        for name in names:
            engine.remove_volume(name)
            engine.remove_network(name)
