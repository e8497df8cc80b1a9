"""A local Debian archive made on the spot: a dummy package built with dpkg-deb, indexed
with dpkg-scanpackages, to stand for a security fix landing in the archive (issue 14).

The package ``corral-fixture`` installs ``/usr/share/corral-fixture/status`` holding a
word the test chooses ("ok", "broken"...), so a fleet's app can read what it runs on.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PACKAGE = "corral-fixture"
STATUS_FILE = f"/usr/share/{PACKAGE}/status"


def build_deb(out: Path, version: str, status: str = "ok") -> Path:
    """``corral-fixture_<version>_all.deb`` in ``out``, built with dpkg-deb."""
    for tool in ("dpkg-deb", "dpkg-scanpackages"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: apt-get install dpkg-dev (scripts/setup)")
    root = out / f"build-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    share = root / "usr" / "share" / PACKAGE
    share.mkdir(parents=True)
    (share / "status").write_text(status + "\n")
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: corral tests <tests@corral.invalid>\nSection: misc\nPriority: optional\n"
        "Description: a dummy package standing for a security fix\n"
    )
    deb = out / f"{PACKAGE}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(root)
    return deb


def make_archive(folder: Path, version: str, status: str = "ok") -> Path:
    """A flat archive in ``folder`` holding ``corral-fixture`` ``version``, indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    build_deb(folder, version, status)
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (folder / "Packages").write_text(index)
    return folder
