"""A fixed MAC address for a Linux bridge that containers reach their gateway through.

The kernel gives a bridge the lowest MAC address of the interfaces attached to it unless
one was set, so the bridge's address changes whenever a container's veth with a lower one
joins or leaves. Every container on the bridge still holds the old address for the
gateway in its ARP cache, and its packets to the gateway (aardvark-dns answers there) are
lost until that entry is found stale and asked again: role-name lookups stalled 2-17 s
during container churn here, with netavark 1.4. Netavark fixed it in 1.9 by giving the
bridge a fixed address (containers/netavark#833); corral does the same for the older ones:
a locally administered address made from the gateway's IPv4 address (as Kubernetes'
bridge plug-in does), set once, announced by a gratuitous ARP (``arp_notify``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

NET_ADDR_SET = "3"  # /sys/class/net/IF/addr_assign_type: the address was set, the kernel keeps it
INTERFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")  # a Linux interface name (IFNAMSIZ - 1)


def bridge_mac(gateway: str) -> str:
    """``0a:58:`` and the four bytes of ``gateway``: unicast, locally administered, and the
    same every time the network's bridge is made again."""
    packed = ipaddress.IPv4Address(gateway).packed
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *packed))


def pin_mac(interface: str, gateway: str, root: Path = Path("/")) -> bool:
    """Give the bridge ``interface`` its fixed address unless it has one set already.

    Returns True when the address was set now. Does nothing (False) when the interface is
    not a bridge on this host (not made yet, or in a rootless network namespace), or when
    ``gateway`` is no IPv4 address. A failure to set it is logged, not raised: the fleet
    works without it, only with the stalls above.
    """
    if not INTERFACE.fullmatch(interface):
        return False
    device = root / "sys/class/net" / interface
    try:
        if not (device / "bridge").is_dir():
            return False
        if (device / "addr_assign_type").read_text().strip() == NET_ADDR_SET:
            return False
        mac = bridge_mac(gateway)
    except (OSError, ValueError):
        return False
    try:
        # Announce the change, so the containers already on it learn the new address now.
        (root / "proc/sys/net/ipv4/conf" / interface / "arp_notify").write_text("1\n")
        subprocess.run(
            ["ip", "link", "set", "dev", interface, "address", mac],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot give bridge %s a fixed MAC address: %s", interface, exc)
        return False
    return True
