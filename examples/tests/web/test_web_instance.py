"""The web role's instances, checked from inside with testinfra (``corral test`` only).

``host`` runs commands in the first instance's container as the image's user (``app``),
so "can app write this?" is simply ``test -w``. The image is minimal (no ``ps``, ``ss``
or ``netstat``), so processes and sockets are read from ``/proc``.
"""

from typing import Any

APP = "app"
SERVER = "/srv/web/server.py"
DATA = "/var/lib/web"
PORT = 8000


def test_the_code_belongs_to_root_and_app_cannot_change_it(host: Any) -> None:
    server = host.file(SERVER)
    assert server.exists and server.is_file
    assert server.user == "root"
    assert not server.mode & 0o022, f"{SERVER} is group- or world-writable"
    assert host.run(f"test -w {SERVER}").rc != 0, f"{APP} can write {SERVER}"
    assert host.run("test -w /srv/web").rc != 0, f"{APP} can write /srv/web"


def test_the_app_user_cannot_log_in(host: Any) -> None:
    user = host.user(APP)
    assert user.exists
    assert user.uid != 0
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


def test_python3_is_installed(host: Any) -> None:
    assert host.package("python3").is_installed


def test_the_server_runs_as_app(host: Any) -> None:
    # "server[.]py" keeps this shell's own command line from matching.
    owners = host.check_output(
        "for d in /proc/[0-9]*; do"
        " if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q '^python3 /srv/web/server[.]py';"
        " then stat -c %U $d; fi; done"
    ).split()
    assert owners, "no python3 /srv/web/server.py process"
    assert set(owners) == {APP}


def test_it_listens_on_all_addresses_port_8000(host: Any) -> None:
    # /proc/net/tcp: "sl local_address rem_address st ...", addresses in hex, 0A = LISTEN
    listening = set()
    for line in host.file("/proc/net/tcp").content_string.splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == "0A":
            listening.add((address, int(port, 16)))
    assert ("00000000", PORT) in listening, f"nothing listens on 0.0.0.0:{PORT}"


def test_the_data_volume_belongs_to_app(host: Any) -> None:
    data = host.file(DATA)
    assert data.is_directory
    assert data.user == APP
    assert host.run(f"test -w {DATA}").rc == 0
