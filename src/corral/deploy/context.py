"""What every stage of a deploy, a plan or a read shares: the spec, the engine, the state."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.deploy.scope import Scope
from corral.deploy.secrets import KeyFile
from corral.edge.container import Edge
from corral.engines.base import Engine
from corral.progress import NullProgress, Progress
from corral.spec.load import LoadedSpec
from corral.state import State

FLEET_EDGE_KEY = "fleet"  # see Edge.runtime_key: one edge per fleet name on a host
GOOD = ("active", "superseded")  # the statuses of releases that once went live


@dataclass
class Context:
    """Everything one deploy needs, passed explicitly."""

    spec: LoadedSpec
    engine: Engine
    state: State
    progress: Progress = field(default_factory=NullProgress)
    scope: Scope = field(init=False)
    edge: Edge = field(init=False)
    secret_key: KeyFile = field(init=False, repr=False)  # read only if a secret is hashed

    def __post_init__(self) -> None:
        fleet = self.spec.fleet.fleet
        self.own(self.state.fleet_id(fleet))
        self.secret_key = KeyFile(self.spec.state_location.files, fleet)

    def own(self, fleet_id: str | None) -> None:
        """Create engine objects marked with ``fleet_id`` (the state's id of the fleet)
        from now on; see :mod:`corral.deploy.ownership`."""
        where = self.spec.state_location.display
        self.scope = Scope(self.spec.fleet.fleet, fleet_id=fleet_id, state=where)
        # The edge's runtime folder is the fleet's, whatever checkout or state names it:
        # every corral on the host must reach the one edge's socket.
        self.edge = Edge(self.engine, self.scope, FLEET_EDGE_KEY, self.spec.fleet.edge.address)
