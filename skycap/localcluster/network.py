"""The real node's private link: a network namespace joined to the host by a veth pair.

Every address lies in 198.18.0.0/15, the range reserved for network testing (RFC 2544), and the
host forwards nothing: it only reaches the node and, by a route through the link, the pods. Each
local cluster on the machine gets its own slot k (0-63), so that several (the tests', the demo's)
can run side by side:

    link      198.18.k.0/30     host side .1, node side .2
    services  198.18.(128+k).0/24
    pods      198.19.k.0/24
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from skycap.errors import SkycapError

SLOTS = 64
NETNS_DIR = Path("/run/netns")
SLOTS_LOCK = Path("/run/skycap/slots.lock")


@contextlib.contextmanager
def slot_claim():
    """Held while a cluster picks a free slot and makes its link, so that two clusters starting
    at once (parallel test workers) never pick the same one."""
    SLOTS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(SLOTS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Link:
    slot: int

    @property
    def netns(self) -> str:
        return f"skycap-node-{self.slot}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_veth(self) -> str:
        return f"skycap{self.slot}h"

    @property
    def node_veth(self) -> str:
        return f"skycap{self.slot}n"

    @property
    def bridge(self) -> str:
        return f"skycap{self.slot}br"

    @property
    def host_address(self) -> str:
        return f"198.18.{self.slot}.1"

    @property
    def node_address(self) -> str:
        return f"198.18.{self.slot}.2"

    @property
    def pod_range(self) -> str:
        return f"198.19.{self.slot}.0/24"

    @property
    def service_range(self) -> str:
        return f"198.18.{128 + self.slot}.0/24"

    @property
    def kubernetes_service_address(self) -> str:
        """The first address of the service range: the `kubernetes` Service's ClusterIP."""
        return str(ipaddress.ip_network(self.service_range)[1])

    @property
    def dns_service_address(self) -> str:
        return str(ipaddress.ip_network(self.service_range)[10])

    def in_node(self, argv: list[str]) -> list[str]:
        """argv run inside the node's network namespace. nsenter, not `ip netns exec`: the latter
        remounts /sys, which hides the cgroup mounts kubelet needs."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SkycapError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}",
                          "the local cluster's node needs root and the iproute2 package")
    return done


def addresses_in_use() -> set[str]:
    out = _ip("-o", "-4", "addr", "show").stdout
    return {word.split("/")[0] for line in out.splitlines() for word in line.split() if "/" in word}


def free_slot(preferred: int = 0) -> int:
    """The first slot whose link address no interface holds, starting from the preferred one."""
    used = addresses_in_use()
    existing = {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.exists() else set()
    for offset in range(SLOTS):
        slot = (preferred + offset) % SLOTS
        link = Link(slot)
        if link.host_address not in used and link.netns not in existing:
            return slot
    raise SkycapError("all 64 local cluster slots in 198.18.0.0/15 are taken on this machine",
                      "stop another local cluster: skycap local-cluster down")


def owner_file(link: Link) -> Path:
    return SLOTS_LOCK.parent / f"slot-{link.slot}.owner"


def owned_by(link: Link, cluster_dir: str) -> bool:
    """The link exists and the cluster in cluster_dir made it: a stopped cluster's slot may have been
    taken by another since, whose link must not be shared (two kubelets on one address)."""
    try:
        owner = owner_file(link).read_text()
    except OSError:
        return False
    return owner == cluster_dir and exists(link)


def exists(link: Link) -> bool:
    return link.netns_path.exists() and _ip("link", "show", link.host_veth, check=False).returncode == 0


def create(link: Link, cluster_dir: str) -> None:
    """Make the namespace, the veth pair and the routes for the cluster in cluster_dir; idempotent,
    repairs a half-made link."""
    if owned_by(link, cluster_dir):
        return
    remove(link)
    owner_file(link).write_text(cluster_dir)
    _ip("netns", "add", link.netns)
    _ip("link", "add", link.host_veth, "type", "veth", "peer", "name", link.node_veth, "netns", link.netns)
    _ip("addr", "add", f"{link.host_address}/30", "dev", link.host_veth)
    _ip("link", "set", link.host_veth, "up")
    node = ["-n", link.netns]
    _ip(*node, "link", "set", "lo", "up")
    _ip(*node, "addr", "add", f"{link.node_address}/30", "dev", link.node_veth)
    _ip(*node, "link", "set", link.node_veth, "up")
    # The host reaches pods by their own addresses, as a load balancer with pod routes would.
    _ip("route", "replace", link.pod_range, "via", link.node_address)
    # Forwarding inside the node's namespace only: from the host's link to the pods' bridge. The
    # node has no default route and the host's own forwarding is untouched, so nothing leaves.
    forwarding = link.in_node(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    subprocess.run(forwarding, check=True, capture_output=True)


def remove(link: Link) -> None:
    """Delete the namespace (its end of the veth, the bridge and kube-proxy's rules go with it)."""
    _ip("route", "del", link.pod_range, check=False)
    _ip("link", "del", link.host_veth, check=False)
    if link.netns_path.exists():
        _ip("netns", "del", link.netns, check=False)
    if link.netns_path.exists():  # still mounted somewhere: lazily
        subprocess.run(["umount", "-l", str(link.netns_path)], capture_output=True)
        try:
            os.unlink(link.netns_path)
        except OSError:
            pass
    owner_file(link).unlink(missing_ok=True)
