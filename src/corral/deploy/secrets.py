"""Secret values at deploy time: which ones a command needs, and how a new value is seen.

**Scoped.** A role's ``run.secrets`` are the only values needed to deploy it: a deploy or
plan of some roles reads the values of those roles' secrets (plus those of any other role
the plan must start an instance of), never the whole fleet's.

**Rotation.** A release records, per role, a *keyed hash* of each secret's value
(HMAC-SHA256 of the name and the value), never the value. The hashes are part of the
role's instance configuration (:attr:`RoleRelease.config_hash`), so a new value makes the
planner replace the role's instances, and the plan can name the secret that changed.

**The key** is 32 random bytes per fleet in a 0600 file beside the state database
(``<fleet>.secret-key``, made through :mod:`corral.hostfiles`), deliberately not in the
database: whoever holds a copy of the database alone (a backup, a file sent for
debugging) cannot test a guessed password against the hashes, since without the key
HMAC-SHA256 is as hard to guess as the key itself. Whoever can read both files can test
guesses at HMAC speed; that is root on the deploy host, who can read Podman's secret
store anyway. The instance label ``io.corral.config-hash`` is a hash of the whole
configuration with the HMACs mixed in, so it cannot be used to test guesses either.
If the key file is lost, a new key is made and every role with secrets is replaced once
on its next deploy (its hashes no longer match).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex
from typing import Protocol

from corral.deploy.desired import Desired, RoleRelease
from corral.errors import GateError, StateError
from corral.hostfiles import create_private, read_private, write_private
from corral.state.filelock import file_lock
from corral.state.location import KEY_SUFFIX

KEY_BYTES = 32


class Hasher(Protocol):
    """What makes the keyed hashes: a :class:`SecretKey`, or a fleet's :class:`KeyFile`."""

    def hashes(self, names: Iterable[str], values: Mapping[str, str]) -> dict[str, str]:
        """The keyed hash of each of ``names``' values (by name)."""
        ...


@dataclass(frozen=True)
class SecretKey:
    """A fleet's key for the keyed hashes of its secret values."""

    key: bytes = field(repr=False)

    def __repr__(self) -> str:  # never the key, in a traceback or a log
        return "SecretKey(***)"

    def digest(self, name: str, value: str) -> str:
        """HMAC-SHA256 of ``name`` and ``value`` (the name too: one value under two names
        does not give the same hash, so the hashes do not tell that values are shared)."""
        message = name.encode() + b"\0" + os.fsencode(value)
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def hashes(self, names: Iterable[str], values: Mapping[str, str]) -> dict[str, str]:
        """The keyed hash of each of ``names``' values."""
        return {name: self.digest(name, values[name]) for name in sorted(set(names))}


@dataclass
class KeyFile:
    """A fleet's key, read (or made) only when a hash is needed: a fleet without secrets
    never gets a key file."""

    folder: Path  # the fleet's files' folder (StateLocation.files)
    fleet: str
    _key: SecretKey | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def key(self) -> SecretKey:
        """The key, loaded once (see :func:`load_key`)."""
        with self._lock:  # the executor's threads start instances side by side
            if self._key is None:
                self._key = load_key(self.folder, self.fleet)
            return self._key

    def hashes(self, names: Iterable[str], values: Mapping[str, str]) -> dict[str, str]:
        """As :meth:`SecretKey.hashes`; no key is read for no names."""
        wanted = sorted(set(names))
        return self.key().hashes(wanted, values) if wanted else {}


def key_path(folder: Path, fleet: str) -> Path:
    """Where ``fleet``'s key lives: in the folder of the fleet's files (beside a state
    file, or the fleet's home for a state URL), never in the state itself."""
    return folder / f"{fleet}{KEY_SUFFIX}"


def load_key(folder: Path, fleet: str) -> SecretKey:
    """The fleet's key, made (random, 0600) the first time it is needed.

    Raises:
        StateError: the key file cannot be made or read, or it is damaged.
    """
    path = key_path(folder, fleet)
    # A lock: two corral processes making the first key must agree on one.
    with file_lock(folder, "secret-key", wait=10, purpose="make the secret key"):
        try:
            if create_private(path):
                write_private(path, token_hex(KEY_BYTES).encode() + b"\n")
            text = read_private(path).decode("ascii", "replace").strip()
        except OSError as exc:
            raise StateError(f"cannot use the secret key {path}: {exc}", path=str(path)) from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StateError(
            f"the secret key {path} is damaged; remove it (every role with secrets is then "
            "replaced on its next deploy)",
            path=str(path),
        )
    return SecretKey(key)


def secret_names(desired: Desired, roles: Iterable[str]) -> list[str]:
    """Every secret the ``roles`` of ``desired`` use."""
    return sorted({name for role in roles if role in desired for name in desired[role].run.secrets})


def live_values(
    names: Iterable[str], advice: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The live values of ``names``, from corral's environment.

    Raises:
        GateError: one is not set (``advice`` says what to do).
    """
    env = os.environ if environ is None else environ
    wanted = sorted(set(names))
    missing = [name for name in wanted if name not in env]
    if missing:
        raise GateError(
            f"secret(s) not set in corral's environment: {', '.join(missing)}; "
            f"{advice} (their values are never stored)",
            secrets=missing,
        )
    return {name: env[name] for name in wanted}


def stamped(
    desired: Desired, roles: Collection[str], values: Mapping[str, str], key: Hasher
) -> dict[str, RoleRelease]:
    """``desired`` with the keyed hashes of today's values recorded for ``roles``; the
    other roles keep the hashes their release recorded."""
    return {
        name: rr.with_secret_hashes(key.hashes(rr.run.secrets, values)) if name in roles else rr
        for name, rr in desired.items()
    }


def changed_secrets(before: RoleRelease, after: RoleRelease) -> list[str]:
    """The secrets of ``after`` whose recorded hash differs from ``before``'s (only where
    ``before`` recorded one: an older release kept none)."""
    return [
        name
        for name in sorted(after.secret_hashes)
        if name in before.secret_hashes and before.secret_hashes[name] != after.secret_hashes[name]
    ]


def check_unchanged(
    desired: Desired,
    roles: Iterable[str],
    values: Mapping[str, str],
    key: Hasher,
    watcher: bool = False,
) -> None:
    """Refuse to start instances of a role deployed earlier (not named in this deploy)
    with a value other than the one its release recorded: that would rotate its secret
    in one instance only. ``watcher``: the refusal is the watcher's (its advice differs).

    Raises:
        GateError: naming the role, the secrets and what to do.
    """
    for role in sorted(roles):
        rr = desired[role]
        now = stamped({role: rr}, {role}, values, key)[role]
        changed = changed_secrets(rr, now)
        if not changed:
            continue
        names = ", ".join(changed)
        if watcher:
            fix = (
                f"the watcher must start an instance of {role} but holds another value "
                f"of {names} than {role}'s release was deployed with: restart corral "
                "watch with the value of the last deploy (a rotation's new value)"
            )
        else:
            fix = (
                f"this deploy must start an instance of {role}: deploy {role} too "
                f"(corral deploy ... {role}) to replace all its instances, or export the "
                "value it was deployed with"
            )
        raise GateError(
            f"secret {names} of role {role} changed since {role} was deployed, and {fix}",
            role=role,
            secrets=changed,
        )
