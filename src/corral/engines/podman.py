"""Podman, driven through its command line with machine-readable (JSON) output.

Every call is an argv list (no shell); output is parsed only from ``--format json``
or from plain ids, never from human-readable tables. The frequent reads (inspect, list)
go through podman's REST API instead when its socket answers (see ``podman_api``): the
same JSON documents, a few milliseconds each instead of a process each.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from corral.engines import bridge
from corral.engines.base import Engine
from corral.engines.capabilities import Capability
from corral.engines.podman_api import (
    APIUnavailable,
    LookupRace,
    PodmanAPI,
    default_api,
    image_unknown,
    remote_podman,
)
from corral.engines.values import (
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    ExecResult,
    FileChange,
    ImageInfo,
    LogSink,
    Mount,
    PodSpec,
    PortMapping,
    ProbeResult,
    RunFacts,
    SecurityFacts,
)
from corral.errors import BuildError, EngineError, MissingToolError, NotFoundError
from corral.formats import labels_match

LOG_TAIL_LINES = 40
PROBE_OUTPUT = 2000  # characters of a probe's output kept (its last ones)
REMOVE_ATTEMPTS = 4
EXEC_FAILED = (125, 255)  # podman exec's statuses when it could not run the command
STORE_TIMEOUT = 60.0  # seconds a secret-store command may take before corral gives up on it
T = TypeVar("T")

SECRETS_DIR = "/run/secrets"
MAX_IMAGE_FILE = 1 << 20  # bytes of an image's /etc/passwd or /etc/group corral reads
#: The fixed program that hands an instance its secrets: every file in /run/secrets
#: becomes the environment variable of the same name, byte for byte (the ``x`` keeps the
#: trailing newlines that command substitution would drop), then ``exec "$@"`` runs the
#: image's entrypoint and the command given as arguments. No spec value is part of it.
LAUNCHER = (
    "for f in /run/secrets/*; do "
    '[ -f "$f" ] || continue; '
    'n="${f##*/}"; '
    'case "$n" in ""|[0-9]*|*[!A-Za-z0-9_]*) continue;; esac; '
    'v="$(cat -- "$f" && printf x)" || { echo "corral: cannot read secret $n" >&2; exit 126; }; '
    'export "$n=${v%x}"; '
    "done; "
    'exec "$@"'
)
#: What podman build says when an image removed meanwhile took a layer its cache lookup
#: had found; building again succeeds.
CACHE_RACE = "layer not known"
# Seconds between looks at an image podman missed while another podman removed images.
REQUIRE_IMAGE_DELAYS = (0.2, 0.5, 1.0, 2.0)
BUILD_ATTEMPTS = 3
#: How an instance's resolver asks for names (see ``dns_args``).
DNS_OPTIONS = ("timeout:2", "attempts:5")
RESOLVER_LISTINGS = 3  # glibc reads at most 3 nameservers (MAXNS)


@dataclass(frozen=True)
class NetworkFacts:
    """What corral needs of a podman network: where its DNS server answers (none when
    it has no DNS), and its bridge interface and IPv4 gateway (see ``bridge``)."""

    dns: tuple[str, ...]
    interface: str
    gateway: str


@dataclass(frozen=True)
class SecretLaunch:
    """What starting an image through :data:`LAUNCHER` needs to know about it: the numeric
    owner its secret files get, and the entrypoint the launcher runs before the command."""

    uid: int
    gid: int
    entrypoint: tuple[str, ...]


class PodmanEngine(Engine):
    """One host's Podman: everything runs and is stored on the machine corral runs on."""

    name = "podman"
    capabilities = frozenset(Capability)  # a local engine: all of them

    def __init__(
        self, binary: str = "podman", api: PodmanAPI | Literal["auto"] | None = "auto"
    ) -> None:
        """``api``: where to read from; "auto" uses podman's service if its socket answers."""
        path = shutil.which(binary)
        if path is None:
            raise MissingToolError("podman", "apt-get install podman runc")
        self.binary = path
        self.api = default_api() if api == "auto" else api
        self._secrets: list[str] | None = None  # cached names in podman's secret store
        self._launches: dict[tuple[str, str], SecretLaunch] = {}  # by (image, user)
        self._image_env: dict[str, frozenset[str]] = {}  # environment names, by image id
        self._networks: dict[str, NetworkFacts] = {}  # by name, read once

    def _via_api(self, read: Callable[[PodmanAPI], T]) -> tuple[T] | None:
        """``(answer,)`` from the REST API, or None: use the CLI instead."""
        api = self.api
        if api is None:
            return None
        try:
            return (read(api),)
        except APIUnavailable:
            self.api = None  # the service went away: the CLI from now on
            return None

    # -- plumbing ---------------------------------------------------------------------
    def _run(
        self, *args: str, timeout: float = 300, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, input=input, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(
                f"podman {args[0]} timed out after {timeout:.0f}s", command=argv
            ) from exc
        except OSError as exc:
            raise EngineError(f"cannot run podman: {exc}", command=argv) from exc
        if check and proc.returncode != 0:
            raise EngineError(
                f"podman {' '.join(args[:2])} failed: {_last_line(proc.stderr)}",
                command=argv,
                stderr=proc.stderr[-2000:],
            )
        return proc

    def _json(self, *args: str) -> Any:
        out = self._run(*args).stdout
        try:
            return json.loads(out) if out.strip() else []
        except json.JSONDecodeError as exc:
            raise EngineError(f"podman {args[0]} printed invalid JSON") from exc

    def _stream(self, argv: list[str], log: LogSink | None) -> tuple[int, list[str]]:
        """Run podman, passing each output line to ``log``; return (status, tail)."""
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        with subprocess.Popen(
            [self.binary, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    line = line.rstrip("\n")
                    tail.append(line)
                    if log is not None:
                        log(line)
            except BaseException:
                proc.kill()
                raise
            return proc.wait(), list(tail)

    # -- images -----------------------------------------------------------------------
    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo:
        args = ["import", "--quiet"]
        for change in [*changes, *(f"LABEL {k}={json.dumps(v)}" for k, v in labels.items())]:
            args += ["--change", change]
        image_id = self._run(*args, str(tarball), tag, timeout=900).stdout.strip()
        return self._require_image(image_id or tag)

    def build_image(
        self,
        context: Path,
        containerfile: Path,
        tag: str,
        labels: Mapping[str, str],
        log: LogSink | None = None,
        *,
        build_args: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> ImageInfo:
        with _labelled(containerfile, labels) as (path, label_flags):
            # "none" leaves RUN steps a loopback device only; "host" is what a role that
            # downloads while it builds asks for (podman 4.3 accepts both for build).
            argv = [
                "build",
                "--file",
                str(path),
                "--tag",
                tag,
                "--network",
                "host" if network else "none",
                "--layers",
                "--force-rm",
                *label_flags,
            ]
            for name, value in (build_args or {}).items():
                argv += ["--build-arg", f"{name}={value}"]
            return self._build(argv, context, tag, log)

    def _build(self, argv: list[str], context: Path, tag: str, log: LogSink | None) -> ImageInfo:
        for _ in range(BUILD_ATTEMPTS):
            status, tail = self._stream([*argv, str(context)], log)
            if status == 0 or not any(CACHE_RACE in line for line in tail):
                break
            # Another podman removed an image whose layer this build's cache lookup had
            # found (a gc, another fleet's teardown): nothing was built; build again.
            if log is not None:
                log(f"corral: {CACHE_RACE} (an image was removed meanwhile): building again")
        if status != 0:
            raise BuildError(f"podman build of {tag} failed (exit {status})", log=tail)
        return self._require_image(tag)

    def _require_image(self, ref: str) -> ImageInfo:
        # Another podman removing images meanwhile (another fleet's gc or teardown) can
        # make podman 4.3's lookup of the image just made answer "image not known",
        # naming some other image: look again before calling the build a failure.
        for delay in (*REQUIRE_IMAGE_DELAYS, None):
            image = self.inspect_image(ref)
            if image is not None:
                return image
            if delay is not None:
                time.sleep(delay)
        raise EngineError(f"podman reported success but image {ref} is missing")

    def inspect_image(self, ref: str) -> ImageInfo | None:
        data = self._look_up_image(ref)
        return _image_info(data) if data else None

    def _look_up_image(self, ref: str) -> Mapping[str, Any] | None:
        """``ref``'s inspection, or None when podman says ``ref`` is not known.

        A lookup that missed because another podman was removing images (LookupRace) is
        made again: read as missing, it made a rollback refuse "images are gone".
        """
        for delay in (*REQUIRE_IMAGE_DELAYS, None):
            try:
                return self._look_up_image_once(ref)
            except LookupRace as race:
                if delay is None:
                    raise EngineError(
                        f"cannot inspect image {ref}: podman kept answering {race}"
                    ) from race
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _look_up_image_once(self, ref: str) -> Mapping[str, Any] | None:
        answer = self._via_api(lambda api: api.inspect_image(ref))
        if answer is not None:
            return answer[0] or None
        proc = self._run("image", "inspect", "--format", "json", ref, check=False)
        if proc.returncode != 0:
            # Only "image not known" means missing: any other failure (a busy or
            # restarting engine) read as missing made a deploy bake an image it had.
            if image_unknown(ref, proc.stderr):
                return None
            raise EngineError(
                f"cannot inspect image {ref}: {_last_line(proc.stderr)}",
                command=["podman", "image", "inspect", ref],
                stderr=proc.stderr[-2000:],
            )
        data = json.loads(proc.stdout)
        return data[0] if data else None

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        # Either call fails "image not known" when another podman removes an image
        # meanwhile (any image: podman 4.3 reads them all to filter): list again.
        for delay in (*REQUIRE_IMAGE_DELAYS, None):
            try:
                return self._list_images_once(labels)
            except EngineError as exc:
                if delay is None or "image not known" not in (exc.stderr or ""):
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _list_images_once(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        ids = self._run("images", "--quiet", "--no-trunc", *_label_filters(labels)).stdout.split()
        if not ids:
            return []
        unique = list(dict.fromkeys(ids))
        images = [
            _image_info(d) for d in self._json("image", "inspect", "--format", "json", *unique)
        ]
        return [i for i in images if labels_match(i.labels, labels)]

    def tag_image(self, ref: str, tag: str) -> None:
        self._run("tag", ref, tag)

    def untag_image(self, tag: str) -> None:
        if self.inspect_image(tag) is not None:
            self._run("untag", tag, tag, check=False)

    def remove_image(self, ref: str) -> None:
        self._run("rmi", "--force", "--ignore", ref)

    def run_once(
        self,
        image: str,
        command: Sequence[str],
        timeout: float = 120,
        mounts: Sequence[Mount] = (),
    ) -> str:
        volumes = [
            arg
            for m in mounts
            for arg in ("--volume", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}")
        ]
        proc = self._run(
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "root",
            *volumes,
            image,
            *command,
            timeout=timeout,
        )
        return proc.stdout

    def run_probe(self, spec: ContainerSpec, timeout: float) -> ProbeResult:
        dns = self._dns_servers(spec.network) if spec.network else ()
        argv = [self.binary, "run", "--rm", *probe_args(spec, dns)]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            # Killing the client leaves the container running: remove it (it is killed).
            self.remove(spec.name)
            output = _probe_output((exc.stdout or b"") + (exc.stderr or b""))
            return ProbeResult(None, output, time.monotonic() - started)
        except OSError as exc:
            raise EngineError(f"cannot run podman: {exc}", command=argv) from exc
        output = _probe_output(proc.stdout + proc.stderr)
        return ProbeResult(proc.returncode, output, time.monotonic() - started)

    def run_piped(
        self, spec: ContainerSpec, timeout: float, stdin: int | None, stdout: int | None
    ) -> ProbeResult:
        stored = _stores(spec)
        launch = self._secret_launch(spec) if stored else None
        started = time.monotonic()
        try:
            secret_args = self._create_secrets(spec, launch)
            dns = self._dns_servers(spec.network) if spec.network else ()
            interactive = ["--interactive"] if stdin is not None else []
            argv = [
                self.binary,
                "run",
                "--rm",
                *interactive,
                *run_args(spec, secret_args, launch, dns),
            ]
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.DEVNULL if stdout is None else stdout,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self.remove(spec.name)
            return ProbeResult(None, _probe_output(exc.stderr or b""), time.monotonic() - started)
        except OSError as exc:
            raise EngineError(f"cannot run podman: {exc}") from exc
        finally:
            self._remove_secrets(spec.name)
        return ProbeResult(proc.returncode, _probe_output(proc.stderr), time.monotonic() - started)

    def pause(self, name: str) -> None:
        self._run("pause", name)

    def unpause(self, name: str) -> None:
        self._run("unpause", name)

    # -- containers -------------------------------------------------------------------
    def start(self, spec: ContainerSpec) -> ContainerInfo:
        stored = _stores(spec)
        launch = self._secret_launch(spec) if stored else None
        try:
            # Inside: a secret the store refuses must not leave the ones stored before it.
            secret_args = self._create_secrets(spec, launch)
            dns = self._dns_servers(spec.network) if spec.network else ()
            container_id = self._run(
                "run", "--detach", *run_args(spec, secret_args, launch, dns), timeout=120
            ).stdout.strip()
        except EngineError:
            self._remove_secrets(spec.name)
            raise
        info = self.inspect(container_id)
        if info is None:
            raise EngineError(f"container {spec.name} vanished right after it started")
        for network in info.addresses:  # a pod's container is on its pod's networks
            self._pin_bridge(network)
        return info

    def _pin_bridge(self, network: str) -> None:
        """Keep ``network``'s bridge at one MAC address (see ``bridge``), once it exists:
        netavark makes it when the first container joins. Only root's podman has its
        bridges in this network namespace."""
        if os.geteuid() == 0:
            facts = self._network_facts(network)
            if facts.interface and facts.gateway:
                bridge.pin_mac(facts.interface, facts.gateway)

    def _secret_launch(self, spec: ContainerSpec) -> SecretLaunch:
        """How ``spec``'s image runs the launcher: as which uid/gid, after which entrypoint.

        Raises:
            EngineError: the image has no /bin/sh to run the launcher, or no such user.
        """
        key = (spec.image, spec.user or "")
        if key not in self._launches:
            config = self._raw_image(spec.image).get("Config") or {}
            user = spec.user or str(config.get("User") or "")
            uid, gid = self._image_user(spec.name, spec.image, user)
            self._launches[key] = SecretLaunch(uid, gid, tuple(config.get("Entrypoint") or ()))
        return self._launches[key]

    def _raw_image(self, ref: str) -> Mapping[str, Any]:
        data = self._look_up_image(ref)
        if not data:
            raise NotFoundError(f"no image {ref}", name=ref)
        return data

    def _image_user(self, container: str, image: str, user: str) -> tuple[int, int]:
        """The numeric uid and gid ``user`` has in ``image``, read from its /etc/passwd
        (podman's secret mounts take numbers only); checks the image has /bin/sh."""
        root = Path(self._run("image", "mount", image).stdout.strip())
        try:
            if not has_file(root, "bin/sh"):
                raise EngineError(
                    f"{container}: its image has no /bin/sh, which corral's launcher needs "
                    "to hand the program its secrets as environment variables"
                )
            return resolve_user(user, _read(root, "etc/passwd"), _read(root, "etc/group"))
        finally:
            self._run("image", "unmount", image, check=False)

    def _create_secrets(self, spec: ContainerSpec, launch: SecretLaunch | None) -> list[str]:
        """Store each secret in podman's secret store (value on stdin, never on argv) and
        return the ``podman run`` arguments that mount them, one file each, under
        /run/secrets, readable by the instance's user alone.

        Podman refuses to store an empty value; an empty value hides nothing, so it is
        an ordinary environment variable."""
        args: list[str] = []
        for variable, value in spec.secrets.items():
            name = _secret_name(spec.secrets_of or spec.name, variable)
            if spec.secrets_of:
                if name not in self._secret_names():  # it was given an empty value
                    args.append(f"--env={variable}=")
                    continue
            elif not value:
                args.append(f"--env={variable}=")
                continue
            else:
                self._write_store("rm", name, check=False)
                self._store_secret(name, value)
            assert launch is not None  # a value is stored: a launch was made
            args += [
                "--secret",
                f"{name},type=mount,target={variable},uid={launch.uid},gid={launch.gid},mode=0400",
            ]
        return args

    def _store_secret(self, name: str, value: str) -> None:
        """``podman secret create NAME -`` with the value's bytes on stdin: an environment
        value that is not UTF-8 reaches the store (and the program) unchanged."""
        self._write_store("create", name, "-", data=os.fsencode(value))

    def _write_store(self, *args: str, data: bytes = b"", check: bool = True) -> None:
        """Run ``podman secret ARGS`` to its end, whatever happens to corral meanwhile.

        Podman 4.3 rewrites its secret store in place (truncate, then write): a podman
        killed in between leaves an empty file, and from then on every secret command on
        the host fails with "unexpected end of JSON input". So the command runs in a
        session of its own (a Ctrl-C or a kill -9 of corral's process group does not reach
        it) and is waited for, never killed: not on a timeout, not on an interrupt."""
        argv = [self.binary, "secret", *args]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot run podman: {exc}", command=argv) from exc
        try:
            _, err = proc.communicate(data, timeout=STORE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise EngineError(
                f"podman secret {args[0]} still runs after {STORE_TIMEOUT:.0f}s (left to finish)",
                command=argv,
            ) from exc
        except BaseException:
            _finish(proc)
            raise
        finally:
            self._secrets = None
        if check and proc.returncode != 0:
            stderr = err.decode("utf-8", "replace")
            raise EngineError(
                f"podman secret {args[0]} failed: {_last_line(stderr)}{_store_hint(stderr)}",
                command=argv,
                stderr=stderr[-2000:],
            )

    def _remove_secrets(self, container: str) -> None:
        prefix = _secret_name(container, "")
        names = [name for name in self._secret_names() if name.startswith(prefix)]
        if names:
            self._write_store("rm", *names, check=False)

    def collect_leftovers(self, prefix: str) -> list[str]:
        """The secrets in podman's store of containers named ``prefix...`` that do not
        exist, removed; their names."""
        self._secrets = None  # read the store afresh: a killed process added to it
        names = [name for name in self._secret_names() if name.startswith(prefix)]
        orphans = [n for n in names if self.inspect(n.rsplit("--", 1)[0]) is None]
        if orphans:
            self._write_store("rm", *orphans, check=False)
        return orphans

    def _secret_names(self) -> list[str]:
        """The secret store's names, read once per engine: removals are frequent, secrets
        rare, and a listing per removed container costs a podman call each."""
        if self._secrets is None:
            answer = self._via_api(lambda api: api.secret_names())
            if answer is not None:
                self._secrets = answer[0]
            else:  # podman 4.3's `secret ls` has no JSON output: "--format json" prints "json"
                out = self._run("secret", "ls", "--noheading", "--format", "{{.Name}}").stdout
                self._secrets = out.split()
        return self._secrets

    def resume(self, name: str) -> ContainerInfo:
        self._run("start", name, timeout=120)
        info = self.inspect(name)
        if info is None:
            raise EngineError(f"container {name} vanished right after it started")
        return info

    def logs(self, name: str, tail: int = 40) -> str:
        proc = self._run("logs", "--tail", str(tail), name, check=False)
        return (proc.stdout + proc.stderr).strip()

    def stop(self, name: str, timeout: int = 10) -> None:
        self._run("stop", "--ignore", "--time", str(timeout), name, timeout=timeout + 30)

    def kill(self, name: str) -> None:
        proc = self._run("kill", name, check=False)
        # An exited or missing container is not an error: what chaos aimed at is dead.
        if proc.returncode != 0 and self._running(name):
            raise EngineError(
                f"podman kill {name} failed: {_last_line(proc.stderr)}", stderr=proc.stderr[-2000:]
            )

    def _running(self, name: str) -> bool:
        info = self.inspect(name)
        return info is not None and info.state == "running"

    def remove(self, name: str) -> None:
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                if self._via_api(lambda api: api.remove_container(name)) is None:
                    self._run("rm", "--force", "--ignore", "--volumes=false", name, timeout=60)
                break
            except EngineError as exc:
                # A podman process killed mid-way (kill -9 of corral) can leave the
                # container's storage busy for a moment; it frees itself shortly after.
                if "busy" not in exc.stderr or attempt == REMOVE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        self._remove_secrets(name)

    def inspect(self, name: str) -> ContainerInfo | None:
        answer = self._via_api(lambda api: api.inspect_container(name))
        if answer is not None:
            return _container_info(answer[0]) if answer[0] else None
        proc = self._run("container", "inspect", "--format", "json", name, check=False)
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout)
        return _container_info(data[0]) if data else None

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        answer = self._via_api(lambda api: _api_containers(api, labels))
        if answer is not None:
            return [c for c in answer[0] if labels_match(c.labels, labels)]
        ids = self._run("ps", "--all", "--quiet", "--no-trunc", *_label_filters(labels)).stdout
        if not ids.split():
            return []
        proc = self._run("container", "inspect", "--format", "json", *ids.split(), check=False)
        # A container may vanish between ps and inspect; inspect still prints the others.
        # A pod's infra container carries the pod's labels but goes with its pod.
        data = [d for d in json.loads(proc.stdout or "[]") if not d.get("IsInfra")]
        found = [_container_info(d) for d in data]
        return [c for c in found if labels_match(c.labels, labels)]

    def security(self, name: str) -> SecurityFacts:
        data = self._json("container", "inspect", "--format", "json", name)
        if not data:
            raise NotFoundError(f"no container {name}", name=name)
        host = data[0].get("HostConfig") or {}
        bindings = host.get("PortBindings") or {}
        ports = [
            int(b["HostPort"])
            for found in bindings.values()
            for b in found or []
            if b.get("HostPort")
        ]
        return SecurityFacts(
            read_only_root=bool(host.get("ReadonlyRootfs")),
            user=str((data[0].get("Config") or {}).get("User", "")),
            capabilities=tuple(
                sorted(
                    set(data[0].get("EffectiveCaps") or ()) | set(data[0].get("BoundingCaps") or ())
                )
            ),
            no_new_privileges=any(
                "no-new-privileges" in opt for opt in host.get("SecurityOpt") or ()
            ),
            published_ports=tuple(sorted(ports)),
        )

    def exec_in(self, name: str, command: Sequence[str], timeout: float = 30) -> ExecResult:
        proc = self._run("exec", name, *command, timeout=timeout, check=False)
        # podman exec's own failures end 125 (no such container) or 255 (not running,
        # podman 4.3) with podman's "Error: " line; 126 and 127 are the command's (not
        # executable, not found), results like any other.
        if proc.returncode in EXEC_FAILED and proc.stderr.startswith("Error: "):
            raise EngineError(
                f"podman exec in {name} failed: {_last_line(proc.stderr)}",
                command=[self.binary, "exec", name, *command],
                stderr=proc.stderr[-2000:],
            )
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def shell(self, name: str) -> subprocess.Popen[bytes]:
        argv = [self.binary, "exec", "--interactive", name, "/bin/sh"]
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise EngineError(f"cannot run podman: {exc}", command=argv) from exc

    def session(self, name: str, command: Sequence[str], tty: bool, timeout: float) -> int | None:
        # No --user, no --privileged: the session is the instance's user with the
        # instance's (dropped) capabilities, read-only root and no set-uid programs left.
        argv = [self.binary, "exec", "--interactive", *(["--tty"] if tty else []), name]
        with subprocess.Popen([*argv, *command]) as proc:
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                return None
        if status in EXEC_FAILED and not self._running(name):
            raise EngineError(f"podman exec in {name} failed: it is not running")
        return status

    def test_backend(self, name: str) -> str:
        return f"podman://{name}"

    def events(self, labels: Mapping[str, str], since: str | None = None) -> Iterator[EngineEvent]:
        argv = [
            self.binary,
            "events",
            "--format",
            "json",
            "--filter",
            "type=container",
            *_label_filters(labels),
        ]
        if since:
            argv += ["--since", since]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    if line.strip():
                        yield _event(json.loads(line))
            finally:
                proc.kill()

    def diff(self, name: str) -> list[FileChange]:
        data = self._json("diff", "--format", "json", name)
        changes: list[FileChange] = []
        for kind, key in (("A", "added"), ("C", "changed"), ("D", "deleted")):
            changes += [FileChange(kind, path) for path in data.get(key) or []]
        return changes

    def rename(self, name: str, new_name: str) -> None:
        self._run("rename", name, new_name)

    def run_facts(self, name: str) -> RunFacts | None:
        answer = self._via_api(lambda api: api.inspect_container(name))
        if answer is not None:
            data = answer[0]
        else:
            proc = self._run("container", "inspect", "--format", "json", name, check=False)
            found = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
            data = found[0] if found else None
        if not data:
            return None
        image = str(data.get("Image", ""))
        if image not in self._image_env:
            config = self._raw_image(image).get("Config") or {} if image else {}
            self._image_env[image] = frozenset(_env(config.get("Env")))
        return run_facts_of(data, self._image_env[image])

    # -- pods -------------------------------------------------------------------------
    def create_pod(self, spec: PodSpec) -> None:
        self._run("pod", "create", *pod_args(spec), timeout=120)

    def remove_pod(self, name: str) -> None:
        # Stops its containers within their stop timeouts, as ``remove`` does.
        self._run("pod", "rm", "--force", "--ignore", name, timeout=120)

    # -- networks and volumes ---------------------------------------------------------
    def ensure_network(self, name: str, labels: Mapping[str, str], internal: bool = False) -> None:
        if self._network_exists(name):
            return
        args = ["network", "create", *_label_args(labels)]
        if internal:
            args.append("--internal")
        self._run(*args, name)

    def _dns_servers(self, network: str) -> tuple[str, ...]:
        """The addresses where podman's DNS server (aardvark-dns) answers on ``network``:
        its gateways, or none when the network has no DNS."""
        return self._network_facts(network).dns

    def _network_facts(self, network: str) -> NetworkFacts:
        if network not in self._networks:
            found = self._json("network", "inspect", "--format", "json", network)
            self._networks[network] = network_facts(found[0] if found else {})
        return self._networks[network]

    def remove_network(self, name: str) -> None:
        self._networks.pop(name, None)
        if self._network_exists(name):
            # Not --force: that would also remove any container still attached, corral's or not.
            self._run("network", "rm", name)

    def _network_exists(self, name: str) -> bool:
        answer = self._via_api(lambda api: api.network_exists(name))
        if answer is not None:
            return answer[0]
        return self._run("network", "exists", name, check=False).returncode == 0

    def list_networks(self, labels: Mapping[str, str]) -> list[str]:
        data = self._json("network", "ls", "--format", "json", *_label_filters(labels))
        return sorted(str(n["name"]) for n in data if labels_match(n.get("labels") or {}, labels))

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        if self._run("volume", "exists", name, check=False).returncode != 0:
            self._run("volume", "create", *_label_args(labels), name)

    def list_volumes(self, labels: Mapping[str, str]) -> list[str]:
        answer = self._via_api(lambda api: api.volumes(labels))
        data = answer[0] if answer is not None else self._volume_listing(labels)
        return sorted(str(v["Name"]) for v in data if labels_match(v.get("Labels") or {}, labels))

    def _volume_listing(self, labels: Mapping[str, str]) -> Any:
        return self._json("volume", "ls", "--format", "json", *_label_filters(labels))

    def remove_volume(self, name: str) -> None:
        self._run("volume", "rm", name)

    def volume_path(self, name: str) -> Path:
        found = self._run("volume", "inspect", "--format", "{{.Mountpoint}}", name, check=False)
        if found.returncode != 0 or not found.stdout.strip():
            raise NotFoundError(f"no volume {name}", name=name)
        return Path(found.stdout.strip())

    def volume_sizes(self, labels: Mapping[str, str]) -> dict[str, int | None]:
        answer = self._via_api(lambda api: api.volumes(labels))
        data = answer[0] if answer is not None else self._volume_listing(labels)
        return {
            str(v["Name"]): folder_size(str(v.get("Mountpoint") or ""))
            for v in data
            if labels_match(v.get("Labels") or {}, labels)
        }


def folder_size(path: str) -> int | None:
    """Bytes a local volume's folder takes on disk (as ``du``: blocks, each inode once,
    links not followed); None when there is no such folder or it cannot be read."""
    if not path or not os.path.isdir(path):
        return None
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        for folder, dirs, files in os.walk(path, onerror=_raise):
            for name in (*dirs, *files):
                info = os.lstat(os.path.join(folder, name))
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
    except OSError:
        return None
    return total


def _raise(error: OSError) -> None:
    raise error


def _api_containers(api: PodmanAPI, labels: Mapping[str, str]) -> list[ContainerInfo]:
    """The containers with ``labels``, read in a fixed number of requests.

    A running container that never stopped is wholly described by the listings; only
    the others (a stopped one's exit code and time are not in them) are inspected, and
    those are few: a fleet runs. A container that vanished before its inspection is
    left out.
    """
    found: list[ContainerInfo] = []
    for summary in api.container_summaries(labels):
        if summary.get("IsInfra"):  # a pod's own: it goes with its pod (``remove_pod``)
            continue
        info = _listed_info(summary)
        if info is None:
            data = api.inspect_container(str(summary["Id"]))
            info = _container_info(data) if data is not None else None
        if info is not None:
            found.append(info)
    return found


#: Mount points every instance has that are never volumes (tmpfs, the secrets folder).
LISTED_TMPFS = frozenset({"/tmp", "/run", SECRETS_DIR})


def _listed_info(summary: Mapping[str, Any]) -> ContainerInfo | None:
    """What ``inspect`` would say of a listed container, if the listing says it all: it
    runs, has never stopped (no exit code or stop time to tell) and its addresses came."""
    names = summary.get("Names") or ()
    addresses = summary.get("Addresses")
    never_stopped = int(summary.get("ExitedAt") or 0) <= 0
    running = _state("running", summary.get("Pid")) == "running"
    if summary.get("State") != "running" or not running or not never_stopped:
        return None  # inspect says how it ended (or that its process is gone)
    if addresses is None or not names:
        return None
    volumes = summary.get("VolumeNames")
    if volumes is None and set(summary.get("Mounts") or ()) - LISTED_TMPFS:
        return None  # only mount points are known, not which volumes: inspect says
    return ContainerInfo(
        id=str(summary["Id"]),
        name=str(names[0]).lstrip("/"),
        image_id=str(summary.get("ImageID", "")),
        labels=dict(summary.get("Labels") or {}),
        state="running",
        addresses=dict(addresses),
        created=str(summary.get("Created", "")),
        exit_code=int(summary.get("ExitCode") or 0),
        finished="",
        volumes=tuple(volumes or ()),
    )


def run_args(
    spec: ContainerSpec,
    secret_args: Sequence[str] = (),
    launch: SecretLaunch | None = None,
    dns: Sequence[str] = (),
) -> list[str]:
    """The ``podman run`` arguments for ``spec``: lockdown first, then the instance.

    ``dns``: the addresses of the network's DNS server (see ``dns_args``).

    With secrets (``secret_args`` from the secret store, ``launch`` from the image), the
    program is started by :data:`LAUNCHER`, which reads each secret's file into the
    environment variable of the same name and then executes the image's entrypoint and
    the command. Podman 4.3's ``type=env`` secrets would be simpler, but it writes their
    values into the container's ``Config.Env``, for anyone who can run ``podman inspect``
    to read (podman#23788).
    """
    args = _container_args(spec, dns)
    if launch is None:
        return [*args, *secret_args, spec.image, *spec.command]
    # A folder of its own, owned by root: the secrets' mount points need a writable place
    # on a read-only root, and the program may not add files of its own beside them.
    args.append(f"--tmpfs={SECRETS_DIR}:rw,nosuid,nodev,noexec,size=4m,mode=0755")
    args += [*secret_args, "--entrypoint", json.dumps(["/bin/sh", "-c", LAUNCHER, "corral"])]
    return [*args, spec.image, *launch.entrypoint, *spec.command]


def probe_args(spec: ContainerSpec, dns: Sequence[str] = ()) -> list[str]:
    """The ``podman run`` arguments for a probe: ``spec``'s lockdown, and its command as
    the entrypoint, so the image's own entrypoint (a server's start script) never runs."""
    entrypoint = json.dumps(list(spec.command))
    return [*_container_args(spec, dns), "--entrypoint", entrypoint, spec.image]


def network_facts(data: Mapping[str, Any]) -> NetworkFacts:
    """The :class:`NetworkFacts` of one ``podman network inspect`` document."""
    gateways = [str(s["gateway"]) for s in data.get("subnets") or [] if s.get("gateway")]
    ipv4 = [g for g in gateways if "." in g]
    return NetworkFacts(
        dns=tuple(gateways) if data.get("dns_enabled") else (),
        interface=str(data.get("network_interface") or "")
        if data.get("driver") == "bridge"
        else "",
        gateway=ipv4[0] if ipv4 else "",
    )


def pod_args(spec: PodSpec) -> list[str]:
    """The ``podman pod create`` arguments for ``spec``: its infra container holds the
    network namespace (network, published ports, sysctls) that its containers join."""
    args = ["--name", spec.name, "--infra-name", f"{spec.name}-infra", *_label_args(spec.labels)]
    if spec.network:
        args += ["--network", spec.network]
    args += [f"--publish={p.host_ip}:{p.host_port}:{p.container_port}" for p in spec.ports]
    return args + [f"--sysctl={name}={value}" for name, value in spec.sysctls.items()]


def _container_args(spec: ContainerSpec, dns: Sequence[str] = ()) -> list[str]:
    """Everything of ``podman run`` but the image and the command: lockdown first."""
    args = ["--name", spec.name, "--cap-drop", "all", "--stop-timeout", str(spec.stop_timeout)]
    args += [f"--cap-add={cap}" for cap in spec.cap_add]
    if spec.init:
        args.append("--init")
    if spec.stop_signal:
        args.append(f"--stop-signal={spec.stop_signal}")
    if spec.restart:
        args.append(f"--restart={spec.restart}")
    if spec.read_only:
        args += ["--read-only", "--read-only-tmpfs=false"]
    args += _tmpfs_args(spec)
    if spec.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    args += _label_args(spec.labels)
    args += [f"--env={k}={v}" for k, v in spec.env.items()]
    args += _placement_args(spec)
    args += dns_args(dns) if spec.network else []
    args += _limit_args(spec)
    return args


def _tmpfs_args(spec: ContainerSpec) -> list[str]:
    """Podman's ``U`` option gives a tmpfs to the container's user (podman 4.3 reads the
    uid and gid from the image itself); ``mode`` applies where the image has no such
    folder, else the image's folder lends its mode (podman copies it up)."""
    args = [f"--tmpfs={path}:rw,nosuid,nodev,size=64m" for path in spec.tmpfs]
    owned = "rw,noexec,nosuid,nodev,size=64m,U,mode=0755"
    return args + [f"--tmpfs={path}:{owned}" for path in spec.owned_tmpfs]


def _placement_args(spec: ContainerSpec) -> list[str]:
    args: list[str] = []
    if spec.user:
        args += ["--user", spec.user]
    if spec.workdir:
        args += ["--workdir", spec.workdir]
    if spec.pod:
        args += ["--pod", spec.pod]
    if spec.network:
        args += ["--network", spec.network]
        args += [f"--network-alias={alias}" for alias in spec.network_aliases]
    args += [f"--publish={p.host_ip}:{p.host_port}:{p.container_port}" for p in spec.ports]
    args += [f"--sysctl={name}={value}" for name, value in spec.sysctls.items()]
    for mount in spec.mounts:
        mode = "ro" if mount.read_only else "rw"
        args += ["--volume", f"{mount.source}:{mount.target}:{mode}"]
    return args


def _finish(proc: subprocess.Popen[bytes]) -> None:
    """Let a store-writing podman finish after corral was interrupted: its input ends
    where it was cut (the next run removes what it stored), and it is never killed."""
    if proc.stdin is not None:
        proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):  # then it finishes on its own
        proc.wait(timeout=STORE_TIMEOUT)


def _store_hint(stderr: str) -> str:
    """What to tell the operator when podman's secret store itself cannot be read."""
    if "end of JSON input" not in stderr:
        return ""
    return (
        " (podman's secret store is damaged: a podman writing it was killed, or the disk"
        " was full; see 'Podman's secret store' in docs/operations.md)"
    )


def dns_args(servers: Sequence[str]) -> list[str]:
    """Resolver settings that keep a role's name resolving while containers come and go.

    An instance asks the network's aardvark-dns only (it forwards every other name to the
    host's resolvers itself), with no search domain, and short tries: podman's defaults
    also list the host's resolver, which answers "no such name" for a role whenever a
    query to aardvark is refused, and a search domain doubles every wait. glibc makes at
    most 5 rounds over at most 3 listed servers, waiting ``timeout << n / 3`` on the n-th:
    with aardvark listed 3 times and a 2 s timeout, a lost query costs 2 s, not 5 or 10.
    The losses themselves came from two bugs of Debian 12's podman stack, both fixed
    now: the bridge's changing MAC address (``bridge``) and aardvark-dns 1.4 binding its
    sockets again on every reload (containers/aardvark-dns#389; scripts/setup-dns).
    """
    if not servers:
        return []
    listed = [f"--dns={ip}" for ip in servers for _ in range(RESOLVER_LISTINGS)][:3]
    return [*listed, *(f"--dns-option={o}" for o in DNS_OPTIONS)]


def _limit_args(spec: ContainerSpec) -> list[str]:
    args: list[str] = []
    if spec.memory:
        args += ["--memory", spec.memory]
    if spec.cpus:
        args += ["--cpus", str(spec.cpus)]
    if spec.pids_limit:
        args += ["--pids-limit", str(spec.pids_limit)]
    return args


def _label_args(labels: Mapping[str, str]) -> list[str]:
    return [f"--label={k}={v}" for k, v in labels.items()]


def _label_filters(labels: Mapping[str, str]) -> list[str]:
    """Narrow a listing on the engine's side; ``labels_match`` decides.

    Podman ORs repeated label filters for some object kinds (volumes, networks), so a
    listing by several labels could return objects that carry only one of them: a test
    environment's teardown would then see live volumes. Every listing is re-checked.
    """
    return [f"--filter=label={k}={v}" for k, v in labels.items()][:1]


def resolve_user(user: str, passwd: str, group: str) -> tuple[int, int]:
    """The numeric uid and gid of ``user`` (``name``, ``uid``, ``name:group``...) as the
    image's ``passwd`` and ``group`` files say; a user named nowhere is an EngineError."""
    name, _, group_name = user.partition(":")
    uid, gid = _lookup(name or "0", passwd)
    if uid is None:
        raise EngineError(f"user {name!r} is not in the image's /etc/passwd")
    if group_name:
        gid = _lookup(group_name, group)[0]
        if gid is None:
            raise EngineError(f"group {group_name!r} is not in the image's /etc/group")
    return uid, uid if gid is None else gid


def _lookup(name: str, table: str) -> tuple[int | None, int | None]:
    """(id, primary group) of ``name`` in a passwd/group table; a number stands for itself."""
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and name in (fields[0], fields[2]) and fields[2].isdigit():
            return int(fields[2]), int(fields[3]) if fields[3].isdigit() else None
    return (int(name), None) if name.isdigit() else (None, None)


def _read(root: Path, path: str) -> str:
    """The text of the image's file ``path`` (its symlinks followed inside the image, at
    most :data:`MAX_IMAGE_FILE` bytes); empty if it is not a regular file."""
    found = resolve_inside(root, path)
    if found is None or not found.is_file():
        return ""
    try:
        with found.open("rb") as handle:
            return handle.read(MAX_IMAGE_FILE).decode("utf-8", "replace")
    except OSError:
        return ""


def has_file(root: Path, path: str) -> bool:
    """Whether ``path`` names a regular file in the image whose tree is at ``root``."""
    found = resolve_inside(root, path)
    return found is not None and found.is_file()


def resolve_inside(root: Path, path: str, hops: int = 40) -> Path | None:
    """Where ``path`` leads in the tree at ``root``, following its symlinks as they would
    be followed inside it (an absolute target, or ``..``, never leaves ``root``); None if
    it leads nowhere. An image's symlink can then never make corral read a host file."""
    parts = [p for p in path.split("/") if p and p != "."]
    current = root
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(candidate)
            parts = [p for p in target.split("/") if p and p != "."] + parts
            current = root if target.startswith("/") else current
        elif candidate.exists():
            current = candidate
        else:
            return None
    return current


def _stores(spec: ContainerSpec) -> bool:
    """Whether ``spec`` gets a secret through the store (its own values, or another's)."""
    return any(spec.secrets.values()) or bool(spec.secrets_of and spec.secrets)


def _secret_name(container: str, variable: str) -> str:
    return f"{container}--{variable}"


def _probe_output(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text[-PROBE_OUTPUT:]


@contextlib.contextmanager
def _labelled(containerfile: Path, labels: Mapping[str, str]) -> Iterator[tuple[Path, list[str]]]:
    """``containerfile`` and the ``--label`` flags that label its image.

    buildah turns each ``--label`` into a LABEL step of its own, and with ``--layers``
    each step commits an image: 0.11 s each here, 1.9 s for the 17 labels of a role's
    image. So several labels go into one LABEL step appended to a copy of the file (its
    last stage, where buildah puts them too), each word quoted by
    :func:`label_instruction`. The flags stay for one label, and for a file that sets
    another escape character or ends in a line continuation.
    """
    data = containerfile.read_bytes()
    text = data.decode("utf-8", errors="replace")
    instruction = label_instruction(labels) if len(labels) > 1 else None
    lines = text.rstrip().splitlines() or [""]
    plain = _escape_directive(text) in ("\\", None) and not lines[-1].endswith("\\")
    if instruction is None or not plain:
        yield containerfile, [f for k, v in labels.items() for f in ("--label", f"{k}={v}")]
        return
    with tempfile.TemporaryDirectory(prefix="corral-labels-") as tmp:
        copy = Path(tmp, containerfile.name)
        copy.write_bytes(data + f"\n{instruction}\n".encode())
        yield copy, []


def label_instruction(labels: Mapping[str, str]) -> str | None:
    """One Containerfile LABEL instruction setting ``labels``, each key and value a
    double-quoted word in which only ``\\``, ``"`` and ``$`` are special (each is escaped
    with a backslash); None if a key or value holds a control character (a newline would
    end the instruction), which only ``--label`` can carry."""
    words = []
    for key, value in labels.items():
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key + value):
            return None
        words.append(f"{_quoted(key)}={_quoted(value)}")
    return f"LABEL {' '.join(words)}"


def _quoted(word: str) -> str:
    return '"' + "".join(f"\\{c}" if c in '\\"$' else c for c in word) + '"'


def _escape_directive(text: str) -> str | None:
    """The escape character a Containerfile's ``# escape=`` parser directive names, if
    any (directives are the comment lines at its very top)."""
    for line in text.splitlines():
        match = re.fullmatch(r"#\s*(\w+)\s*=\s*(\S*)\s*", line.strip())
        if match is None:
            return None
        if match.group(1).lower() == "escape":
            return match.group(2)
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _image_info(data: Mapping[str, Any]) -> ImageInfo:
    labels = data.get("Labels") or (data.get("Config") or {}).get("Labels") or {}
    return ImageInfo(
        id=str(data["Id"]),
        digest=str(data.get("Digest", "")),
        tags=tuple(data.get("RepoTags") or ()),
        labels=dict(labels),
        created=str(data.get("Created", "")),
        size=int(data.get("Size", 0)),
    )


def _container_info(data: Mapping[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    status = str(state.get("Status", "unknown"))
    seen = _state(status, state.get("Pid"))
    return ContainerInfo(
        id=str(data["Id"]),
        name=str(data.get("Name", "")).lstrip("/"),
        image_id=str(data.get("Image", "")),
        labels=dict((data.get("Config") or {}).get("Labels") or {}),
        state=seen,
        addresses={n: str(v.get("IPAddress", "")) for n, v in networks.items()},
        created=str(data.get("Created", "")),
        exit_code=state.get("ExitCode") if seen == status else None,  # gone: code unknown
        finished=_real_time(state.get("FinishedAt")),
        volumes=tuple(
            str(m["Name"])
            for m in data.get("Mounts") or ()
            if m.get("Type") == "volume" and m.get("Name")
        ),
    )


def _state(status: str, pid: object) -> str:
    """Podman's status of a container, "exited" for one it calls running whose process is
    gone: podman learns of an exit from the container's conmon, and a conmon killed with
    it (the OOM killer, a host restored from a snapshot) leaves it "running" for ever, so
    nothing would replace it. A live process keeps it running: it may hold its volumes.
    Only a podman on this machine is asked (see ``remote_podman``).
    """
    if status != "running" or not isinstance(pid, int) or pid <= 0 or remote_podman():
        return status  # a remote podman's pids are not this machine's
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return "exited"
    except PermissionError:
        pass  # it exists, another user's
    return status


def run_facts_of(data: Mapping[str, Any], image_env: frozenset[str]) -> RunFacts:
    """The :class:`RunFacts` of one ``podman container inspect`` document."""
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    caps = {
        *(data.get("BoundingCaps") or ()),
        *(data.get("EffectiveCaps") or ()),
        *(host.get("CapAdd") or ()),
    }
    mounts = tuple(
        sorted(
            (
                Mount(
                    str(m.get("Name") or m.get("Source", "")),
                    str(m["Destination"]),
                    not m.get("RW"),
                )
                for m in data.get("Mounts") or ()
                if m.get("Type") in ("volume", "bind")
                and not str(m.get("Destination", "")).startswith(SECRETS_DIR)
            ),
            key=lambda m: m.target,
        )
    )
    ports = tuple(
        PortMapping(int(b["HostPort"]), int(port.split("/")[0]), str(b.get("HostIp") or ""))
        for port, bound in sorted((host.get("PortBindings") or {}).items())
        for b in bound or ()
        if b.get("HostPort")
    )
    return RunFacts(
        image_id=str(data.get("Image", "")),
        command=tuple(str(a) for a in config.get("Cmd") or ()),
        env=_env(config.get("Env")),
        image_env=image_env,
        mounts=mounts,
        capabilities=frozenset(str(c).removeprefix("CAP_") for c in caps),
        user=str(config.get("User") or ""),
        ports=ports,
    )


def _env(pairs: Any) -> dict[str, str]:
    """``NAME=value`` lines as a mapping."""
    return dict(str(p).partition("=")[::2] for p in pairs or ())


def _real_time(value: Any) -> str:
    """Podman reports 'never' as year 1 (0001-01-01T00:00:00Z); corral says ''."""
    text = str(value or "")
    return "" if text.startswith("0001-") else text


def _event(data: Mapping[str, Any]) -> EngineEvent:
    return EngineEvent(
        time=str(data.get("Time") or data.get("time") or ""),  # podman 4.3 says "Time"
        kind=str(data.get("Status", "")),
        container=str(data.get("Name", "")),
        labels=dict(data.get("Attributes") or {}),
    )
