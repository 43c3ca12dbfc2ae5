"""The lab network: a bridge in the root namespace, one veth pair and network namespace per node.

Uses pyroute2 (netlink) only. No default route and no NAT are ever installed: the lab's
addresses are reachable from the controller (the bridge address) and from each other, nothing else.

``attach_to_bridge`` gives a node a second link (``eth1``) on a bridge that is not the lab's, e.g.
libvirt's bridge of the Vagrant tier's nodes network, with an address of that network: the node then
reaches that network's hosts at layer 2, as one of them, with nothing routed (no forwarding, no
firewall change). ``detach_from_bridge`` removes it; ``lab down`` removes it too (its host end is named
like the node's own).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import AddressRangeTaken, LabError
from .topology import LabLayout, NodeLayout

__all__ = [
    "attach_to_bridge",
    "check_range_free",
    "create_bridge",
    "create_node_link",
    "delete_lab_network",
    "detach_from_bridge",
    "link_is_up",
    "list_lab_netns",
    "netns_path",
    "set_link",
    "shape",
    "unshape",
]

log = logging.getLogger("zfs_backend.lab")


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


@contextmanager
def _ipr() -> Iterator[IPRoute]:
    ip = IPRoute()
    try:
        yield ip
    finally:
        ip.close()


def _lookup(ip: IPRoute | NetNS, ifname: str) -> int | None:
    found = ip.link_lookup(ifname=ifname)
    return found[0] if found else None


def check_range_free(layout: LabLayout) -> None:
    """Raise AddressRangeTaken when an interface other than our bridge has an address in the lab network."""
    with _ipr() as ip:
        for msg in ip.get_addr(family=2):
            addr = msg.get_attr("IFA_ADDRESS")
            label = msg.get_attr("IFA_LABEL")
            if addr and ipaddress.IPv4Address(addr) in layout.network and label != layout.bridge:
                raise AddressRangeTaken(
                    f"lab network {layout.network} is already in use on this machine "
                    f"({addr} on {label}); choose another with --network or ZFS_BACKEND_LAB_NETWORK"
                )


def create_bridge(layout: LabLayout) -> None:
    with _ipr() as ip:
        idx = _lookup(ip, layout.bridge)
        if idx is None:
            ip.link("add", ifname=layout.bridge, kind="bridge")
            idx = _lookup(ip, layout.bridge)
            assert idx is not None
        addrs = {m.get_attr("IFA_ADDRESS") for m in ip.get_addr(index=idx, family=2)}
        if layout.controller_address not in addrs:
            ip.addr("add", index=idx, address=layout.controller_address, prefixlen=layout.network.prefixlen)
        ip.link("set", index=idx, state="up")


def create_node_link(layout: LabLayout, node: NodeLayout) -> None:
    """Create the node's network namespace, its veth pair on the bridge, and its address."""
    if node.netns not in netns.listnetns():
        netns.create(node.netns)
    with _ipr() as ip:
        br = _lookup(ip, layout.bridge)
        if br is None:
            raise LabError(f"lab bridge {layout.bridge} is missing")
        if _lookup(ip, node.veth_host) is None:
            ip.link("add", ifname=node.veth_host, kind="veth", peer={"ifname": node.veth_node})
            ip.link("set", index=_lookup(ip, node.veth_node), net_ns_fd=node.netns)
        host_idx = _lookup(ip, node.veth_host)
        ip.link("set", index=host_idx, master=br, state="up")
    with NetNS(node.netns) as ns:
        idx = _lookup(ns, node.veth_node) or _lookup(ns, "eth0")
        if idx is None:
            raise LabError(f"{node.name}: its network interface vanished")
        ns.link("set", index=idx, ifname="eth0")
        addrs = {m.get_attr("IFA_ADDRESS") for m in ns.get_addr(index=idx, family=2)}
        if node.address not in addrs:
            ns.addr("add", index=idx, address=node.address, prefixlen=node.prefixlen)
        ns.link("set", index=idx, state="up")
        lo = _lookup(ns, "lo")
        if lo is not None:
            ns.link("set", index=lo, state="up")


def _extra_link(layout: LabLayout, node: NodeLayout) -> tuple[str, str]:
    """(host end, node end before its rename) of a node's second link: ``zb<tag>n<i>xh`` matches the
    names ``delete_lab_network`` removes."""
    return f"zb{layout.tag}n{node.index}xh", f"zb{layout.tag}n{node.index}xn"


def attach_to_bridge(layout: LabLayout, node: NodeLayout, bridge: str, address: str, prefixlen: int) -> str:
    """Give ``node`` a second link, ``eth1``, enslaved to ``bridge`` (an existing bridge of another
    network), with ``address``/``prefixlen``; no route but that network's own. Idempotent. Returns the
    link's name in the node."""
    host_end, node_end = _extra_link(layout, node)
    if node.netns not in netns.listnetns():
        raise LabError(f"{node.name}: no network namespace; is the lab up?")
    with _ipr() as ip:
        br = _lookup(ip, bridge)
        if br is None:
            raise LabError(f"bridge {bridge} does not exist")
        if _lookup(ip, host_end) is None:
            ip.link("add", ifname=host_end, kind="veth", peer={"ifname": node_end})
            ip.link("set", index=_lookup(ip, node_end), net_ns_fd=node.netns)
        ip.link("set", index=_lookup(ip, host_end), master=br, state="up")
    with NetNS(node.netns) as ns:
        idx = _lookup(ns, node_end) or _lookup(ns, "eth1")
        if idx is None:
            raise LabError(f"{node.name}: its second link vanished")
        ns.link("set", index=idx, ifname="eth1")
        addrs = {m.get_attr("IFA_ADDRESS") for m in ns.get_addr(index=idx, family=2)}
        if address not in addrs:
            ns.addr("add", index=idx, address=address, prefixlen=prefixlen)
        ns.link("set", index=idx, state="up")
    _wait_forwarding(host_end, bridge)  # once both ends are up (no carrier: the port stays disabled)
    return "eth1"


def _wait_forwarding(port: str, bridge: str, timeout: float = 60.0) -> None:
    """Until the bridge forwards on ``port``: with STP on (libvirt's bridges), a new port listens and
    learns for twice the forward delay first (4 s on libvirt's), and drops every frame meanwhile."""
    state = f"/sys/class/net/{port}/brport/state"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(state) as f:
                if f.read().strip() == "3":  # BR_STATE_FORWARDING
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f"bridge {bridge}: port {port} not forwarding after {timeout:.0f} s")
        time.sleep(0.2)


def detach_from_bridge(layout: LabLayout, node: NodeLayout) -> bool:
    """Remove the node's second link (both ends: deleting a veth's host end deletes its peer). Whether
    there was one."""
    host_end, _ = _extra_link(layout, node)
    with _ipr() as ip:
        idx = _lookup(ip, host_end)
        if idx is None:
            return False
        ip.link("del", index=idx)
        return True


def set_link(node: NodeLayout, up: bool) -> None:
    """Cut or restore the node's link (both directions: the host end of its veth)."""
    with _ipr() as ip:
        idx = _lookup(ip, node.veth_host)
        if idx is None:
            raise LabError(f"{node.name}: link {node.veth_host} not found; is the lab up?")
        ip.link("set", index=idx, state="up" if up else "down")


def link_is_up(node: NodeLayout) -> bool:
    with _ipr() as ip:
        idx = _lookup(ip, node.veth_host)
        if idx is None:
            return False
        (msg,) = ip.get_links(idx)
        return bool(msg["flags"] & 1)


def _tbf(ip: IPRoute | NetNS, idx: int, rate_bps: int) -> None:
    with suppress(NetlinkError):
        ip.tc("del", index=idx, handle="1:", root=True)
    # Burst: at least one MTU and ~10 ms worth of bytes; queue latency 50 ms.
    burst = max(16 * 1024, rate_bps // 8 // 100)
    ip.tc("add", "tbf", index=idx, handle="1:", rate=f"{rate_bps}bit", burst=burst, latency="50ms")


def shape(node: NodeLayout, rate_bps: int) -> None:
    """Rate-limit both directions of the node's link with tbf (egress of each veth end)."""
    with _ipr() as ip:
        idx = _lookup(ip, node.veth_host)
        if idx is None:
            raise LabError(f"{node.name}: link not found; is the lab up?")
        _tbf(ip, idx, rate_bps)
    with NetNS(node.netns) as ns:
        idx = _lookup(ns, "eth0")
        if idx is not None:
            _tbf(ns, idx, rate_bps)


def unshape(node: NodeLayout) -> None:
    with _ipr() as ip:
        idx = _lookup(ip, node.veth_host)
        if idx is not None:
            with suppress(NetlinkError):
                ip.tc("del", index=idx, handle="1:", root=True)
    if node.netns in netns.listnetns():
        with NetNS(node.netns) as ns:
            idx = _lookup(ns, "eth0")
            if idx is not None:
                with suppress(NetlinkError):
                    ns.tc("del", index=idx, handle="1:", root=True)


def shaped_rate(node: NodeLayout) -> int | None:
    """The tbf rate on the node's link in bits/s, or None when unshaped."""
    with _ipr() as ip:
        idx = _lookup(ip, node.veth_host)
        if idx is None:
            return None
        for q in ip.get_qdiscs(index=idx):
            if q.get_attr("TCA_KIND") == "tbf":
                opts = q.get_attr("TCA_OPTIONS")
                parms = opts.get_attr("TCA_TBF_PARMS") if opts is not None else None
                if parms:
                    return int(parms["rate"]) * 8
                return -1
    return None


def list_lab_netns(layout: LabLayout) -> list[str]:
    prefix = layout.netns_prefix()
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def _delete_lab_links(layout: LabLayout, *, quiet: bool) -> int:
    """Delete this lab's links in the root namespace (bridge, host ends of veths); how many were there."""
    found = 0
    with _ipr() as ip:
        for msg in ip.get_links():
            name = msg.get_attr("IFLA_IFNAME") or ""
            if name == layout.bridge or (name.startswith(f"zb{layout.tag}n") and name.endswith("h")):
                found += 1
                try:
                    ip.link("del", index=msg["index"])
                except NetlinkError as e:
                    if not quiet:
                        log.warning("could not delete link %s: %s", name, e)
    return found


def delete_lab_network(layout: LabLayout, *, settle_s: float = 5.0) -> None:
    """Remove every link and namespace of this lab, found by name. Idempotent. A link the kernel was
    still tearing down (a veth whose peer's namespace was going away) is deleted again once the
    namespaces are gone, until none is left or ``settle_s`` passed."""
    _delete_lab_links(layout, quiet=False)
    for name in list_lab_netns(layout):
        try:
            netns.remove(name)
        except OSError as e:
            log.warning("could not remove netns %s: %s", name, e)
    deadline = time.monotonic() + settle_s
    while _delete_lab_links(layout, quiet=True) and time.monotonic() < deadline:
        time.sleep(0.1)
