"""Named exclusive locks as leases in the state database: :class:`LeaseLocks`.

A lock is a row of ``locks``: who holds it (a random id per process, user, host, pid,
command), since when, and until when (``expires_at``). The rules:

- **Take**: in one write transaction, a process takes lock ``name`` if no row holds it,
  if the row's lease has expired, or if the row was written on this host by a process
  that no longer exists (so a holder killed with kill -9 frees the lock at once for the
  next run on its host; on any other host its pid means nothing, and the next run waits
  for the lease to run out).
- **Renew**: while it holds the lock, a background thread of the holder moves
  ``expires_at`` to now + the lease (15 s) every 5 s, through its own connection, only
  while the row is still its lease. A holder that stalls longer than the lease (stopped,
  swapped out, a busy database) loses the lock, and its renewals and release then leave
  the new holder's row alone.
- **Release**: leaving the block deletes the row, if it is still this lease's.

Times are Unix seconds of the taker's clock: hosts that share a state must keep their
clocks within a fraction of the lease of each other (NTP does).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from corral.errors import LockedError, StateError
from corral.scrub import Scrubber
from corral.state import db
from corral.state.builds import pid_alive
from corral.state.records import (
    LockHolder,
    current_host,
    current_user,
    lock_holder_from_row,
    utc_now,
)

#: How long a lock stays held without a renewal, and how often its holder renews it.
LEASE_S = 15.0
RENEW_S = 5.0
_POLL_S = 0.1
_LOCK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_log = logging.getLogger(__name__)


def process_id() -> str:
    """This process's random holder id; a forked child gets its own."""
    return _random_id_of(os.getpid())


@functools.cache
def _random_id_of(pid: int) -> str:
    # Keyed by pid so that a fork (which copies this cache) never shares its parent's id.
    return secrets.token_hex(8)


def check_name(name: str) -> str:
    """``name`` if it is a plain word (letters, digits, ``_ . -``); else ValueError."""
    if not _LOCK_NAME.match(name):
        raise ValueError(f"invalid lock name {name!r}")
    return name


def takeable(holder: LockHolder, now: float, host: str) -> bool:
    """Whether another process may take the lock ``holder`` has at Unix time ``now``:
    its lease expired, or it was taken on ``host`` (this one) by a process now gone."""
    return holder.expires_at <= now or (holder.host == host and not pid_alive(holder.pid))


def read_holder(conn: db.Conn, name: str) -> LockHolder | None:
    """The row holding lock ``name``, expired or not, or None."""
    row = conn.execute("SELECT * FROM locks WHERE name = ?", (name,)).fetchone()
    return None if row is None else lock_holder_from_row(row)


def _write_holder(conn: db.Conn, holder: LockHolder) -> None:
    conn.execute("DELETE FROM locks WHERE name = ?", (holder.name,))
    conn.execute(
        'INSERT INTO locks (name, lease, holder, "user", host, pid, command,'
        " acquired_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            holder.name,
            holder.lease,
            holder.holder,
            holder.user,
            holder.host,
            holder.pid,
            holder.command,
            holder.acquired_at,
            holder.expires_at,
        ),
    )


def renew(conn: db.Conn, holder: LockHolder, lease_s: float) -> bool:
    """Move ``holder``'s lease to now + ``lease_s``; False if the lock is no longer its."""
    cursor = conn.execute(
        "UPDATE locks SET expires_at = ? WHERE name = ? AND lease = ?",
        (time.time() + lease_s, holder.name, holder.lease),
    )
    return cursor.rowcount == 1


class LeaseLocks:
    """:class:`~corral.state.protocols.LockStore` as leases in the SQLite state.

    Args:
        handle: the state's connection (taking and releasing go through it).
        scrubber: what the command text goes through before it is stored.
        lease_s: how long a lock stays held without a renewal.
        renew_s: how often the holder renews it; well under ``lease_s``.
    """

    def __init__(
        self,
        handle: db.Handle,
        scrubber: Scrubber,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
    ) -> None:
        if not 0 < renew_s < lease_s:
            raise ValueError(f"a lease of {lease_s}s must be renewed more often than that")
        self._db = handle
        self._scrubber = scrubber
        self.lease_s = lease_s
        self.renew_s = renew_s
        self._held: dict[str, Lease] = {}  # the locks this store holds now, by name

    def holder(self, name: str) -> LockHolder | None:
        """Who holds lock ``name`` now (a lease that is not takeable), or None.

        Raises:
            StateError: the database cannot be read.
            ValueError: ``name`` is not a plain word.
        """
        with self._db.read(f"reading the {check_name(name)} lock"):
            found = read_holder(self._db.conn, name)
        if found is None or takeable(found, time.time(), current_host()):
            return None
        return found

    @contextmanager
    def hold(
        self,
        name: str,
        wait: float = 0.0,
        purpose: str = "",
        waiting: Callable[[str], None] | None = None,
    ) -> Iterator[Lease]:
        """Hold lock ``name`` for the block, renewing its lease meanwhile.

        Args:
            name: the lock's name, e.g. ``"deploy"``.
            wait: seconds to keep trying before giving up; 0 tries once.
            purpose: the command, shown to whoever is refused, e.g. ``"deploy web"``.
            waiting: told once, with the holder in words, when this call has to wait.

        Raises:
            LockedError: someone else holds it after ``wait`` seconds; the message says
                who, where, since when and for what, and ``holder`` has it as data.
            StateError: the lock cannot be read or written.
            ValueError: ``name`` is not a plain word.
        """
        told = _once(waiting if wait > 0 else None)
        session = self._advisory(check_name(name), wait, told)
        try:
            mine = self._acquire(name, wait, self._scrubber.text(purpose), told)
            lease = Lease(self._db.reopen, mine, self.lease_s, self.renew_s)
            lease.start()
            self._held[mine.name] = lease
            try:
                yield lease
            finally:
                self._held.pop(mine.name, None)
                lease.stop()
                self._release(mine)
        finally:
            if session is not None:
                session.close()  # ends the session, and with it the advisory lock

    def _advisory(self, name: str, wait: float, told: Callable[[str], None]) -> db.Conn | None:
        """On PostgreSQL, a session-level advisory lock for ``name`` on a connection of
        its own, held until the block ends: the server frees it the moment the holder's
        session dies, on whatever host. None on SQLite (the lease row is the lock).

        Raises:
            LockedError: another session holds it after ``wait`` seconds (the holder row
                names who).
        """
        if self._db.dialect != db.POSTGRESQL:
            return None
        session = self._db.reopen()
        deadline = time.monotonic() + max(wait, 0.0)
        try:
            while True:
                with self._db.read(f"taking the {name} advisory lock"):
                    row = session.execute(
                        "SELECT pg_try_advisory_lock(hashtext(?))", (f"corral:{name}",)
                    ).fetchone()
                if row[0]:
                    return session
                if time.monotonic() >= deadline:
                    raise self._refusal(name)
                told(self._refusal(name).message)
                time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))
        except BaseException:
            session.close()
            raise

    def _refusal(self, name: str) -> LockedError:
        with self._db.read(f"reading the {name} lock"):
            seen = read_holder(self._db.conn, name)
        if seen is None:
            return LockedError(f"the {name} lock is held by another session", lock=name)
        return LockedError(seen.describe(), lock=name, holder=seen.to_dict())

    def check_held(self, name: str) -> None:
        """Raise LockedError if lock ``name``, held through this store, was lost (see
        ``Lease.check``); nothing when this store does not hold it."""
        lease = self._held.get(name)
        if lease is not None:
            lease.check()

    def _acquire(
        self, name: str, wait: float, command: str, told: Callable[[str], None]
    ) -> LockHolder:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            mine = self._new_holder(name, command)
            blocker = self._try_take(mine)
            if blocker is None:
                return mine
            if time.monotonic() >= deadline:
                raise LockedError(blocker.describe(), lock=name, holder=blocker.to_dict())
            told(blocker.describe())
            time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))

    def _new_holder(self, name: str, command: str) -> LockHolder:
        return LockHolder(
            name=name,
            lease=secrets.token_hex(16),
            holder=process_id(),
            user=current_user(),
            host=current_host(),
            pid=os.getpid(),
            command=command,
            acquired_at=utc_now(),
            expires_at=time.time() + self.lease_s,
        )

    def _try_take(self, mine: LockHolder) -> LockHolder | None:
        """Take the lock for ``mine``; None if taken, else who holds it."""
        host = mine.host
        with self._db.read(f"reading the {mine.name} lock"):
            seen = read_holder(self._db.conn, mine.name)
        if seen is not None and not takeable(seen, time.time(), host):
            return seen  # a read first: polling must not queue for the write lock
        with self._db.write(f"taking the {mine.name} lock") as conn:
            seen = read_holder(conn, mine.name)
            if seen is not None and not takeable(seen, time.time(), host):
                return seen
            _write_holder(conn, mine)
        return None

    def _release(self, mine: LockHolder) -> None:
        # A failed release is no danger: the lease runs out, and on this host the pid check
        # frees it at once when this process ends.
        try:
            with self._db.write(f"releasing the {mine.name} lock") as conn:
                conn.execute(
                    "DELETE FROM locks WHERE name = ? AND lease = ?", (mine.name, mine.lease)
                )
        except StateError as exc:
            _log.warning("could not release the %s lock: %s", mine.name, exc.message)


class Lease:
    """A held lock (:class:`~corral.state.protocols.HeldLock`) and the thread that renews
    it through a connection of its own: the state's connection belongs to the thread
    that does the work, and may be inside a transaction when a renewal is due."""

    def __init__(
        self, reopen: Callable[[], db.Conn], mine: LockHolder, lease_s: float, renew_s: float
    ) -> None:
        self._reopen = reopen
        self._mine = mine
        self._lease_s = lease_s
        self._renew_s = renew_s
        self._stopped = threading.Event()
        self._lost = threading.Event()  # set once a renewal found the lock taken
        self._thread = threading.Thread(
            target=self._run, name=f"corral-lease-{mine.name}", daemon=True
        )

    @property
    def holder(self) -> LockHolder:
        """The record this process wrote when it took the lock."""
        return self._mine

    def check(self) -> None:
        """Raise :class:`LockedError` if another process took the lock after this one's
        lease ran out unrenewed."""
        if self._lost.is_set():
            raise LockedError(
                f"the {self._mine.name} lock was lost: this process did not renew its lease "
                f"for {self._lease_s:g}s and another may have taken it",
                lock=self._mine.name,
                holder=self._mine.to_dict(),
            )

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and wait for the thread."""
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        conn: db.Conn | None = None
        interval = self._renew_s
        try:
            while not self._stopped.wait(interval):
                try:
                    conn = conn or self._connect()
                    if not self._renew_once(conn):
                        return
                    interval = self._renew_s
                except (StateError, sa_exc.DBAPIError, OSError) as exc:
                    # Retry soon: the lease still runs, and a busy database frees up.
                    _log.warning("renewing the %s lock failed: %s", self._mine.name, exc)
                    interval = min(1.0, self._renew_s)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> db.Conn:
        conn = self._reopen()
        if conn.dialect == db.SQLITE:
            # Never block longer than one renewal period: a later try may still be in time.
            conn.raw.execute(f"PRAGMA busy_timeout = {int(self._renew_s * 1000)}")
        return conn

    def _renew_once(self, conn: db.Conn) -> bool:
        with db.write_transaction(conn):
            still_mine = renew(conn, self._mine, self._lease_s)
        if not still_mine:
            self._lost.set()
            _log.error(
                "the %s lock was taken by another process after its lease ran out: this "
                "process stalled for longer than %gs",
                self._mine.name,
                self._lease_s,
            )
        return still_mine


def _once(tell: Callable[[str], None] | None) -> Callable[[str], None]:
    """``tell``, called the first time only (nothing without it)."""
    done = False

    def once(message: str) -> None:
        nonlocal done
        if tell is not None and not done:
            done = True
            tell(message)

    return once
