"""The backup repository itself, with the real restic and rclone (no container needed).

A folder backed up through corral's append-only server and restored comes back byte for
byte, with its owners, modes and links (checked by this file's own listing, not corral's
checksum). And whoever holds the deploy path's access (the server's URL and the
repository's password: all a compromised deploy could steal) cannot remove or rewrite a
snapshot: the server answers 403 to a DELETE or an overwrite of the snapshot's file, and
``restic forget --prune`` fails with the snapshot still there and ``restic check`` green.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from corral.backup.restic import Password, Restic
from corral.backup.server import append_only_server
from corral.errors import BackupError


def _tree(folder: Path) -> list[tuple[str, ...]]:
    """Every entry below ``folder``: path, mode, owner, group, size, content hash, link."""
    rows = []
    for root, dirs, files in os.walk(folder):
        for name in sorted([*dirs, *files]):
            path = Path(root, name)
            info = path.lstat()
            link = os.readlink(path) if path.is_symlink() else ""
            data = b"" if link or path.is_dir() else path.read_bytes()
            rows.append(
                (
                    str(path.relative_to(folder)),
                    oct(info.st_mode),
                    str(info.st_uid),
                    str(info.st_gid),
                    str(len(data)),
                    hashlib.sha256(data).hexdigest(),
                    link,
                )
            )
    return sorted(rows)


def _volume(folder: Path) -> Path:
    """A folder shaped like a volume's: nested files, modes, owners, a link, 1 MiB."""
    (folder / "db" / "base").mkdir(parents=True)
    (folder / "db" / "base" / "16384").write_bytes(os.urandom(1 << 20))
    (folder / "db" / "PG_VERSION").write_text("15\n")
    (folder / "db" / "secret.conf").write_text("x")
    (folder / "db" / "secret.conf").chmod(0o600)
    os.chown(folder / "db", 999, 998)
    (folder / "current").symlink_to("db/PG_VERSION")
    (folder / "empty").mkdir(mode=0o750)
    return folder


@pytest.fixture
def restic_access(tmp_path: Path) -> tuple[Path, Password]:
    secret = tmp_path / "password"
    secret.write_text("deploy-path-password")
    secret.chmod(0o600)
    return tmp_path / "repository", Password(file=secret, value="deploy-path-password")


def test_a_round_trip_through_the_append_only_server_is_byte_identical(
    tmp_path: Path, restic_access: tuple[Path, Password]
) -> None:
    repository, password = restic_access
    source = _volume(tmp_path / "vol" / "_data")
    with append_only_server(repository) as url:
        restic = Restic(url, password)
        assert restic.ensure_initialised()
        snapshot, added = restic.backup_folder(source, ["corral", "volume=data"], "test")
        target = tmp_path / "new" / "_data"
        target.mkdir(parents=True)
        restic.restore(snapshot, target.parent)
    assert added > 1 << 20
    assert _tree(target) == _tree(source)
    assert (target.stat().st_mode, target.stat().st_uid) == (source.stat().st_mode, 0)


def test_the_deploy_paths_access_cannot_remove_or_rewrite_a_snapshot(
    tmp_path: Path, restic_access: tuple[Path, Password]
) -> None:
    repository, password = restic_access
    source = _volume(tmp_path / "vol" / "_data")
    with append_only_server(repository) as url:
        restic = Restic(url, password)
        restic.ensure_initialised()
        snapshot, _ = restic.backup_folder(source, ["corral"], "test")
        [name] = [p.name for p in (repository / "snapshots").iterdir()]
        kept = (repository / "snapshots" / name).read_bytes()
        base = url.removeprefix("rest:")
        for method, data in (("DELETE", None), ("POST", b"rewritten")):
            for what in (f"snapshots/{name}", "config"):
                request = urllib.request.Request(base + what, data=data, method=method)
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=10)
                assert refused.value.code == 403, f"{method} {what} was not refused"
        env = {**restic.environment(), "RESTIC_PROGRESS_FPS": "1"}
        forget = subprocess.run(
            ["restic", "forget", "--prune", snapshot],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert forget.returncode != 0 and "403" in forget.stderr
        assert [s.id for s in restic.snapshots()] == [name]
    assert (repository / "snapshots" / name).read_bytes() == kept
    direct = Restic(str(repository), password)  # what pruning would use: still sound
    assert direct.check() is None


def test_a_wrong_password_is_said_so_and_is_not_taken_for_a_missing_or_broken_repository(
    tmp_path: Path, restic_access: tuple[Path, Password]
) -> None:
    # Found by a trial: `corral backup` with a wrong password tried `restic init` and failed
    # with "config file already exists"; `corral backup verify` recorded a good backup's
    # drill as failed. Both now stop on the password, before anything is recorded.
    repository, password = restic_access
    with append_only_server(repository) as url:
        assert Restic(url, password).ensure_initialised() is True
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-password")
        wrong.chmod(0o600)
        stranger = Restic(url, Password(file=wrong, value="not-the-password"))
        with pytest.raises(BackupError, match="password does not open the repository"):
            stranger.ensure_initialised()
        assert Restic(url, password).ensure_initialised() is False  # the repository is whole
    with pytest.raises(BackupError, match="password does not open the repository"):
        Restic(str(repository), Password(file=wrong, value="not-the-password")).check()
    assert Restic(str(repository), password).check() is None
