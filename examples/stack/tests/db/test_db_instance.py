"""The db role's instance, checked from inside with testinfra (``corral test`` only).

``host`` runs commands in the instance as ``postgres``. The password is the test run's
value of DB_PASSWORD (the role lists it in ``test_secrets``), never the live one.
"""

import os
from typing import Any

PGDATA = "/var/lib/postgresql/data/15"
PSQL = "/usr/bin/psql"


def _psql(host: Any, address: str, password: str, sql: str) -> Any:
    return host.run(
        "env PGPASSWORD=%s PGCONNECT_TIMEOUT=5 psql -h %s -U postgres -d postgres -tAc %s",
        password,
        address,
        sql,
    )


def _address(corral_env: dict[str, Any]) -> str:
    return str(corral_env["instances"][0]["address"])


def test_the_server_runs_as_postgres(host: Any) -> None:
    owners = host.check_output(
        "for d in /proc/[0-9]*; do"
        " if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q 'bin/postgres -D';"
        " then stat -c %U $d; fi; done"
    ).split()
    assert owners, "no postgres server process"
    assert set(owners) == {"postgres"}


def test_the_data_lives_on_the_volume_and_is_private(host: Any) -> None:
    data = host.file(PGDATA)
    assert data.is_directory
    assert data.user == "postgres"
    assert data.mode == 0o700
    assert host.file(f"{PGDATA}/PG_VERSION").content_string.strip() == "15"
    mounts = host.file("/proc/self/mounts").content_string
    assert " /var/lib/postgresql/data " in mounts, "the data folder is not a volume"


def test_the_socket_is_in_tmp_not_run(host: Any) -> None:
    assert host.file("/tmp/.s.PGSQL.5432").is_socket


def test_the_password_is_required_and_the_secret_is_it(
    host: Any, corral_env: dict[str, Any]
) -> None:
    address = _address(corral_env)
    good = _psql(host, address, os.environ["DB_PASSWORD"], "SELECT 40 + 2")
    assert good.rc == 0, good.stderr
    assert good.stdout.strip() == "42"
    bad = _psql(host, address, "not-the-password", "SELECT 1")
    assert bad.rc != 0
    assert "password authentication failed" in bad.stderr


def test_no_password_file_is_left_behind(host: Any) -> None:
    assert host.run("ls -A /tmp").stdout.split() == [".s.PGSQL.5432", ".s.PGSQL.5432.lock"]
