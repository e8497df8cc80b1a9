"""The edge: the HAProxy in front of a fleet, and the runtime API that swaps its servers.

``config`` renders a haproxy.cfg whose backends start empty; ``runtime`` adds, drains and
removes servers through HAProxy's admin socket while it runs, so a deploy never reloads it.
"""

from corral.edge.config import Frontend, render_haproxy_cfg
from corral.edge.runtime import RuntimeAPI, ServerState

__all__ = ["Frontend", "RuntimeAPI", "ServerState", "render_haproxy_cfg"]
