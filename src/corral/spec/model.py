"""The fleet spec as typed, frozen values (schema version 1).

Every field is documented in docs/spec.md; keep the two in step. Models forbid unknown
keys so a typo is an error, never a silently ignored setting. Every value is checked for
its kind (``corral.spec.kinds``) and bounded, so a spec can only describe, never inject.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

from corral.spec import kinds

SCHEMA_VERSION: Literal[1] = 1
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,29}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string like '500ms', '2s', '5m'."""
    if isinstance(value, bool):
        return value  # let pydantic reject it with its own message
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 2, '500ms', '2s' or '5m', got {value!r}")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


# Numbers are strict: YAML ``true`` is not 1 and ``1.5`` is not an integer.
Duration = Annotated[StrictFloat, BeforeValidator(_parse_duration), Field(ge=0, le=86400)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, max_length=128)]
# Paths inside the image: absolute, normal form, portable characters (see kinds).
ImagePath = Annotated[str, AfterValidator(kinds.image_path)]
CopyDest = Annotated[str, AfterValidator(kinds.copy_dest)]
MountPath = Annotated[str, AfterValidator(kinds.mount_path)]
# Paths on the host, relative to the spec's folder; load.py confines them after symlinks.
HostPath = Annotated[str, Field(min_length=1), AfterValidator(kinds.host_path)]
# Text handed to a program (an argument, an environment value): anything but NUL, and
# short enough for the kernel's limit on one argument (128 KiB).
ArgText = Annotated[str, Field(min_length=1, max_length=16384), AfterValidator(kinds.no_nul)]
EnvValue = Annotated[str, Field(max_length=16384), AfterValidator(kinds.no_nul)]

# Bounds that keep loading, baking and planning fast whatever the spec says.
MAX_ROLES = 100
MAX_PACKAGES = 1000
MAX_STEPS = 100
MAX_ARGS = 256
MAX_ENV = 256
MAX_SECRETS = 64
MAX_VOLUMES = 32
MAX_TESTS = 100
MAX_TMPFS = 16


class SpecProblem(ValueError):
    """A fleet-wide problem that knows which part of the spec it is about (``loc``)."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DebianBase(Model):
    """A root filesystem made locally with mmdebstrap."""

    debian: Literal["bookworm", "trixie", "bullseye"]
    packages: tuple[
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$", max_length=128)], ...
    ] = Field(default=(), max_length=MAX_PACKAGES)
    variant: Literal["apt", "minbase", "essential"] = "apt"


class ImageBase(Model):
    """An image already present in the engine's local storage."""

    image: Annotated[str, Field(min_length=1), AfterValidator(kinds.image_reference)]


class ContainerfileBase(Model):
    """An image built from a Containerfile kept beside the spec."""

    containerfile: HostPath


BASE_KINDS = ("debian", "image", "containerfile")
HEALTH_KINDS = ("http", "tcp", "command")


def _kind_of(kinds: tuple[str, ...]) -> Any:
    """A discriminator: the first of ``kinds`` present as a key (or model field) of the value."""

    def pick(value: Any) -> str | None:
        for kind in kinds:
            if (isinstance(value, dict) and kind in value) or (
                isinstance(value, BaseModel) and kind in type(value).model_fields
            ):
                return kind
        return None

    return pick


Base = Annotated[
    Annotated[DebianBase, Tag("debian")]
    | Annotated[ImageBase, Tag("image")]
    | Annotated[ContainerfileBase, Tag("containerfile")],
    Discriminator(
        _kind_of(BASE_KINDS),
        custom_error_type="base_kind",
        custom_error_message="expected one of: debian, image, containerfile",
    ),
]


class CopyStep(Model):
    src: HostPath
    dest: CopyDest


class BuildSteps(Model):
    copy_: tuple[CopyStep, ...] = Field(default=(), alias="copy", max_length=MAX_STEPS)
    run: tuple[
        Annotated[str, Field(min_length=1, max_length=65536), AfterValidator(kinds.no_nul)], ...
    ] = Field(default=(), max_length=MAX_STEPS)
    # The build's steps are the role's code: they get no network unless the role asks.
    network: StrictBool = False

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RunConfig(Model):
    command: tuple[ArgText, ...] = Field(min_length=1, max_length=MAX_ARGS)
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "app"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=MAX_ENV)
    secrets: tuple[EnvName, ...] = Field(default=(), max_length=MAX_SECRETS)
    workdir: ImagePath | None = None
    # Writable, empty folders on the read-only root, owned by ``user`` (e.g. /run/postgresql).
    tmpfs: tuple[Annotated[str, AfterValidator(kinds.tmpfs_path)], ...] = Field(
        default=(), max_length=MAX_TMPFS
    )

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str) -> str:
        if value == "root":
            raise ValueError("instances never run as root; name an unprivileged user")
        return value

    @field_validator("tmpfs")
    @classmethod
    def _tmpfs_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a folder is named twice")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_are_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value


# A request path the probe can send and the edge's haproxy.cfg can hold as one word: URL
# characters only (RFC 3986), less the quote, '#' and '$' that haproxy.cfg gives a meaning.
# A space would end the HTTP request line: percent-encode it (%20).


class HttpHealth(Model):
    http: Annotated[str, AfterValidator(kinds.url_path)]
    interval: Duration = 1.0
    timeout: Duration = 2.0
    retries: Annotated[StrictInt, Field(ge=1, le=1000)] = 30


class TcpHealth(Model):
    tcp: Literal[True]
    interval: Duration = 1.0
    timeout: Duration = 2.0
    retries: Annotated[StrictInt, Field(ge=1, le=1000)] = 30

    @field_validator("tcp", mode="before")
    @classmethod
    def _tcp_is_true(cls, value: Any) -> Any:
        if value is not True:
            raise ValueError(f"expected true, got {value!r}")
        return value


class CommandHealth(Model):
    """A program run from outside the instance, in a throwaway container of the role's
    image on the fleet's network; exit status 0 means ready. ``{host}`` and ``{port}``
    arguments become the instance's address and ``run.port``."""

    command: tuple[Annotated[ArgText, AfterValidator(kinds.probe_argument)], ...] = Field(
        min_length=1, max_length=MAX_ARGS
    )
    interval: Duration = 1.0
    timeout: Duration = 2.0
    retries: Annotated[StrictInt, Field(ge=1, le=1000)] = 30


Health = Annotated[
    Annotated[HttpHealth, Tag("http")]
    | Annotated[TcpHealth, Tag("tcp")]
    | Annotated[CommandHealth, Tag("command")],
    Discriminator(
        _kind_of(HEALTH_KINDS),
        custom_error_type="health_kind",
        custom_error_message="expected one of: http, tcp, command",
    ),
]


_PERCENT = re.compile(r"^(\d{1,3})%$")
_AMOUNT_HELP = "expected an integer 0-100 or a percentage of replicas such as '25%'"


def _parse_amount(value: Any) -> int | str:
    """An instance count 0-100, or a percentage of the role's replicas ('0%' to '100%')."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        return value
    if isinstance(value, str):
        match = _PERCENT.match(value.strip())
        if match and int(match.group(1)) <= 100:
            return f"{int(match.group(1))}%"
    raise ValueError(f"{_AMOUNT_HELP}, got {value!r}")


# A count of instances, or a percentage string resolved against the replicas at deploy time.
Amount = Annotated[int | str, PlainValidator(_parse_amount)]


def resolve_amount(amount: int | str, replicas: int, round_up: bool) -> int:
    """Instances meant by ``amount`` for ``replicas`` (Kubernetes' rounding of percentages)."""
    if isinstance(amount, int):
        return amount
    share = int(amount.rstrip("%")) * replicas
    return -(-share // 100) if round_up else share // 100


class CanaryPolicy(Model):
    """How ``corral patch`` tries a new release before the rest: ``instances`` new ones (a
    count or a share of the replicas, at least one) take ``traffic`` percent of the role's
    requests at the edge while their error rate and latency are compared with the old ones'.
    """

    instances: Amount = 1
    traffic: Annotated[int, Field(ge=1, le=50)] = 20
    # The canary fails when its error rate exceeds the old instances' by more than this
    # (a fraction of requests), or its mean response time exceeds theirs times
    # ``latency_factor`` plus ``latency_slack``.
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    latency_factor: Annotated[float, Field(ge=1, le=100)] = 3.0
    latency_slack: Duration = 0.05

    def count(self, replicas: int) -> int:
        """The canary instances for ``replicas``: a share rounds up, at least one."""
        return max(1, min(replicas, resolve_amount(self.instances, replicas, round_up=True)))


class DeployPolicy(Model):
    strategy: Literal["rolling", "blue-green"] = "rolling"
    max_surge: Amount = 1
    max_unavailable: Amount = 0
    keep_old: Duration = 300.0
    drain: Duration = 5.0
    # How long the new instances must stay running (and up in the edge) before the release
    # counts as live: an instance that dies within it fails the deploy, which rolls back.
    settle: Duration = 2.0
    # ``corral watch``: how long a running instance may stay unhealthy (the edge marks it
    # down, or its check fails) before it is burned and replaced. Long enough that a
    # slow request or a short pause is not a death; short enough that capacity returns.
    grace: Annotated[StrictFloat, BeforeValidator(_parse_duration), Field(ge=1, le=3600)] = 30.0
    canary: CanaryPolicy = CanaryPolicy()

    @model_validator(mode="after")
    def _can_progress(self) -> DeployPolicy:
        if self.strategy == "rolling" and self.surge(100) == 0 and self.unavailable(100) == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: nothing could move")
        return self

    def surge(self, replicas: int) -> int:
        """Extra instances allowed during a rolling change; a percentage rounds up."""
        return resolve_amount(self.max_surge, replicas, round_up=True)

    def unavailable(self, replicas: int) -> int:
        """Missing instances allowed during a rolling change; a percentage rounds down."""
        return resolve_amount(self.max_unavailable, replicas, round_up=False)

    def check_progress(self, replicas: int) -> None:
        """Refuse percentages that resolve to no surge and no unavailability for ``replicas``.

        Raises:
            ValueError: a rolling change of this many replicas could not move.
        """
        if self.strategy != "rolling" or replicas == 0:
            return
        if self.surge(replicas) == 0 and self.unavailable(replicas) == 0:
            raise ValueError(
                f"deploy: max_surge {self.max_surge!r} and max_unavailable "
                f"{self.max_unavailable!r} both come to 0 instances of {replicas} replicas "
                "(a percentage of unavailable rounds down): nothing could move"
            )


class Lockdown(Model):
    # Normalised to 'NET_BIND_SERVICE' whether written so or as 'CAP_NET_BIND_SERVICE'.
    capabilities: Annotated[
        tuple[Annotated[str, AfterValidator(kinds.capability)], ...],
        Field(max_length=64),
        AfterValidator(kinds.distinct_capabilities),
    ] = ()
    allow_ssh: StrictBool = False
    # The root filesystem is read-only unless a role turns it off (a program that writes
    # beside itself): ``corral watch`` then burns an instance whose files changed.
    read_only_root: StrictBool = True


class Resources(Model):
    memory: Annotated[str, AfterValidator(kinds.memory)] = "512m"
    cpus: Annotated[StrictFloat, Field(gt=0, le=64)] = 1.0
    pids: Annotated[StrictInt, Field(ge=16, le=100000)] = 256


class Retention(Model):
    """How many snapshots of a volume ``corral backup --prune`` keeps (restic's policy)."""

    last: Annotated[StrictInt, Field(ge=0, le=10000)] = 0
    daily: Annotated[StrictInt, Field(ge=0, le=10000)] = 7
    weekly: Annotated[StrictInt, Field(ge=0, le=10000)] = 4
    monthly: Annotated[StrictInt, Field(ge=0, le=10000)] = 6


ProbeCommand = tuple[Annotated[ArgText, AfterValidator(kinds.probe_argument)], ...]


class VolumeBackup(Model):
    """How a volume is backed up: its files (writers paused), or a role's dump command.

    ``dump`` runs in a throwaway container of the role's image on the fleet's network and
    writes the backup on its standard output; ``restore`` reads it on its standard input;
    ``check`` (optional) proves a restored copy works. ``{host}`` and ``{port}`` become the
    address and ``run.port`` of the instance they talk to.
    """

    mode: Literal["files", "dump"] = "files"
    dump: ProbeCommand = Field(default=(), max_length=MAX_ARGS)
    restore: ProbeCommand = Field(default=(), max_length=MAX_ARGS)
    check: ProbeCommand = Field(default=(), max_length=MAX_ARGS)
    keep: Retention = Retention()

    @model_validator(mode="after")
    def _commands(self) -> VolumeBackup:
        if self.mode == "dump" and not (self.dump and self.restore):
            raise ValueError("mode 'dump' needs both a 'dump' and a 'restore' command")
        if self.mode == "files" and (self.dump or self.restore):
            raise ValueError("'dump' and 'restore' commands are for mode 'dump' only")
        return self


class Volume(Model):
    """A named volume written as a mapping: where it is mounted, and who may share it."""

    path: MountPath
    # Single-writer by default: a database's data folder must never be mounted by two
    # running instances. Shareable volumes are for programs that coordinate their
    # writers themselves (SQLite's locks, append-only files); their roles roll new-first.
    shareable: StrictBool = False
    backup: VolumeBackup | None = None


def _volume_kind(value: Any) -> str | None:
    """The short form (the mount path as text) or the mapping form of a volume."""
    if isinstance(value, str):
        return "path"
    return "volume" if isinstance(value, dict | Volume) else None


VolumeEntry = Annotated[
    Annotated[MountPath, Tag("path")] | Annotated[Volume, Tag("volume")],
    Discriminator(
        _volume_kind,
        custom_error_type="volume_kind",
        custom_error_message="expected a path in the image, or a mapping with path and shareable",
    ),
]


class Role(Model):
    base: Base
    build: BuildSteps = BuildSteps()
    run: RunConfig
    health: Health | None = None
    replicas: Annotated[StrictInt, Field(ge=0, le=100)] = 1
    volumes: dict[Name, VolumeEntry] = Field(default_factory=dict, max_length=MAX_VOLUMES)
    tests: tuple[HostPath, ...] = Field(default=(), max_length=MAX_TESTS)
    # Test environments seed these volumes from folders in the repo (volume -> folder).
    fixtures: dict[Name, HostPath] = Field(default_factory=dict, max_length=MAX_VOLUMES)
    deploy: DeployPolicy = DeployPolicy()
    after: tuple[Name, ...] = Field(default=(), max_length=MAX_ROLES)
    public: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    lockdown: Lockdown = Lockdown()
    resources: Resources = Resources()
    # The secrets the role's own tests receive as environment variables (test values).
    test_secrets: tuple[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Role:
        if self.health is not None and self.run.port is None:
            raise ValueError("a health check needs run.port: it is observed from outside")
        if self.public is not None and self.run.port is None:
            raise ValueError("a public role needs run.port for the edge to reach it")
        self.deploy.check_progress(self.replicas)
        if self.replicas > 1 and self.single_writer:
            raise ValueError(
                f"{self.replicas} replicas would all mount the single-writer volume(s) "
                f"{', '.join(self.single_writer)}: run one replica, or declare each volume "
                "'shareable: true' if the program coordinates its writers itself"
            )
        mounts = [PurePosixPath(p) for p in self.mounts.values()]
        if len(set(mounts)) != len(mounts):
            raise ValueError("two volumes are mounted at the same path")
        both = sorted(set(self.mounts.values()) & set(self.run.tmpfs))
        if both:
            raise ValueError(f"run.tmpfs and a volume are both mounted at {', '.join(both)}")
        unknown = sorted(set(self.fixtures) - set(self.volumes))
        if unknown:
            raise ValueError(
                f"fixtures name volume(s) the role does not have: {', '.join(unknown)}"
            )
        return self

    @property
    def mounts(self) -> dict[str, str]:
        """Each volume's mount path in the image, by volume name."""
        return {
            name: entry if isinstance(entry, str) else entry.path
            for name, entry in self.volumes.items()
        }

    @property
    def single_writer(self) -> tuple[str, ...]:
        """The volumes only one running instance may mount at a time, sorted."""
        return tuple(
            sorted(
                name
                for name, entry in self.volumes.items()
                if isinstance(entry, str) or not entry.shareable
            )
        )

    @property
    def backups(self) -> dict[str, VolumeBackup]:
        """The volumes that are backed up, and how, by volume name."""
        return {
            name: entry.backup
            for name, entry in self.volumes.items()
            if isinstance(entry, Volume) and entry.backup is not None
        }


class EdgeSettings(Model):
    """Where the edge publishes the public roles' ports on the host."""

    address: Annotated[str, AfterValidator(kinds.edge_address)] = "127.0.0.1"


MAX_BACKUP_AGE_S = 366 * 86400.0
# How old a verified backup may be and still count as recent (seconds, up to a year).
BackupAge = Annotated[
    StrictFloat, BeforeValidator(_parse_duration), Field(ge=0, le=MAX_BACKUP_AGE_S)
]


class BackupPolicy(Model):
    """Where the fleet's backups go, when a deploy makes one, and what the data guard asks
    of them (see docs/backups.md and docs/spec.md).

    ``repository``: a folder on the host (served append-only by corral's own ``rclone
    serve restic --append-only``) or a restic URL (``rest:``, ``sftp:``, ``s3:``...); the
    default is ``backups/`` beside the fleet's state. ``max_age``: one age for every use
    of "a recent verified backup" (the newest snapshot of a volume whose restore drill
    passed, younger than this): a deploy that replaces instances of a role with backed-up
    volumes skips its own backup of those that have one; ``corral volumes`` warns about
    (and exits 1 for) a volume without one; ``corral destroy --delete-data`` refuses to
    delete a volume without one. 0: none is ever recent (always back up first; deleting
    data then needs ``--no-backup-check``).
    """

    repository: Annotated[str, AfterValidator(kinds.state_path)] | None = None
    before_deploy: StrictBool = True
    max_age: BackupAge = 86400.0


class Fleet(Model):
    version: Literal[1] = SCHEMA_VERSION
    fleet: Name
    state: Annotated[str, AfterValidator(kinds.state_path)] | None = None
    edge: EdgeSettings = EdgeSettings()
    backup: BackupPolicy = BackupPolicy()
    roles: dict[Name, Role] = Field(min_length=1, max_length=MAX_ROLES)
    # Secrets whose live values test environments use, instead of a value made per run.
    live_secrets_in_tests: tuple[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], ...] = ()

    @model_validator(mode="after")
    def _secrets_known(self) -> Fleet:
        """Secrets named for tests must be secrets of the fleet: a test value is made (or
        a live one read) only for a name some role's ``run.secrets`` has."""
        known = {name for role in self.roles.values() for name in role.run.secrets}
        wanted = [(f"role {n!r}: test_secrets", r.test_secrets) for n, r in self.roles.items()]
        wanted.append(("live_secrets_in_tests", self.live_secrets_in_tests))
        problems = [
            f"{where} names what no role's run.secrets has: {', '.join(unknown)}"
            for where, names in wanted
            if (unknown := sorted(set(names) - known))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _references(self) -> Fleet:
        for name in self.roles:
            _check_role_name(name, self.fleet)
        for name, role in self.roles.items():
            unknown = [dep for dep in role.after if dep not in self.roles]
            if unknown:
                raise SpecProblem(
                    f"role {name!r} is after unknown role(s): {', '.join(unknown)}",
                    ("roles", name, "after"),
                )
        claimed: dict[int, str] = {}
        for name, role in self.roles.items():
            if role.public is None:
                continue
            if role.public in claimed:
                raise SpecProblem(
                    f"roles {claimed[role.public]!r} and {name!r} both claim public port "
                    f"{role.public}",
                    ("roles", name, "public"),
                )
            claimed[role.public] = name
        _check_volume_names(self.roles)
        _check_acyclic(self.roles)
        return self


def _check_role_name(name: str, fleet: str) -> None:
    """Refuse role names that are corral's, or that an engine name could be taken for.

    A role's name is its DNS alias on the fleet's network, where every container name
    (``<fleet>-<role>-r<release>-<n>``, ``<fleet>-edge``, and the test environments'
    ``<fleet>-<env>-...``) resolves too: a role named ``<fleet>-...`` could shadow one.
    """
    if name.startswith("corral-"):
        raise SpecProblem(
            f"role names starting with 'corral-' are corral's own: {name}", ("roles", name, "[key]")
        )
    if name.startswith(f"{fleet}-"):
        raise SpecProblem(
            f"role {name!r} starts with '{fleet}-', as the fleet's container names do (they "
            "share a network with the role names); rename it",
            ("roles", name, "[key]"),
        )


def _check_volume_names(roles: dict[str, Role]) -> None:
    """Refuse two (role, volume) pairs that make one engine volume ``<fleet>-<role>-<volume>``."""
    owners: dict[str, tuple[str, str]] = {}
    for name, role in roles.items():
        for volume in role.volumes:
            joined = f"{name}-{volume}"
            if joined in owners:
                other_role, other_volume = owners[joined]
                raise SpecProblem(
                    f"role {name!r} volume {volume!r} and role {other_role!r} volume "
                    f"{other_volume!r} would both be the engine volume '<fleet>-{joined}'; "
                    "rename one of them",
                    ("roles", name, "volumes", volume, "[key]"),
                )
            owners[joined] = (name, volume)


def _check_acyclic(roles: dict[str, Role]) -> None:
    """Raise ValueError when the ``after`` edges form a cycle."""
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            message = "roles depend on each other in a cycle: " + " -> ".join(trail)
            raise SpecProblem(message, ("roles", trail[0], "after"))
        visiting.add(name)
        for dep in roles[name].after:
            visit(dep, (*trail, dep))
        visiting.discard(name)
        done.add(name)

    for name in roles:
        visit(name, (name,))
