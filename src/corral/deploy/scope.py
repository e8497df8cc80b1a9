"""Where a fleet runs: the live environment or a throwaway test environment.

Every engine object corral makes for a fleet carries the scope's labels, and its name
starts with the scope's prefix, so a test environment can never touch live objects. A
live object also carries the fleet's id and the state that made it (:meth:`Scope.marks`):
see :mod:`corral.deploy.ownership`. Objects are *selected* by :meth:`Scope.labels` only,
so those an earlier corral made without an id are still found.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.formats import LABEL_PREFIX

LABEL = LABEL_PREFIX  # corral.formats has the one prefix; modules import LABEL here
LIVE = "live"
FLEET_ID = LABEL + "fleet-id"  # the fleet's id, from the state that owns the fleet
STATE = LABEL + "state"  # that state, as messages name it (never a password)


@dataclass(frozen=True)
class Scope:
    fleet: str
    env: str = LIVE  # "live", or the id of a test environment
    fleet_id: str | None = None  # the owning state's id of the fleet, once it has one
    state: str | None = None  # the owning state, as messages name it

    @property
    def prefix(self) -> str:
        return self.fleet if self.env == LIVE else f"{self.fleet}-{self.env}"

    @property
    def network(self) -> str:
        return f"corral-{self.prefix}"

    @property
    def edge_name(self) -> str:
        return f"{self.prefix}-edge"

    def labels(self, kind: str) -> dict[str, str]:
        return {**self.selector(), LABEL + "kind": kind}

    def marks(self, kind: str) -> dict[str, str]:
        """The labels an object of ``kind`` is created with: :meth:`labels` and, once the
        fleet has an id, the id and the state that owns it."""
        owner = {FLEET_ID: self.fleet_id} if self.fleet_id else {}
        if self.fleet_id and self.state:
            owner[STATE] = self.state
        return {**self.labels(kind), **owner}

    def selector(self) -> dict[str, str]:
        """The labels every object of this scope carries, whatever its kind."""
        return {LABEL + "fleet": self.fleet, LABEL + "env": self.env}

    def instance_name(self, role: str, release: int, index: int) -> str:
        """Cattle names: ``<fleet>-<role>-r<release>-<n>``."""
        return f"{self.role_prefix(role)}{release}-{index}"

    def role_prefix(self, role: str) -> str:
        """What the name of every instance of ``role``, of any release, starts with."""
        return f"{self.prefix}-{role}-r"

    def volume_name(self, role: str, volume: str) -> str:
        return f"{self.prefix}-{role}-{volume}"
