"""corral's state: an embedded SQLite database (usually ``.corral/state.db``).

It records builds and the images they produced (with the base each was built on and
its package list), revocations of images and bases, the numbered releases of each fleet
and the instances (containers) they started, the append-only results of ``corral test``
(bound to image digests), an append-only audit log, and named locks held as leases
the holder renews (:mod:`corral.state.lock`). See :class:`State`, a composition of the
narrow protocols of :mod:`corral.state.protocols`; schema changes go in ``migrations/``.
"""

from corral.state.audit import SCRUBBED, looks_secret, scrub
from corral.state.db import Migration, bundled_migrations
from corral.state.protocols import (
    AncestryStore,
    AuditStore,
    BuildStore,
    FleetStore,
    HeldLock,
    ImageStore,
    InstanceStore,
    LockStore,
    ReleaseStore,
    ReplacementStore,
    RevocationStore,
    TestRunStore,
    VolumeStore,
)
from corral.state.records import (
    AuditEntry,
    BaseRecord,
    BuildRecord,
    ImageRecord,
    InstanceRecord,
    ReleaseRecord,
    RevocationRecord,
    Revoked,
    TestRunRecord,
    VolumeRecord,
    image_version,
    utc_now,
)
from corral.state.store import State, Stores
from corral.state.testruns import scrub_text

__all__ = [
    "SCRUBBED",
    "AncestryStore",
    "AuditEntry",
    "AuditStore",
    "BaseRecord",
    "BuildRecord",
    "BuildStore",
    "FleetStore",
    "HeldLock",
    "ImageRecord",
    "ImageStore",
    "InstanceRecord",
    "InstanceStore",
    "LockStore",
    "Migration",
    "ReleaseRecord",
    "ReleaseStore",
    "ReplacementStore",
    "RevocationRecord",
    "RevocationStore",
    "Revoked",
    "State",
    "Stores",
    "TestRunRecord",
    "TestRunStore",
    "VolumeRecord",
    "VolumeStore",
    "bundled_migrations",
    "image_version",
    "looks_secret",
    "scrub",
    "scrub_text",
    "utc_now",
]
