"""Drift of how an instance runs: the engine's facts of a running instance (image,
command, environment, mounts, capabilities, user, ports) against what its release asks,
which is the ``ContainerSpec`` a deploy starts it with (``container_spec``).

``drifted_fields`` is pure; ``inspect_drift`` reads each current instance once (one
inspect each: the watcher does it on its diff interval, not every pass). A drifted
instance is a taint for the planner, with the changed fields as evidence: names, never
values (an environment value may be anything).
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.deploy.context import Context
from corral.deploy.desired import Desired
from corral.deploy.instances import container_spec
from corral.deploy.observe import Instance, observe
from corral.engines.capabilities import Capability, supports
from corral.engines.values import ContainerSpec, Mount, PortMapping, RunFacts

# What the engine itself adds to every container's environment.
ENGINE_ENV = frozenset({"PATH", "TERM", "container", "HOME", "HOSTNAME"})


def drifted_fields(expected: ContainerSpec, facts: RunFacts) -> tuple[str, ...]:
    """Each field in which ``facts`` differ from ``expected``, in words; () when none."""
    found = [
        _image(expected.image, facts.image_id),
        _command(expected.command, facts.command),
        _env(expected, facts),
        _mounts(expected.mounts, facts.mounts),
        _capabilities(expected.cap_add, facts.capabilities),
        _user(expected.user, facts.user),
        _ports(expected.ports, facts.ports),
    ]
    return tuple(f for f in found if f)


def _bare(image: str) -> str:
    return image.removeprefix("sha256:")


def _image(expected: str, actual: str) -> str:
    want, have = _bare(expected), _bare(actual)
    if want.startswith(have) or have.startswith(want):  # short and long ids alike
        return ""
    return f"image {have[:12]} instead of {want[:12]}"


def _command(expected: tuple[str, ...], actual: tuple[str, ...]) -> str:
    # A role with secrets runs the launcher first (``Config.Cmd`` ends with the command).
    if not expected or actual[-len(expected) :] == expected:
        return ""
    return "command"


def _env(expected: ContainerSpec, facts: RunFacts) -> str:
    mine = {k: v for k, v in facts.env.items() if k not in ENGINE_ENV | facts.image_env}
    changed = sorted(k for k, v in expected.env.items() if k in mine and mine[k] != v)
    missing = sorted(k for k in expected.env if k not in facts.env)
    added = sorted(k for k in mine if k not in expected.env)
    words = [f"{what} {', '.join(names)}" for what, names in _named(changed, missing, added)]
    return f"environment: {'; '.join(words)}" if words else ""


def _named(
    changed: list[str], missing: list[str], added: list[str]
) -> Iterable[tuple[str, list[str]]]:
    return [(w, n) for w, n in (("changed", changed), ("missing", missing), ("added", added)) if n]


def _mounts(expected: tuple[Mount, ...], actual: tuple[Mount, ...]) -> str:
    want, have = set(expected), set(actual)
    if want == have:
        return ""
    words = [f"+{m.target}" for m in sorted(have - want, key=lambda m: m.target)]
    words += [f"-{m.target}" for m in sorted(want - have, key=lambda m: m.target)]
    return f"mounts: {' '.join(words)}"


def _capabilities(expected: tuple[str, ...], actual: frozenset[str]) -> str:
    want = {c.removeprefix("CAP_") for c in expected}
    if want == set(actual):
        return ""
    words = [f"+{c}" for c in sorted(actual - want)] + [f"-{c}" for c in sorted(want - actual)]
    return f"capabilities: {' '.join(words)}"


def _user(expected: str | None, actual: str) -> str:
    if expected is None or expected == actual:
        return ""
    return f"user {actual or '(image default)'} instead of {expected}"


def _ports(expected: tuple[PortMapping, ...], actual: tuple[PortMapping, ...]) -> str:
    def key(p: PortMapping) -> tuple[int, int]:
        return (p.host_port, p.container_port)

    if {key(p) for p in expected} == {key(p) for p in actual}:
        return ""
    return "ports: " + (" ".join(f"{p.host_port}->{p.container_port}" for p in actual) or "none")


def expected_spec(ctx: Context, desired: Desired, instance: Instance) -> ContainerSpec | None:
    """What ``instance`` runs if it is the current instance it claims to be (the active
    release's image and configuration); None for any other (the planner replaces it)."""
    rr = desired.get(instance.role)
    if rr is None or instance.image_id != rr.image_id or instance.config_hash != rr.config_hash:
        return None
    unset = {name: "" for name in rr.run.secrets}  # values go to files, never compared
    return container_spec(ctx.scope, rr, instance.release, instance.index, unset)


def inspect_drift(ctx: Context, desired: Desired) -> dict[str, str]:
    """The running current instances whose run facts left ``desired``'s: name -> evidence."""
    if not supports(ctx.engine, Capability.RUN_FACTS):
        return {}
    drifted: dict[str, str] = {}
    for instance in observe(ctx.engine, ctx.scope):
        expected = expected_spec(ctx, desired, instance) if instance.running else None
        facts = ctx.engine.run_facts(instance.name) if expected else None
        if expected is None or facts is None:
            continue
        fields = drifted_fields(expected, facts)
        if fields:
            drifted[instance.name] = f"drifted from its release: {'; '.join(fields)}"
    return drifted
