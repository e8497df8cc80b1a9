"""The revocation check of a deploy or rollback: no new instance of an unfit image.

``corral revoke`` marks an image, or a base, unfit. A deploy (and a rollback, which is a
deploy of a recorded release) refuses, before anything changes, every role it is asked
to deploy and every role its plan would start an instance of whose image is revoked or
was built on a revoked base. The check is pure: the state's standing revocations are read
once (:func:`unfit_images`) and the plan decides nothing else. The undo after a failed
deploy is not checked: it returns the fleet to what was running before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from corral.deploy.desired import Desired
from corral.deploy.plan import Plan
from corral.errors import RevokedError
from corral.state import RevocationRecord, State


def unfit_images(state: State, fleet: str) -> dict[str, RevocationRecord]:
    """Per engine id of every unfit image of the fleet, the revocation that makes it so:
    its own, or its base's."""
    standing = state.stores.revocations.standing(fleet)
    unfit = {
        image.image_id: standing.bases[image.base_id]
        for image in state.stores.ancestry.descendants(fleet, list(standing.bases))
        if image.base_id is not None
    }
    return {**unfit, **standing.images}


def check_not_revoked(
    desired: Desired,
    plan: Plan,
    asked: Collection[str],
    unfit: Mapping[str, RevocationRecord],
) -> None:
    """Refuse when a role of ``asked`` (empty: every desired role) or a role the plan
    starts an instance of runs an unfit image.

    Raises:
        RevokedError: naming each such role, its image and why it was revoked.
    """
    roles = set(asked or desired) | {rp.role for rp in plan.roles if rp.start or rp.restart}
    refused = [
        {"role": name, "image": rr.image_tag, **unfit[rr.image_id].to_dict()}
        for name, rr in sorted(desired.items())
        if name in roles and rr.image_id in unfit
    ]
    if refused:
        raise RevokedError(_message(refused), roles=[r["role"] for r in refused], revoked=refused)


def _message(refused: list[dict[str, str]]) -> str:
    parts = [
        f"role {r['role']}: image {r['image']} "
        + ("is revoked" if r["kind"] == "image" else "is built on a revoked base")
        + f" ({r['reason']}; by {r['user']} at {r['at']})"
        for r in refused
    ]
    return (
        "; ".join(parts) + ": a revoked image is never started again (a deploy bakes a "
        "revoked image's role anew; an image on a revoked base needs a new base: corral patch)"
    )
