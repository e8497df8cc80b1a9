"""The static role's instance from inside (``corral test`` only): nginx without root."""

from typing import Any


def _owners(host: Any, pattern: str) -> list[str]:
    return host.check_output(
        "for d in /proc/[0-9]*; do"
        f" if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q '{pattern}';"
        " then stat -c %U $d; fi; done"
    ).split()


def test_nginx_runs_as_www_data_master_and_workers(host: Any) -> None:
    assert set(_owners(host, "^nginx: master")) == {"www-data"}
    workers = _owners(host, "^nginx: worker")
    assert len(workers) == 2 and set(workers) == {"www-data"}


def test_the_site_and_config_belong_to_root(host: Any) -> None:
    for path in ("/srv/static/nginx.conf", "/srv/static/www/index.html"):
        assert host.file(path).user == "root"
        assert host.run(f"test -w {path}").rc != 0, f"www-data can write {path}"


def test_nginx_writes_only_to_tmp(host: Any) -> None:
    assert host.file("/tmp/nginx.pid").exists
