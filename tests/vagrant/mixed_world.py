"""A zfs-fuse lab node on the Vagrant tier's nodes network, made a peer of the OpenZFS VMs as the role
makes nodes peers (``test_mixed_dialects.py``; beside it: ``--import-mode=importlib``).

The lab's bridge and the VMs' isolated libvirt network (``zb-nodes``) do not reach each other, and the
host may not route between them (docs/vagrant.md). So the lab node gets a second link on the VMs'
network itself (``lab.netns.attach_to_bridge``: a veth from its namespace enslaved to libvirt's bridge
of ``zb-nodes``, address ``.50``), and reaches the VMs at layer 2, as one of them: no forwarding, no
firewall change, nothing routed out. Its sshd also listens there.

Then the peers' access, as ``ansible/site.yml`` writes it on the VMs and ``lab.access`` on the lab:
each side's node key authorized on the other only from its address and only with ``peer-exec --peer
<its name>`` (``access.node_key_line``), host keys in the other's ``known_hosts`` (strict), an ssh
client block and an inventory entry so each agent reaches the other by name. The controller gets one
inventory naming the lab node (the lab's controller key and known_hosts) and the VMs (the tier's).

Everything added is undone by :meth:`MixedWorld.undo`: the VMs' files written back as they were, the
lab node's second link removed (the lab itself is taken down by the test's fixture).
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zfs_backend.hosts import SSHHost
from zfs_backend.hosts.inventory import Inventory, NodeSpec
from zfs_backend.lab import Lab
from zfs_backend.lab.access import node_key_line, write_private
from zfs_backend.lab.netns import attach_to_bridge, detach_from_bridge

NODES_NET = "zb-nodes"  # the tier's libvirt network of the nodes (vagrant/Vagrantfile)
HOST_PART = 50  # the lab node's address there: .50 (the tier uses .1 and .11-.1N)
T = 600.0
SSHD_CONFIG = "/etc/ssh/zfs-backend/sshd_config"  # the lab node's (lab.services)
VM_INVENTORY = "/etc/zfs-backend/inventory.yml"  # the VMs' agents' (the role's config dir)


def libvirt_bridge(network: str = NODES_NET) -> str:
    """The bridge of a libvirt network (``virsh net-info``)."""
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "net-info", network], capture_output=True, text=True, timeout=60
    )
    for line in out.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Bridge" and value.strip():
            return value.strip()
    raise AssertionError(f"libvirt network {network}: no bridge ({out.stderr.strip() or out.stdout.strip()})")


def read(host: SSHHost, path: str) -> str:
    return host.run(["cat", path], timeout=T).text


def write(host: SSHHost, path: str, text: str) -> None:
    """Rewrite an existing file in place (``cat >``: its inode, owner and mode stay)."""
    host.run(["sh", "-c", 'cat > "$1"', "sh", path], input=text.encode(), timeout=T)


def ssh_block(name: str, address: str) -> str:
    """A peer's block of a node's ssh client config (the role's ssh_config.j2, the lab's access.py)."""
    return (
        f"Host {name} {address}\n  HostName {address}\n  IdentityFile /root/.ssh/id_ed25519\n"
        "  UserKnownHostsFile /root/.ssh/known_hosts\n  User root\n  IdentitiesOnly yes\n"
        "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        "  Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com\n"
        "  KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n"
        "  ServerAliveInterval 5\n  ServerAliveCountMax 3\n  ConnectTimeout 5\n"
    )


def add_hosts(text: str, hosts: dict[str, dict[str, Any]]) -> str:
    """An inventory with ``hosts`` added to its ``storage_nodes`` group."""
    doc = yaml.safe_load(text)
    group = doc["all"]["children"]["storage_nodes"]
    group["hosts"] = {**(group.get("hosts") or {}), **hosts}
    return yaml.safe_dump(doc, sort_keys=False)


def pub(text: str) -> str:
    return " ".join(text.split()[0:2])


def _spec_vars(spec: NodeSpec) -> dict[str, Any]:
    return {
        **{k: v for k, v in spec.vars.items() if isinstance(v, str | int | bool)},
        "ansible_host": spec.address,
        "ansible_port": spec.port,
        "ansible_user": spec.user,
        "ansible_ssh_private_key_file": str(spec.key_file),
        "zfs_backend_known_hosts": str(spec.known_hosts),
    }


@dataclass
class MixedWorld:
    lab: Lab
    node: str  # the lab node's name (node1)
    address: str  # its address on the VMs' network
    bridge: str
    inventory: Path  # the controller's: the lab node and the VMs
    undos: list[Callable[[], None]] = field(default_factory=list)

    def undo(self) -> list[str]:
        """Undo everything, last first; what could not be undone (each tried)."""
        failed: list[str] = []
        while self.undos:
            fn = self.undos.pop()
            try:
                fn()
            except Exception as e:  # every undo is tried; the caller reports what failed
                failed.append(f"{getattr(fn, '__name__', fn)}: {e}")
        return failed


def build(
    lab: Lab,
    lab_inventory: Inventory,
    lab_host: SSHHost,
    vm_inventory: Inventory,
    vms: dict[str, SSHHost],
    home: Path,
) -> MixedWorld:
    """Put the lab node on the VMs' network and make it and the VMs peers (see the module doc)."""
    (node_name,) = lab_inventory.names
    node = lab.node(node_name)
    first = vm_inventory.node(sorted(vms)[0])
    net = ipaddress.ip_interface(f"{first.address}/24").network
    address = str(net.network_address + HOST_PART)
    assert address not in {vm_inventory.node(n).address for n in vms}, address
    world = MixedWorld(lab, node_name, address, libvirt_bridge(), home / "inventory.yml")

    def unplug() -> None:
        detach_from_bridge(lab.layout, node)

    world.undos.append(unplug)
    attach_to_bridge(lab.layout, node, world.bridge, address, net.prefixlen)

    # the lab node's sshd also listens on its new address (sshd_config is the lab's; the lab goes down after)
    conf = read(lab_host, SSHD_CONFIG)
    if f"ListenAddress {address}\n" not in conf:
        write(lab_host, SSHD_CONFIG, conf + f"ListenAddress {address}\n")
        lab.restart_service(node_name, "sshd")

    # the lab node speaks first to each VM: their neighbour caches learn its link's address (a new one
    # on every lab up; an entry left by an earlier run would time connections out until it expired)
    for name in sorted(vms):
        addr = vm_inventory.node(name).address
        probe = f"import socket; socket.create_connection(({addr!r}, 22), 30).close()"
        lab_host.run(["python3", "-c", probe], timeout=T)

    lab_spec = lab_inventory.node(node_name)
    lab_bin = lab_spec.zfs_backend_bin or "zfs-backend"
    keys = node.dir / "keys"
    lab_client = pub((keys / "id_ed25519.pub").read_text())
    lab_hostkey = pub((keys / "ssh_host_ed25519_key.pub").read_text())
    tier_known = first.known_hosts.read_text().splitlines()

    vm_side: dict[str, tuple[str, str, str]] = {}  # name -> (address, client key, host-key line)
    for name, vm in sorted(vms.items()):
        spec = vm_inventory.node(name)
        vm_bin = spec.zfs_backend_bin or "zfs-backend"
        line = next(x for x in tier_known if x.split(",", 1)[0] == name)
        vm_side[name] = (spec.address, pub(read(vm, "/root/.ssh/id_ed25519.pub")), line)
        additions = {
            "/root/.ssh/authorized_keys": node_key_line(lab_client, node_name, address, vm_bin),
            "/root/.ssh/known_hosts": f"{node_name},{address} {lab_hostkey}\n",
            "/root/.ssh/config": ssh_block(node_name, address),
        }
        for path, extra in additions.items():
            _append(world, vm, path, extra)
        old = read(vm, VM_INVENTORY)
        world.undos.append(_restorer(vm, VM_INVENTORY, old))
        entry = {node_name: {"ansible_host": address, "ansible_port": 22, "zfs_backend_bin": lab_bin}}
        write(vm, VM_INVENTORY, add_hosts(old, entry))

    # the lab node: the VMs' keys (narrow), host keys, ssh blocks and its agent's inventory
    for path, extra in {
        "/root/.ssh/authorized_keys": "".join(
            node_key_line(key, name, addr, lab_bin) for name, (addr, key, _) in vm_side.items()
        ),
        "/root/.ssh/known_hosts": "".join(line + "\n" for _, _, line in vm_side.values()),
        "/root/.ssh/config": "".join(ssh_block(name, addr) for name, (addr, _, _) in vm_side.items()),
    }.items():
        _append(world, lab_host, path, extra)
    node_inv = node.home / "inventory.yml"
    old_inv = node_inv.read_text()

    def restore_node_inventory() -> None:
        write_private(node_inv, old_inv)

    world.undos.append(restore_node_inventory)
    vm_hosts = {
        name: {
            "ansible_host": addr,
            "ansible_port": 22,
            "zfs_backend_bin": vm_inventory.node(name).zfs_backend_bin or "zfs-backend",
        }
        for name, (addr, _, _) in vm_side.items()
    }
    write_private(node_inv, add_hosts(old_inv, vm_hosts))

    # the controller: one inventory for both worlds, each node with its own key and known_hosts
    hosts = {node_name: _spec_vars(lab_spec)} | {n: _spec_vars(vm_inventory.node(n)) for n in vms}
    doc = {"all": {"children": {"storage_nodes": {"hosts": hosts}}}}
    write_private(world.inventory, yaml.safe_dump(doc, sort_keys=False))
    return world


def _restorer(host: SSHHost, path: str, text: str) -> Callable[[], None]:
    def restore() -> None:
        write(host, path, text)

    restore.__name__ = f"restore {host.name}:{path}"
    return restore


def _append(world: MixedWorld, host: SSHHost, path: str, extra: str) -> None:
    old = read(host, path)
    world.undos.append(_restorer(host, path, old))
    write(host, path, old + ("" if old.endswith("\n") or not old else "\n") + extra)


def stream_via_host(send: list[str], recv: list[str]) -> tuple[int, str]:
    """``send`` (an argv list for the sending side) piped through the host into ``recv``: the receive's
    exit status and stderr. For the raw zfs check of what the product refuses (no node key involved)."""
    sender = subprocess.Popen(
        send, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        receiver = subprocess.run(recv, stdin=sender.stdout, capture_output=True, text=True, timeout=T)
    finally:
        assert sender.stdout is not None
        sender.stdout.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            sender.wait(timeout=T)
    return receiver.returncode, receiver.stderr
