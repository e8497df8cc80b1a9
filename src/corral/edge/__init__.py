"""The edge: the HAProxy in front of a fleet, everything about it in one package.

``container`` is the edge of one fleet: its pod, its container, its configuration folder,
reloads and take-overs, and the servers of its backends (``Edge``). ``config`` renders a
haproxy.cfg whose backends start empty; ``runtime`` adds, drains and removes servers
through HAProxy's admin socket while it runs, so a deploy never reloads it; ``watch``
reads its counters over a stretch of time; ``channel`` is the admin socket's connection.
"""

from corral.edge.config import Frontend, render_haproxy_cfg
from corral.edge.runtime import RuntimeAPI, ServerState

__all__ = ["Frontend", "RuntimeAPI", "ServerState", "render_haproxy_cfg"]
