"""Clean-up of what killed deploys left: ``corral gc``, and the start of every deploy.

Only the holder of the fleet's deploy lock calls these. Read-only commands (``status``,
``plan``, ``history``) report leftovers and never remove them. Clean-up never removes a
volume (data) or anything outside the live scope's containers and stored secrets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral.deploy.context import Context
from corral.deploy.fleet import observe_fleet
from corral.deploy.instances import remove_probes
from corral.deploy.observe import Instance
from corral.errors import CorralError
from corral.state import ReleaseRecord


@dataclass(frozen=True)
class Collected:
    """What ``corral gc`` removed or marked, and what it could not remove yet.

    ``releases`` are the numbers of releases a killed deploy left ``deploying``, now
    marked aborted; ``instances`` the stopped containers of releases that never went live;
    ``secrets`` stored secret values whose container never came to be; ``probes`` health
    probe containers a killed check left; ``test_environments`` those of dead ``corral
    test`` runs; ``failed`` says, in words, what could not be removed (retried next time).
    """

    releases: tuple[int, ...] = ()
    instances: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    test_environments: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    @property
    def removed(self) -> int:
        """How many objects were removed (releases are marked, not removed)."""
        parts = (self.instances, self.secrets, self.probes, self.test_environments)
        return sum(len(part) for part in parts)


def sweep_killed(ctx: Context) -> list[ReleaseRecord]:
    """Abort the releases of killed deploys, and forget the secrets their instance starts
    stored for containers that never came to be. Only under the deploy lock."""
    swept = ctx.state.sweep_stale_releases(ctx.scope.fleet)
    for role in sorted({role for release in swept for role in release.roles}):
        ctx.engine.collect_leftovers(ctx.scope.role_prefix(role))
    return swept


def leftovers(instances: Iterable[Instance], good: Iterable[int]) -> list[Instance]:
    """The stopped instances of releases that never went live: a killed or failed deploy
    left them, no stand-by is among them, and nothing can serve from them."""
    good = set(good)
    return [i for i in instances if not i.running and i.release not in good]


def collect(ctx: Context, test_environments: Sequence[str] = ()) -> Collected:
    """Remove what killed deploys left in the live fleet; the caller holds the deploy lock.

    Running instances of unfinished releases may be serving: only a deploy replaces them,
    safely. Volumes are never touched. The outcome is audited (``gc``), with
    ``test_environments`` (those the caller swept of dead ``corral test`` runs).
    """
    swept = ctx.state.sweep_stale_releases(ctx.scope.fleet)
    observed = observe_fleet(ctx, {}, None)
    removed, failed = _remove(ctx, leftovers(observed.instances, observed.good_releases))
    probes = _remove_probes(ctx, failed)
    roles = set(ctx.spec.fleet.roles) | {r for release in swept for r in release.roles}
    roles |= {i.role for i in observed.instances}
    secrets = [s for role in sorted(roles) for s in _forget(ctx, role, failed)]
    collected = Collected(
        releases=tuple(r.number for r in swept),
        instances=tuple(removed),
        secrets=tuple(secrets),
        probes=tuple(probes),
        test_environments=tuple(test_environments),
        failed=tuple(failed),
    )
    outcome = "failed" if failed else "ok"
    details = {k: list(v) for k, v in dataclasses.asdict(collected).items() if v}
    ctx.state.record_audit(ctx.scope.fleet, "gc", "fleet", outcome, details)
    return collected


def _remove(ctx: Context, found: Iterable[Instance]) -> tuple[list[str], list[str]]:
    removed, failed = [], []
    for instance in found:
        try:
            ctx.engine.remove(instance.name)
        except CorralError as exc:
            failed.append(f"{instance.name}: {exc.message}")
            continue
        ctx.state.retire_instance(ctx.scope.fleet, instance.name, "cleaned-up")
        removed.append(instance.name)
    return removed, failed


def _remove_probes(ctx: Context, failed: list[str]) -> list[str]:
    """Probe containers: only the lock's holder runs probes, so any found now is left over."""
    try:
        return remove_probes(ctx.engine, ctx.scope)
    except CorralError as exc:
        failed.append(f"probe containers: {exc.message}")
        return []


def _forget(ctx: Context, role: str, failed: list[str]) -> list[str]:
    try:
        return ctx.engine.collect_leftovers(ctx.scope.role_prefix(role))
    except CorralError as exc:
        failed.append(f"stored secrets of {role}: {exc.message}")
        return []
