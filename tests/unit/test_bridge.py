"""The fixed MAC address corral gives a podman bridge (corral.engines.bridge)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.engines import bridge


def _device(root: Path, name: str, assign: str, is_bridge: bool = True) -> Path:
    device = root / "sys/class/net" / name
    (device / "bridge" if is_bridge else device).mkdir(parents=True)
    (device / "addr_assign_type").write_text(assign + "\n")
    (root / "proc/sys/net/ipv4/conf" / name).mkdir(parents=True)
    (root / "proc/sys/net/ipv4/conf" / name / "arp_notify").write_text("0\n")
    return device


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    monkeypatch.setattr(bridge.subprocess, "run", run)
    return seen


def test_mac_is_locally_administered_unicast_and_made_from_the_gateway() -> None:
    mac = bridge.bridge_mac("10.89.1.1")
    assert mac == "0a:58:0a:59:01:01"
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast


def test_a_bridge_whose_address_the_kernel_picks_gets_the_fixed_one_announced(
    tmp_path: Path, calls: list[list[str]]
) -> None:
    _device(tmp_path, "podman3", "0")
    assert bridge.pin_mac("podman3", "10.89.3.1", root=tmp_path)
    assert calls == [["ip", "link", "set", "dev", "podman3", "address", "0a:58:0a:59:03:01"]]
    notify = tmp_path / "proc/sys/net/ipv4/conf/podman3/arp_notify"
    assert notify.read_text() == "1\n"


@pytest.mark.parametrize(
    ("name", "assign", "is_bridge", "gateway"),
    [
        ("podman3", bridge.NET_ADDR_SET, True, "10.89.3.1"),  # set already: left alone
        ("eth0", "0", False, "10.89.3.1"),  # not a bridge
        ("podman3", "0", True, "fd00::1"),  # no IPv4 gateway
    ],
)
def test_nothing_is_changed_when_there_is_nothing_to_pin(
    tmp_path: Path, calls: list[list[str]], name: str, assign: str, is_bridge: bool, gateway: str
) -> None:
    _device(tmp_path, name, assign, is_bridge)
    assert not bridge.pin_mac(name, gateway, root=tmp_path)
    assert calls == []


@pytest.mark.parametrize("name", ["missing0", "../../etc", "a" * 16, "-x"])
def test_an_interface_that_is_not_here_or_not_a_name_is_not_touched(
    tmp_path: Path, calls: list[list[str]], name: str
) -> None:
    assert not bridge.pin_mac(name, "10.89.3.1", root=tmp_path)
    assert calls == []
