"""A build whose layer-cache lookup races an image removal elsewhere is built again."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.engines import podman
from corral.engines.podman import BUILD_ATTEMPTS, PodmanEngine
from corral.errors import BuildError, EngineError

# Fails its first `failures` builds as podman 4.3 does when another podman removed an
# image whose layer the build's cache lookup had found; inspect misses the image built
# its first `misses` times, as podman 4.3 does while another podman removes images.
FAKE_PODMAN = """#!/bin/sh
case "$1" in
  build)
    n=$(cat "{count}" 2>/dev/null || echo 0); echo $((n + 1)) > "{count}"
    echo "STEP 1/2: FROM base"
    if [ "$n" -lt {failures} ]; then
      echo "Error: checking if cached image exists from a previous build: getting top \
layer info: layer not known"
      exit 125
    fi
    echo "COMMIT"; exit 0;;
  image)
    n=$(cat "{count}.inspect" 2>/dev/null || echo 0); echo $((n + 1)) > "{count}.inspect"
    if [ "$n" -lt {misses} ]; then
      echo "Error: inspecting object: {missed}: image not known" >&2; exit 125
    fi
    echo '[{{"Id": "abc", "RepoTags": ["localhost/x:1"]}}]';;
esac
"""


def fake_podman(
    tmp_path: Path, failures: int, misses: int = 0, missed: str = "localhost/x:1"
) -> tuple[PodmanEngine, Path]:
    count = tmp_path / "builds"
    script = tmp_path / "podman"
    script.write_text(
        FAKE_PODMAN.format(count=count, failures=failures, misses=misses, missed=missed)
    )
    script.chmod(0o755)
    (tmp_path / "Containerfile").write_text("FROM base\n")
    return PodmanEngine(binary=str(script), api=None), count


def build(engine: PodmanEngine, tmp_path: Path, log: list[str]) -> str:
    image = engine.build_image(
        tmp_path, tmp_path / "Containerfile", "localhost/x:1", {}, log.append
    )
    return image.id


def test_a_build_that_lost_its_cached_layer_is_built_again(tmp_path: Path) -> None:
    engine, count = fake_podman(tmp_path, failures=1)
    log: list[str] = []
    assert build(engine, tmp_path, log) == "abc"
    assert count.read_text().strip() == "2"
    assert any("building again" in line for line in log), log


def test_a_build_that_keeps_losing_it_fails_after_its_attempts(tmp_path: Path) -> None:
    engine, count = fake_podman(tmp_path, failures=99)
    with pytest.raises(BuildError, match="exit 125"):
        build(engine, tmp_path, [])
    assert count.read_text().strip() == str(BUILD_ATTEMPTS)


def test_any_other_failure_is_not_retried(tmp_path: Path) -> None:
    engine, count = fake_podman(tmp_path, failures=99)
    script = tmp_path / "podman"
    script.write_text(script.read_text().replace("layer not known", "no space left on device"))
    with pytest.raises(BuildError):
        build(engine, tmp_path, [])
    assert count.read_text().strip() == "1"


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podman, "REQUIRE_IMAGE_DELAYS", (0, 0, 0, 0))


@pytest.mark.parametrize("missed", ["localhost/x:1", "1f2e3d4c5b6a"])
def test_an_image_podman_misses_just_after_building_it_is_looked_up_again(
    tmp_path: Path, no_waits: None, missed: str
) -> None:
    """Missed by its own name, or while podman says another image is not known."""
    engine, count = fake_podman(tmp_path, failures=0, misses=3, missed=missed)
    assert build(engine, tmp_path, []) == "abc"
    assert Path(f"{count}.inspect").read_text().strip() == "4"


def test_an_image_that_stays_missing_after_a_build_is_an_engine_error(
    tmp_path: Path, no_waits: None
) -> None:
    engine, count = fake_podman(tmp_path, failures=0, misses=99)
    with pytest.raises(EngineError, match="reported success but image localhost/x:1 is missing"):
        build(engine, tmp_path, [])
    assert Path(f"{count}.inspect").read_text().strip() == "5"


def test_a_lookup_that_keeps_missing_another_image_is_never_read_as_missing(
    tmp_path: Path, no_waits: None
) -> None:
    """A rollback read "missing" as "its images are gone"; an error says what happened."""
    engine, count = fake_podman(tmp_path, failures=0, misses=99, missed="1f2e3d4c5b6a")
    with pytest.raises(EngineError, match=r"kept answering .*1f2e3d4c5b6a: image not known"):
        engine.inspect_image("localhost/x:1")
    assert Path(f"{count}.inspect").read_text().strip() == "5"


def test_an_image_podman_does_not_know_is_missing_at_once(tmp_path: Path) -> None:
    engine, count = fake_podman(tmp_path, failures=0, misses=99)
    assert engine.inspect_image("localhost/x:1") is None
    assert Path(f"{count}.inspect").read_text().strip() == "1"


LISTING_PODMAN = """#!/bin/sh
n=$(cat "{count}" 2>/dev/null || echo 0); echo $((n + 1)) > "{count}"
if [ "$n" -lt 2 ]; then echo "Error: 5a4b3c2d1e0f: image not known" >&2; exit 125; fi
case "$1" in
  images) echo abc;;
  image) echo '[{{"Id": "abc", "Labels": {{"io.corral.fleet": "shop"}}}}]';;
esac
"""


def test_a_listing_that_meets_an_image_removed_meanwhile_is_made_again(
    tmp_path: Path, no_waits: None
) -> None:
    count = tmp_path / "calls"
    script = tmp_path / "podman"
    script.write_text(LISTING_PODMAN.format(count=count))
    script.chmod(0o755)
    engine = PodmanEngine(binary=str(script), api=None)
    assert [i.id for i in engine.list_images({"io.corral.fleet": "shop"})] == ["abc"]
    assert count.read_text().strip() == "4"  # two misses, then the listing and inspection
