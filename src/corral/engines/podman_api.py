"""Podman's REST API (libpod), over its Unix socket, for the engine's frequent calls.

Each podman CLI call starts a process that opens the storage: 30-50 ms here. The same read
from a running ``podman system service`` (systemd's ``podman.socket``, or ``scripts/setup``
where there is no systemd) takes 1-5 ms, and a deploy makes dozens. The answers are the
same documents the CLI prints with ``--format json``. The one change made here is removing
a container (a deploy removes one per replaced instance); everything else that changes
anything stays on the CLI. When the socket does not answer, ``PodmanEngine`` uses the CLI.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from corral.errors import EngineError

API_PREFIX = "/v4.0.0/libpod"
COMPAT_PREFIX = "/v4.0.0"  # the Docker-compatible endpoints of the same service
ROOT_SOCKET = "/run/podman/podman.sock"
REMOVE_TIMEOUT = 60.0  # seconds, as the CLI call: a stop timeout (10 s) and the removal
# Point the CLI at another configuration or storage than the running service may use.
CONFIG_VARIABLES = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")


class APIUnavailable(Exception):
    """The service did not answer (gone, or never started); use the CLI instead."""


class LookupRace(Exception):
    """Podman 4.3 answered "image not known" naming another image than the one asked for:
    another podman was removing images meanwhile. The image may well be there."""


def image_unknown(ref: str, message: str) -> bool:
    """Whether podman's error ``message`` says ``ref`` itself is not known (both the CLI and
    the API name the reference as given: ``<ref>: image not known``).

    Raises:
        LookupRace: it says some other image is not known.
    """
    if f"{ref}: image not known" in message or "no such image" in message:
        return True
    if "image not known" in message:
        raise LookupRace(message)
    return False


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_path(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """Where the service listens: podman's own ``CONTAINER_HOST`` if it names a Unix
    socket, else root's default, or a rootless user's under ``XDG_RUNTIME_DIR``."""
    env = os.environ if environ is None else environ
    host = env.get("CONTAINER_HOST", "")
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    user = os.geteuid() if uid is None else uid
    if user != 0 and env.get("XDG_RUNTIME_DIR"):
        return f"{env['XDG_RUNTIME_DIR']}/podman/podman.sock"
    return ROOT_SOCKET


def default_api(environ: Mapping[str, str] | None = None) -> PodmanAPI | None:
    """The API to read through, if it answers and sees what the CLI sees: with podman's
    configuration moved by environment variables (and no ``CONTAINER_HOST`` saying which
    service goes with it), the CLI alone is right."""
    env = os.environ if environ is None else environ
    if not env.get("CONTAINER_HOST") and any(env.get(v) for v in CONFIG_VARIABLES):
        return None
    if remote_podman(env) and not env.get("CONTAINER_HOST", "").startswith("unix://"):
        return None  # the CLI drives another machine: the local socket is not its engine
    return PodmanAPI.connect(socket_path(env))


def remote_podman(environ: Mapping[str, str] | None = None) -> bool:
    """Whether podman is driven through a connection (``CONTAINER_HOST``, even a Unix
    socket, as a container given the host's socket does; ``CONTAINER_CONNECTION``): its
    process ids are then not this machine's to look up."""
    env = os.environ if environ is None else environ
    return bool(env.get("CONTAINER_HOST") or env.get("CONTAINER_CONNECTION"))


class PodmanAPI:
    """A connection per request (a Unix socket costs microseconds): safe from any thread."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    @classmethod
    def connect(cls, path: str | None = None) -> PodmanAPI | None:
        """The API if its socket answers a ping now, else None."""
        api = cls(path or socket_path(), timeout=2.0)
        if not os.path.exists(api.path):
            return None
        try:
            status, _ = api._request("/_ping", raw=True)
        except APIUnavailable:
            return None
        return cls(api.path) if status == 200 else None

    def get(self, path: str, **params: str) -> tuple[int, Any]:
        """(HTTP status, decoded JSON) of a libpod GET."""
        query = f"?{urlencode(params)}" if params else ""
        return self._request(f"{API_PREFIX}{path}{query}")

    def _request(
        self, target: str, raw: bool = False, method: str = "GET", timeout: float | None = None
    ) -> tuple[int, Any]:
        connection = _UnixConnection(self.path, timeout or self.timeout)
        try:
            connection.request(method, target)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise APIUnavailable(f"podman API at {self.path}: {exc}") from exc
        finally:
            connection.close()
        if raw or not body:
            return response.status, body
        try:
            return response.status, json.loads(body)
        except ValueError as exc:
            raise APIUnavailable(f"podman API at {self.path} sent invalid JSON") from exc

    # -- the reads the engine makes ----------------------------------------------------
    def inspect_container(self, ref: str) -> Mapping[str, Any] | None:
        status, data = self.get(f"/containers/{_part(ref)}/json")
        return _found(status, data)

    def inspect_image(self, ref: str) -> Mapping[str, Any] | None:
        """Raises LookupRace: see ``image_unknown``."""
        status, data = self.get(f"/images/{quote(ref, safe='/:@')}/json")
        if status == 404 and isinstance(data, dict):
            image_unknown(ref, str(data.get("message", "")))
        return _found(status, data)

    def container_ids(self, labels: Mapping[str, str]) -> list[str]:
        status, data = self.get(
            "/containers/json", all="true", filters=json.dumps(_label_filter(labels))
        )
        return [str(c["Id"]) for c in _listing(status, data)]

    def container_summaries(self, labels: Mapping[str, str]) -> list[Mapping[str, Any]]:
        """The containers with ``labels``' first label as libpod's listing summarises them,
        each with ``Addresses`` (network -> IP address) and ``VolumeNames`` (its named
        volumes) from the Docker-compatible listing, which alone carries them (libpod's
        names mount points only): two requests however many containers there are, where
        an inspection each made a listing cost a request per container.

        A container missing from the second listing (it came or went in between) has
        neither: the caller inspects it.
        """
        query = urlencode({"all": "true", "filters": json.dumps(_label_filter(labels))})
        status, listed = self._request(f"{API_PREFIX}/containers/json?{query}")
        compat_status, compat = self._request(f"{COMPAT_PREFIX}/containers/json?{query}")
        extra = {
            str(c.get("Id")): {
                "Addresses": _compat_addresses(c),
                "VolumeNames": _compat_volumes(c),
            }
            for c in _listing(compat_status, compat)
        }
        return [{**c, **extra.get(str(c.get("Id")), {})} for c in _listing(status, listed)]

    def volumes(self, labels: Mapping[str, str]) -> list[Mapping[str, Any]]:
        status, data = self.get("/volumes/json", filters=json.dumps(_label_filter(labels)))
        return _listing(status, data)

    def remove_container(self, name: str) -> None:
        """``podman rm --force --ignore``: stop it (within its stop timeout), remove it;
        absent is fine. Its named volumes stay.

        Raises:
            EngineError: podman refused (the message says why, e.g. storage busy).
        """
        target = f"{API_PREFIX}/containers/{_part(name)}?force=true&ignore=true"
        # A graceful stop may take the container's whole stop timeout: wait as the CLI does.
        status, data = self._request(target, method="DELETE", timeout=REMOVE_TIMEOUT)
        if status == 404:
            return
        if status != 200 or not isinstance(data, list):
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            raise EngineError(f"podman rm {name} failed: {message}", stderr=message)
        failed = [str(report["Err"]) for report in data if report.get("Err")]
        if failed:
            raise EngineError(f"podman rm {name} failed: {failed[0]}", stderr=failed[0])

    def secret_names(self) -> list[str]:
        status, data = self.get("/secrets/json")
        return [str((s.get("Spec") or {}).get("Name", "")) for s in _listing(status, data)]

    def network_exists(self, name: str) -> bool:
        status, _ = self.get(f"/networks/{_part(name)}/exists")
        if status not in (204, 404):
            raise APIUnavailable(f"podman API: network exists answered {status}")
        return status == 204


def _part(name: str) -> str:
    return quote(name, safe="")


def _label_filter(labels: Mapping[str, str]) -> dict[str, list[str]]:
    # One label only, as on the CLI (see podman._label_filters): the engine re-checks all.
    return {"label": [f"{k}={v}" for k, v in labels.items()][:1]} if labels else {}


def _compat_addresses(container: Mapping[str, Any]) -> dict[str, str]:
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    return {str(name): str((net or {}).get("IPAddress", "")) for name, net in networks.items()}


def _compat_volumes(container: Mapping[str, Any]) -> list[str]:
    mounts = container.get("Mounts") or ()
    return [str(m["Name"]) for m in mounts if m.get("Type") == "volume" and m.get("Name")]


def _found(status: int, data: Any) -> Mapping[str, Any] | None:
    if status == 404:
        return None
    if status != 200 or not isinstance(data, dict):
        raise APIUnavailable(f"podman API answered {status}")
    return data


def _listing(status: int, data: Any) -> list[Mapping[str, Any]]:
    if status != 200 or not isinstance(data, list):
        raise APIUnavailable(f"podman API answered {status}")
    return data
