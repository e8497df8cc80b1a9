"""What corral's test runner and its pytest plugin agree on, without importing pytest.

The runner (in corral's own process) and the plugin (inside the pytest subprocess) share
these names; keeping them here keeps pytest out of every corral command's start-up.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "CORRAL_TEST_ENV"
FIXTURES_OUT_VAR = "CORRAL_TEST_FIXTURES_OUT"
NODEID_PROPERTY = "corral.nodeid"
MODES = ("full", "smoke")

#: Fixtures that reach into an instance; a smoke run skips every test using one.
INSTANCE_FIXTURES = frozenset({"host", "hosts", "instance_url", "instance_urls"})
#: Fixtures whose use makes a test a testinfra check.
TESTINFRA_FIXTURES = frozenset({"host", "hosts"})
#: Fixtures whose use (without the testinfra ones) makes a test an HTTP check.
HTTP_FIXTURES = frozenset({"edge_url", "instance_url", "instance_urls"})
#: Every fixture the plugin provides.
CORRAL_FIXTURES = frozenset({"corral_env"}) | INSTANCE_FIXTURES | HTTP_FIXTURES

SMOKE_REASON = "smoke runs only HTTP tests against the live edge"
NO_ENV_MESSAGE = (
    f"{ENV_VAR} is not set: these are corral role tests; run these tests with corral test "
    "(corral deploy runs the HTTP ones as a smoke test)"
)


#: The largest report (junit XML, fixtures sidecar) corral reads from a test run.
MAX_REPORT_BYTES = 64 << 20


def read_report(path: Path, limit: int = MAX_REPORT_BYTES) -> bytes | None:
    """A report file the tests wrote, read as the tests cannot trick corral into reading
    something else: not through a link, only a regular file, at most ``limit`` bytes;
    None otherwise (or when it is missing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def fixtures_used(path: Path) -> Iterator[tuple[str, frozenset[str]]]:
    """Read a fixtures sidecar: (node id, fixtures used) pairs; nothing if unreadable."""
    raw = read_report(path)
    if raw is None:
        return
    try:
        data = json.loads(raw)
    except ValueError:
        return
    if isinstance(data, dict):
        for nodeid, names in data.items():
            if isinstance(names, list):
                yield str(nodeid), frozenset(str(n) for n in names)
