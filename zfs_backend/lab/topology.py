"""The lab's shape: node names, addresses, interface and namespace names, file layout.

Pure: nothing here touches the system. A lab is identified by its state directory; names of
kernel objects carry a short tag derived from that directory, so two labs (the demo's and a test
run's) can coexist on one machine as long as their networks differ.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

__all__ = ["LabLayout", "NodeLayout", "lab_tag", "node_name", "parse_size", "plan_nodes"]

MAX_NODES = 50
_NODE_RE = re.compile(r"^node[1-9][0-9]?$")
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
#: the largest lab size (a sparse pool file, a demo's data): 1 PiB
MAX_SIZE = 1 << 50
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse ``512M``, ``2G``, ``1.5GiB``, ``1048576`` into bytes (powers of 1024), 1 byte to ``MAX_SIZE``."""
    shown = repr(text if len(text) <= 40 else text[:40] + "...")
    m = _SIZE_RE.match(text) if len(text) <= 40 else None
    if not m:
        raise UsageError(f"invalid size {shown}: expected a number with an optional K, M, G or T suffix")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not value <= MAX_SIZE:
        raise UsageError(f"invalid size {shown}: at most 1 PiB")
    if int(value) <= 0:
        raise UsageError(f"invalid size {shown}: must be positive")
    return int(value)


def node_name(index: int) -> str:
    return f"node{index}"


def lab_tag(state_dir: Path) -> str:
    """A 4-hex-digit tag naming this lab's kernel objects (interface names are limited to 15 chars)."""
    return hashlib.sha1(str(state_dir.resolve()).encode(), usedforsecurity=False).hexdigest()[:4]


@dataclass(frozen=True)
class NodeLayout:
    name: str
    index: int
    address: str
    prefixlen: int
    netns: str  # name under /run/netns
    veth_host: str  # host end, enslaved to the bridge
    veth_node: str  # node end, renamed eth0 inside the node
    dir: Path  # per-node state on the host

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def home(self) -> Path:
        """Bound over /var/lib/zfs-backend inside the node: the node's own agent state."""
        return self.dir / "home"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"


@dataclass(frozen=True)
class LabLayout:
    state_dir: Path
    network: ipaddress.IPv4Network
    tag: str

    @classmethod
    def for_dir(cls, state_dir: Path, network: str) -> LabLayout:
        try:
            net = ipaddress.IPv4Network(network, strict=True)
        except ValueError as e:
            raise UsageError(f"invalid lab network {network!r}: {e}") from e
        if net.num_addresses < 16:
            raise UsageError(f"lab network {network} is too small: need at least a /28")
        return cls(state_dir=state_dir, network=net, tag=lab_tag(state_dir))

    @property
    def bridge(self) -> str:
        return f"zb{self.tag}br"

    @property
    def controller_address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def ns_dir(self) -> Path:
        return self.state_dir / "ns"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.yml"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    def netns_prefix(self) -> str:
        return f"zb{self.tag}-"

    def node(self, index: int) -> NodeLayout:
        if not 1 <= index <= MAX_NODES:
            raise UsageError(f"node index {index} out of range 1..{MAX_NODES}")
        addr = self.network.network_address + 10 + index
        if addr not in self.network or addr == self.network.broadcast_address:
            raise UsageError(f"lab network {self.network} has no room for node{index}")
        name = node_name(index)
        return NodeLayout(
            name=name,
            index=index,
            address=str(addr),
            prefixlen=self.network.prefixlen,
            netns=f"{self.netns_prefix()}{name}",
            veth_host=f"zb{self.tag}n{index}h",
            veth_node=f"zb{self.tag}n{index}n",
            dir=self.state_dir / "nodes" / name,
        )


def plan_nodes(layout: LabLayout, count: int) -> list[NodeLayout]:
    if not 1 <= count <= MAX_NODES:
        raise UsageError(f"--nodes must be between 1 and {MAX_NODES}, got {count}")
    return [layout.node(i) for i in range(1, count + 1)]


def index_of(name: str) -> int:
    if not _NODE_RE.match(name):
        raise UsageError(f"invalid lab node name {name!r}: expected node1, node2, …")
    return int(name[4:])
