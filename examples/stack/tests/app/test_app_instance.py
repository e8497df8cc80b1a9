"""The app role's instance from inside (``corral test`` only): it runs as ``app`` and
cannot change its own code."""

import ipaddress
from typing import Any

SERVER = "/srv/app/server.py"


def test_the_code_belongs_to_root(host: Any) -> None:
    assert host.file(SERVER).user == "root"
    assert host.run(f"test -w {SERVER}").rc != 0
    assert host.run("test -w /srv/app").rc != 0


def test_psycopg2_comes_from_debian(host: Any) -> None:
    assert host.package("python3-psycopg2").is_installed


def test_the_server_runs_as_app(host: Any) -> None:
    owners = host.check_output(
        "for d in /proc/[0-9]*; do"
        " if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q '^python3 /srv/app/server[.]py';"
        " then stat -c %U $d; fi; done"
    ).split()
    assert owners, "no python3 /srv/app/server.py process"
    assert set(owners) == {"app"}


def test_the_db_role_name_resolves(host: Any) -> None:
    # The role name is a DNS name on the fleet's network (podman's search domain is
    # dns.podman, so the answer is named db.dns.podman).
    address, *names = host.check_output("getent ahostsv4 db").splitlines()[0].split()
    assert ipaddress.ip_address(address).version == 4
    assert names and names[-1].split(".")[0] == "db"
