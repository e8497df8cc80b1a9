"""The pytest plugin that gives a role's tests the environment ``corral test`` brought up.

corral runs a role's test files with ``python -m pytest -p corral.testing.plugin ...``
(see :mod:`corral.testing.runner`). The plugin reads the environment description from
the JSON file named by ``CORRAL_TEST_ENV``::

    {"fleet": "demo", "role": "web", "mode": "full", "edge_url": "http://10.89.3.2:8080/",
     "instances": [{"name": "demo-web-t1-1", "url": "http://10.89.3.5:8000/",
                    "address": "10.89.3.5", "port": 8000,
                    "backend": "podman://demo-web-t1-1"}],
     "engine": "podman", "exec_socket": "/tmp/corral-test-x1y2/exec.sock"}

and offers these fixtures:

==================  ============================================================  ======
fixture             value                                                         smoke
==================  ============================================================  ======
``corral_env``      the whole description (a dict)                                yes
``edge_url``        the role's public URL through the edge (str); the test is     yes
                    skipped if the environment has no edge (``edge_url`` null)
``instance_urls``   every instance's own URL, ``http://IP:PORT/`` (list[str])     skipped
``instance_url``    the first instance's URL (str)                                skipped
``host``            a testinfra host for the first instance's container           skipped
                    (commands run as the image's user, by corral's exec broker
                    at ``exec_socket``; an instance with no ``backend`` is one
                    the engine cannot run commands in)
``hosts``           a testinfra host per instance (list)                          skipped
==================  ============================================================  ======

``mode`` is ``"full"`` for ``corral test`` (a throwaway environment: every test runs)
or ``"smoke"`` after a live deploy: then any test that uses ``host``, ``hosts``,
``instance_url`` or ``instance_urls`` is skipped ("smoke runs only HTTP tests against
the live edge"), so only the tests that talk to the edge through ``edge_url`` run.

``host`` here overrides testinfra's own ``host`` fixture (which would otherwise point at
the local machine); the plugin registers its fixtures after every other plugin so that
its definitions win. A ``conftest.py`` may still override them, as usual in pytest.

Without ``CORRAL_TEST_ENV`` every fixture fails with "run these tests with corral test".

If ``CORRAL_TEST_FIXTURES_OUT`` names a file, the plugin writes to it at the end of the
session a JSON object mapping each test's node id to the corral fixtures it used (sorted),
which the runner uses to tell HTTP checks from testinfra checks. Each test also carries
its node id as the junit property ``corral.nodeid``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from corral.testing import broker
from corral.testing.contract import (  # noqa: F401 - part of the plugin's interface
    CORRAL_FIXTURES,
    ENV_VAR,
    FIXTURES_OUT_VAR,
    HTTP_FIXTURES,
    INSTANCE_FIXTURES,
    MODES,
    NO_ENV_MESSAGE,
    NODEID_PROPERTY,
    SMOKE_REASON,
    TESTINFRA_FIXTURES,
    fixtures_used,
)

_used: dict[str, set[str]] = {}  # node id -> corral fixtures it used
_cache: dict[str, Any] = {}  # "env" and "host:NAME" -> value, for one session


def _note(request: pytest.FixtureRequest, fixture: str) -> None:
    """Remember that the test being set up uses ``fixture`` (also when requested late)."""
    _used.setdefault(request.node.nodeid, set()).add(fixture)


def load_env() -> dict[str, Any]:
    """The environment description named by ``CORRAL_TEST_ENV``; fails the test if unusable."""
    path = os.environ.get(ENV_VAR)
    if not path:
        pytest.fail(NO_ENV_MESSAGE, pytrace=False)
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        pytest.fail(f"cannot read the corral test environment {path}: {exc}", pytrace=False)
    if not isinstance(data, dict) or not isinstance(data.get("instances", []), list):
        pytest.fail(f"{path} is not a corral test environment description", pytrace=False)
    mode = data.setdefault("mode", "full")
    if mode not in MODES:
        pytest.fail(f"{path}: mode must be one of {MODES}, not {mode!r}", pytrace=False)
    return data


def _instances(env: dict[str, Any]) -> list[dict[str, Any]]:
    if env.get("mode") == "smoke":
        pytest.skip(SMOKE_REASON)
    instances: list[dict[str, Any]] = env.get("instances") or []
    if not instances:
        pytest.skip(f"role {env.get('role', '?')} has no instances in this environment")
    return instances


def _env() -> dict[str, Any]:
    env = _cache.get("env")
    if env is None:
        env = _cache["env"] = load_env()
    return dict(env)


def _testinfra_host(instance: dict[str, Any], engine: str) -> Any:
    """A testinfra host for the container of ``instance``, its commands run by corral's
    exec broker (the sandbox has no engine of its own), checked (once) to be reachable."""
    name, backend = str(instance["name"]), instance.get("backend")
    if not backend:
        pytest.fail(
            f"the {engine} engine cannot run commands in container {name}, which the host "
            "and hosts fixtures need",
            pytrace=False,
        )
    key = f"host:{name}"
    if key not in _cache:
        socket = _env().get("exec_socket")
        if not socket:
            pytest.fail("the environment names no exec broker (exec_socket)", pytrace=False)
        host = _brokered_host(Path(str(socket)), name)
        result = host.run("true")
        if result.rc != 0:
            detail = (result.stderr or result.stdout).strip()
            pytest.fail(
                f"cannot run commands in container {name} "
                f"(through corral's exec broker: exit {result.rc}): {detail}",
                pytrace=False,
            )
        _cache[key] = host
    return _cache[key]


#: The status of a command the broker could not run (podman exec's own, for the same).
BROKER_FAILED = 125


def _brokered_host(socket: Path, container: str) -> Any:
    """A testinfra ``Host`` whose backend sends every command to the broker at ``socket``."""
    import testinfra.host  # type: ignore[import-untyped]
    from testinfra.backend.base import BaseBackend  # type: ignore[import-untyped]

    class BrokeredBackend(BaseBackend):  # type: ignore[misc]
        NAME = "corral"

        def run(self, command: str, *args: str, **kwargs: Any) -> Any:
            cmd = self.get_command(command, *args)
            try:
                answer = broker.request(socket, container, cmd, timeout=None)
            except (OSError, ValueError) as exc:
                answer = {"error": f"the exec broker did not answer: {exc}"}
            if "error" in answer:
                return self.result(BROKER_FAILED, self.encode(cmd), "", str(answer["error"]))
            status = int(answer.get("status", BROKER_FAILED))
            return self.result(status, self.encode(cmd), answer["stdout"], answer["stderr"])

    backend = BrokeredBackend(container)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host


class CorralFixtures:
    """The fixtures; registered from :func:`pytest_configure` so that they win.

    They are function-scoped (cheap); the environment and the testinfra hosts are
    cached per session in :data:`_cache`.
    """

    @pytest.fixture
    def corral_env(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        """The environment description from ``CORRAL_TEST_ENV`` (a dict)."""
        _note(request, "corral_env")
        return _env()

    @pytest.fixture
    def edge_url(self, request: pytest.FixtureRequest) -> str:
        """The role's public URL through the environment's edge; skips if there is none."""
        _note(request, "edge_url")
        env = _env()
        url = env.get("edge_url")
        if not url:
            pytest.skip(
                f"role {env.get('role', '?')} has no edge in this environment "
                "(edge_url is null: the role is not public)"
            )
        return str(url)

    @pytest.fixture
    def instance_urls(self, request: pytest.FixtureRequest) -> list[str]:
        """Every instance's own URL, ``http://IP:PORT/``; skipped in smoke mode."""
        _note(request, "instance_urls")
        urls = [str(item["url"]) for item in _instances(_env()) if item.get("url")]
        if not urls:
            pytest.skip("the role's instances have no URL (the role has no port)")
        return urls

    @pytest.fixture
    def instance_url(self, request: pytest.FixtureRequest) -> str:
        """The first instance's own URL; skipped in smoke mode."""
        _note(request, "instance_url")
        url = _instances(_env())[0].get("url")
        if not url:
            pytest.skip("the role's instances have no URL (the role has no port)")
        return str(url)

    @pytest.fixture
    def hosts(self, request: pytest.FixtureRequest) -> list[Any]:
        """A testinfra host per instance container; skipped in smoke mode."""
        _note(request, "hosts")
        env = _env()
        return [_testinfra_host(item, str(env.get("engine"))) for item in _instances(env)]

    @pytest.fixture
    def host(self, request: pytest.FixtureRequest) -> Any:
        """A testinfra host for the first instance's container; skipped in smoke mode."""
        _note(request, "host")
        env = _env()
        return _testinfra_host(_instances(env)[0], str(env.get("engine")))


def pytest_configure(config: pytest.Config) -> None:
    _used.clear()
    _cache.clear()
    if not config.pluginmanager.has_plugin("corral-fixtures"):
        config.pluginmanager.register(CorralFixtures(), "corral-fixtures")


def _smoke_mode() -> bool:
    path = os.environ.get(ENV_VAR)
    if not path:
        return False
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("mode") == "smoke"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    smoke = _smoke_mode()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ())) & CORRAL_FIXTURES
        _used.setdefault(item.nodeid, set()).update(fixtures)
        item.user_properties.append((NODEID_PROPERTY, item.nodeid))
        if smoke and fixtures & INSTANCE_FIXTURES:
            item.add_marker(pytest.mark.skip(reason=SMOKE_REASON))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get(FIXTURES_OUT_VAR)
    if not out:
        return
    data = {nodeid: sorted(names) for nodeid, names in _used.items()}
    # If it cannot be written, the runner classifies every check as plain pytest.
    with contextlib.suppress(OSError):
        Path(out).write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
