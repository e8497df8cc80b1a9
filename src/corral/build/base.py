"""Base root filesystems made locally from Debian with mmdebstrap, cached by input hash.

No registry can be reached, so every image starts from a tarball bootstrapped here and
imported into the engine. Bases are shared by every fleet on the host: the image tag is the
hash of the recipe, so two specs asking for the same Debian get the same base.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from corral import __version__
from corral.build.hashing import hash_json
from corral.engines.base import Engine, ImageInfo
from corral.errors import BuildError, MissingToolError, UsageError
from corral.formats import label
from corral.progress import Progress
from corral.spec.model import DebianBase

# Bump when the way a base is made changes, so old cached bases are not reused.
RECIPE_VERSION = 1
# Fixed timestamps make the bootstrap reproducible (mmdebstrap honours SOURCE_DATE_EPOCH).
SOURCE_DATE_EPOCH = "1700000000"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_REPO = "localhost/corral-base"
# Where bases are tagged, when not BASE_REPO: a test (or a host trying a refresh) keeps its
# bases apart from the ones every fleet shares.
BASE_REPO_ENV = "CORRAL_BASE_REPO"
_REPO = re.compile(r"^localhost/[a-z0-9][a-z0-9._/-]{0,200}$")
LABEL_BASE_HASH = label("base-hash")
#: What a base is a base *of* (see :func:`debian_line`); a refreshed base keeps its line.
LABEL_BASE_LINE = label("base-line")
#: The archive or snapshot a base came from (its apt sources, one per line).
LABEL_BASE_SOURCE = label("base-source")
_NETWORK_HINTS = (
    "Temporary failure resolving",
    "Could not connect",
    "Failed to fetch",
    "Connection refused",
    "Unable to connect",
    "Network is unreachable",
)


@dataclass(frozen=True)
class BaseRecipe:
    suite: str
    variant: str
    packages: tuple[str, ...]
    mirror: str

    @classmethod
    def from_spec(cls, base: DebianBase) -> BaseRecipe:
        mirror = os.environ.get("CORRAL_DEBIAN_MIRROR", DEFAULT_MIRROR)
        return cls(base.debian, base.variant, tuple(sorted(set(base.packages))), mirror)

    @property
    def hash(self) -> str:
        return hash_json(
            {
                "recipe": RECIPE_VERSION,
                "suite": self.suite,
                "variant": self.variant,
                "packages": list(self.packages),
                "mirror": self.mirror,
                "epoch": SOURCE_DATE_EPOCH,
            }
        )

    @property
    def line(self) -> str:
        """What bases of this recipe are bases *of*: suite, variant and packages, but not
        the mirror, so a base from a later snapshot replaces one from an earlier."""
        return debian_line(self.suite, self.variant, self.packages)

    @property
    def source(self) -> str:
        """The archive the bootstrap reads: its apt source lines."""
        return "\n".join(self.sources())

    @property
    def tag(self) -> str:
        """The base's name: its first bootstrap, or the newest refresh (``refresh.py``)."""
        return f"{base_repo()}:{self.suite}-{self.hash[:16]}"

    def sources(self) -> list[str]:
        """apt source lines: the release, its updates, and security fixes."""
        security = self.mirror.rstrip("/").removesuffix("/debian") + "/debian-security"
        return [
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
            f"deb {security} {self.suite}-security main",
        ]


def debian_line(suite: str, variant: str, packages: tuple[str, ...]) -> str:
    """``debian:<suite>:<variant>:<hash of the sorted package names>``."""
    return f"debian:{suite}:{variant}:{hash_json(sorted(set(packages)))[:12]}"


def base_repo() -> str:
    """BASE_REPO, or the repository ``CORRAL_BASE_REPO`` names (checked: a local name).

    Raises:
        UsageError: the variable holds something else than ``localhost/<name>``.
    """
    repo = os.environ.get(BASE_REPO_ENV, "") or BASE_REPO
    if not _REPO.match(repo):
        raise UsageError(
            f"{BASE_REPO_ENV}={repo!r} is not a local image repository (localhost/...)"
        )
    return repo


def ensure_base(engine: Engine, base: DebianBase, progress: Progress) -> ImageInfo:
    """The base image for ``base``, bootstrapping and importing it when not cached.

    Raises:
        MissingToolError: mmdebstrap is not installed.
        BuildError: the bootstrap failed (unreachable mirror, disk full...); nothing is kept.
    """
    cached = engine.inspect_image(BaseRecipe.from_spec(base).tag)
    return cached if cached is not None else bootstrap_base(engine, base, progress)


def bootstrap_base(engine: Engine, base: DebianBase, progress: Progress) -> ImageInfo:
    """A new mmdebstrap run of ``base``, imported under its tag (which moves to it).

    Raises:
        MissingToolError: mmdebstrap is not installed.
        BuildError: the bootstrap failed (unreachable mirror, disk full...); nothing is kept.
    """
    recipe = BaseRecipe.from_spec(base)
    if shutil.which("mmdebstrap") is None:
        raise MissingToolError("mmdebstrap", "apt-get install mmdebstrap")
    progress.step(
        "base",
        f"bootstrapping Debian {recipe.suite} ({len(recipe.packages)} extra "
        "packages) with mmdebstrap",
    )
    with tempfile.TemporaryDirectory(prefix="corral-base-") as tmp:
        tarball = Path(tmp, "rootfs.tar")
        _bootstrap(recipe, tarball, progress)
        progress.step("base", f"importing {recipe.tag}")
        labels = {
            LABEL_BASE_HASH: recipe.hash,
            label("base-suite"): recipe.suite,
            LABEL_BASE_LINE: recipe.line,
            LABEL_BASE_SOURCE: recipe.source,
            label("corral-version"): __version__,
        }
        return engine.import_rootfs(
            tarball,
            recipe.tag,
            labels,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        )


def _bootstrap(recipe: BaseRecipe, tarball: Path, progress: Progress) -> None:
    argv = ["mmdebstrap", f"--variant={recipe.variant}", "--format=tar", "--verbose"]
    if recipe.packages:
        argv.append("--include=" + ",".join(recipe.packages))
    argv += [recipe.suite, str(tarball), *recipe.sources()]
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "LC_ALL": "C.UTF-8"}
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                tail.append(line.rstrip())
                progress.log("base", line.rstrip())
        except BaseException:
            proc.kill()
            raise
        status = proc.wait()
    if status != 0:
        raise BuildError(_failure_message(recipe, list(tail)), log=list(tail))


def _failure_message(recipe: BaseRecipe, tail: list[str]) -> str:
    if any(hint in line for line in tail for hint in _NETWORK_HINTS):
        return (
            f"cannot reach the Debian mirror {recipe.mirror} to bootstrap "
            f"{recipe.suite}; check the network or set CORRAL_DEBIAN_MIRROR"
        )
    if any("No space left on device" in line for line in tail):
        return "the disk is full: the Debian bootstrap needs about 300 MB of free space"
    return f"mmdebstrap failed to bootstrap Debian {recipe.suite}"
