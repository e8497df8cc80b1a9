"""corral's state: an embedded SQLite database (usually ``.corral/state.db``).

It records builds and the images they produced, the numbered releases of each fleet
and the instances (containers) they started, an append-only audit log, and offers
crash-safe named locks. See :class:`State`; schema changes go in ``migrations/``.
"""

from corral.state.audit import SCRUBBED, looks_secret, scrub
from corral.state.db import Migration, bundled_migrations
from corral.state.records import (
    AuditEntry,
    BuildRecord,
    ImageRecord,
    InstanceRecord,
    ReleaseRecord,
    image_version,
    utc_now,
)
from corral.state.store import State

__all__ = [
    "SCRUBBED",
    "AuditEntry",
    "BuildRecord",
    "ImageRecord",
    "InstanceRecord",
    "Migration",
    "ReleaseRecord",
    "State",
    "bundled_migrations",
    "image_version",
    "looks_secret",
    "scrub",
    "utc_now",
]
