"""How the Podman engine sets an instance's resolver (the engine test proves the real
thing under container churn: tests/engine/test_dns.py)."""

from __future__ import annotations

from typing import Any

from corral.engines.base import ContainerSpec
from corral.engines.podman import NetworkFacts, PodmanEngine, dns_args, network_facts, run_args


def _spec(network: str | None) -> ContainerSpec:
    return ContainerSpec(
        name="f-web-r1-1",
        image="img",
        command=("serve",),
        network=network,
        network_aliases=("web",),
    )


def test_an_instance_asks_only_the_networks_dns_server_with_short_timeouts() -> None:
    args = run_args(_spec("f"), dns=["10.89.3.1"])
    assert [a for a in args if a.startswith("--dns")] == [
        "--dns=10.89.3.1",
        "--dns=10.89.3.1",
        "--dns=10.89.3.1",  # 3 times: glibc tries each of at most 3 servers 5 times at most
        "--dns-option=timeout:2",
        "--dns-option=attempts:5",
    ]
    assert args.index("--dns=10.89.3.1") < args.index("img")  # an option, not an argument


def test_no_dns_server_or_no_network_leaves_podmans_resolver_alone() -> None:
    assert dns_args([]) == []
    assert not [a for a in run_args(_spec("f")) if a.startswith("--dns")]
    assert not [a for a in run_args(_spec(None), dns=["10.89.3.1"]) if a.startswith("--dns")]


class _Inspecting(PodmanEngine):
    """An engine whose ``network inspect`` answers from a table (no podman needed)."""

    def __init__(self, networks: dict[str, dict[str, Any]]) -> None:
        self.networks = networks
        self.inspections = 0
        self._networks = {}

    def _json(self, *args: str) -> Any:
        assert args[:2] == ("network", "inspect")
        self.inspections += 1
        return [self.networks[args[-1]]]


def test_the_dns_servers_are_the_gateways_of_a_dns_network_read_once() -> None:
    engine = _Inspecting(
        {
            "f": {
                "dns_enabled": True,
                "subnets": [{"subnet": "10.89.3.0/24", "gateway": "10.89.3.1"}],
            },
            "quiet": {"dns_enabled": False, "subnets": [{"gateway": "10.89.4.1"}]},
        }
    )
    assert engine._dns_servers("f") == ("10.89.3.1",)
    assert engine._dns_servers("f") == ("10.89.3.1",)
    assert engine.inspections == 1
    assert engine._dns_servers("quiet") == ()


def test_a_bridge_networks_interface_and_ipv4_gateway_are_read_for_its_fixed_mac() -> None:
    data = {
        "driver": "bridge",
        "network_interface": "podman3",
        "dns_enabled": True,
        "subnets": [{"gateway": "fd00::1"}, {"gateway": "10.89.3.1"}],
    }
    assert network_facts(data) == NetworkFacts(("fd00::1", "10.89.3.1"), "podman3", "10.89.3.1")
    macvlan = {**data, "driver": "macvlan"}
    assert network_facts(macvlan).interface == ""  # not a bridge corral may change
