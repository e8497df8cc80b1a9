"""Opening a PostgreSQL state: the URL, where its password comes from, and the driver.

A state URL is ``postgresql://[user@]host[:port]/database`` (``?host=/socket/dir`` for a
Unix socket, as libpq reads it). It is written in the spec or an environment variable,
so it must never carry a password: one there is refused. The password comes from the
environment only, as libpq reads it: ``PGPASSWORD``, ``~/.pgpass`` (``PGPASSFILE``), or a
file named by ``CORRAL_STATE_PASSWORD_FILE`` (one line). Messages name the URL as
:func:`display` writes it, which never holds a password.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from corral.errors import StateError
from corral.state import db

PASSWORD_FILE_ENV = "CORRAL_STATE_PASSWORD_FILE"
CONNECT_TIMEOUT_S = 5
_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def is_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL state rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(_SCHEMES)


def display(url: URL) -> str:
    """The URL as messages show it: no password, whatever the URL held."""
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=True)


def parse(location: str) -> URL:
    """The URL of a PostgreSQL state, for psycopg.

    Raises:
        StateError: it is not a URL, or it holds a password (the message does not).
    """
    try:
        url = make_url(location)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise StateError("the state URL is not a valid postgresql:// URL") from exc
    if url.password is not None:
        shown = display(url)
        raise StateError(
            f"the state URL {shown} holds a password: remove it from the URL and give it "
            f"through PGPASSWORD or a file named by {PASSWORD_FILE_ENV}",
            path=shown,
        )
    if not url.database:
        raise StateError(f"the state URL {display(url)} names no database", path=display(url))
    return url.set(drivername="postgresql+psycopg")


def _password() -> str | None:
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        return None  # libpq still reads PGPASSWORD and ~/.pgpass itself
    try:
        return Path(path).read_text("utf-8").strip("\r\n")
    except OSError as exc:
        raise StateError(
            f"cannot read the state password file named by {PASSWORD_FILE_ENV}: {exc.strerror}"
        ) from exc


def open_postgres(url: URL) -> db.Conn:
    """One connection to the database ``url`` names (it must exist).

    Raises:
        StateError: the server does not answer or refuses the credentials; the message
            names the state without its password.
    """
    args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S}
    password = _password()
    if password is not None:
        args["password"] = password
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with db.translated(display(url), "connecting"):
            return db.Conn(engine, db.POSTGRESQL)
    except BaseException:
        engine.dispose()
        raise
