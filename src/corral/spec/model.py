"""The fleet spec as typed, frozen values (schema version 1).

Every field is documented in docs/spec.md; keep the two in step. Models forbid unknown
keys so a typo is an error, never a silently ignored setting.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,29}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


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
AbsPath = Annotated[str, Field(pattern=r"^/", min_length=1, max_length=4096)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DebianBase(Model):
    """A root filesystem made locally with mmdebstrap."""

    debian: Literal["bookworm", "trixie", "bullseye"]
    packages: tuple[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")], ...] = ()
    variant: Literal["apt", "minbase", "essential"] = "apt"


class ImageBase(Model):
    """An image already present in the engine's local storage."""

    image: Annotated[str, Field(min_length=1, max_length=255)]


class ContainerfileBase(Model):
    """An image built from a Containerfile kept beside the spec."""

    containerfile: Annotated[str, Field(min_length=1)]


BASE_KINDS = ("debian", "image", "containerfile")
HEALTH_KINDS = ("http", "tcp")


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
    src: Annotated[str, Field(min_length=1)]
    dest: AbsPath


class BuildSteps(Model):
    copy_: tuple[CopyStep, ...] = Field(default=(), alias="copy")
    run: tuple[Annotated[str, Field(min_length=1)], ...] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RunConfig(Model):
    command: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "app"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    env: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str] = Field(default_factory=dict)
    secrets: tuple[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], ...] = ()
    workdir: AbsPath | None = None

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str) -> str:
        if value == "root":
            raise ValueError("instances never run as root; name an unprivileged user")
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


class HttpHealth(Model):
    http: Annotated[str, Field(pattern=r"^/")]
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


Health = Annotated[
    Annotated[HttpHealth, Tag("http")] | Annotated[TcpHealth, Tag("tcp")],
    Discriminator(
        _kind_of(HEALTH_KINDS),
        custom_error_type="health_kind",
        custom_error_message="expected one of: http, tcp",
    ),
]


class DeployPolicy(Model):
    strategy: Literal["rolling", "blue-green"] = "rolling"
    max_surge: Annotated[StrictInt, Field(ge=0, le=100)] = 1
    max_unavailable: Annotated[StrictInt, Field(ge=0, le=100)] = 0
    keep_old: Duration = 300.0
    drain: Duration = 5.0

    @model_validator(mode="after")
    def _can_progress(self) -> DeployPolicy:
        if self.strategy == "rolling" and self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: nothing could move")
        return self


class Lockdown(Model):
    capabilities: tuple[Annotated[str, Field(pattern=r"^[A-Z_]+$")], ...] = ()
    allow_ssh: StrictBool = False


class Resources(Model):
    memory: Annotated[str, Field(pattern=r"^\d+[kmg]?$")] = "512m"
    cpus: Annotated[StrictFloat, Field(gt=0, le=64)] = 1.0
    pids: Annotated[StrictInt, Field(ge=16, le=100000)] = 256


class Role(Model):
    base: Base
    build: BuildSteps = BuildSteps()
    run: RunConfig
    health: Health | None = None
    replicas: Annotated[StrictInt, Field(ge=0, le=100)] = 1
    volumes: dict[Name, AbsPath] = Field(default_factory=dict)
    tests: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    # Test environments seed these volumes from folders in the repo (volume -> folder).
    fixtures: dict[Name, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    deploy: DeployPolicy = DeployPolicy()
    after: tuple[Name, ...] = ()
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
        mounts = [PurePosixPath(p) for p in self.volumes.values()]
        if len(set(mounts)) != len(mounts):
            raise ValueError("two volumes are mounted at the same path")
        unknown = sorted(set(self.fixtures) - set(self.volumes))
        if unknown:
            raise ValueError(
                f"fixtures name volume(s) the role does not have: {', '.join(unknown)}"
            )
        return self


class EdgeSettings(Model):
    """Where the edge publishes the public roles' ports on the host."""

    address: Annotated[str, Field(pattern=r"^[0-9.]+$|^[0-9a-fA-F:]+$")] = "127.0.0.1"


class Fleet(Model):
    version: Literal[1] = SCHEMA_VERSION
    fleet: Name
    state: str | None = None
    edge: EdgeSettings = EdgeSettings()
    roles: dict[Name, Role] = Field(min_length=1)
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
        reserved = [name for name in self.roles if name.startswith("corral-")]
        if reserved:
            raise ValueError(
                f"role names starting with 'corral-' are corral's own: {', '.join(reserved)}"
            )
        for name, role in self.roles.items():
            unknown = [dep for dep in role.after if dep not in self.roles]
            if unknown:
                raise ValueError(f"role {name!r} is after unknown role(s): {', '.join(unknown)}")
        ports = [r.public for r in self.roles.values() if r.public is not None]
        if len(set(ports)) != len(ports):
            raise ValueError("two roles claim the same public port")
        _check_acyclic(self.roles)
        return self


def _check_acyclic(roles: dict[str, Role]) -> None:
    """Raise ValueError when the ``after`` edges form a cycle."""
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            raise ValueError("roles depend on each other in a cycle: " + " -> ".join(trail))
        visiting.add(name)
        for dep in roles[name].after:
            visit(dep, (*trail, dep))
        visiting.discard(name)
        done.add(name)

    for name in roles:
        visit(name, (name,))
