"""A build whose layer-cache lookup races an image removal elsewhere is built again."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.engines.podman import BUILD_ATTEMPTS, PodmanEngine
from corral.errors import BuildError

# Fails its first `failures` builds as podman 4.3 does when another podman removed an
# image whose layer the build's cache lookup had found; inspect finds the image.
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
  image) echo '[{{"Id": "abc", "RepoTags": ["localhost/x:1"]}}]';;
esac
"""


def fake_podman(tmp_path: Path, failures: int) -> tuple[PodmanEngine, Path]:
    count = tmp_path / "builds"
    script = tmp_path / "podman"
    script.write_text(FAKE_PODMAN.format(count=count, failures=failures))
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
