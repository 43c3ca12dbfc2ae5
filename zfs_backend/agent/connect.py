"""Reach a node's agent by name: the local one through its unix socket, any other through the
inventory and one persistent SSH session running ``zfs-backend rpc`` there."""

from __future__ import annotations

from ..config import Settings
from ..hosts.inventory import load_inventory
from ..hosts.ssh import SSHHost
from .client import Node

__all__ = ["LOCAL", "connect_node"]

LOCAL = "local"


def connect_node(name: str | None, settings: Settings) -> Node:
    """``None`` or ``"local"``: this machine's agent; otherwise the inventory's node ``name``."""
    if name in (None, "", LOCAL):
        return Node.local(settings)
    spec = load_inventory(settings.inventory).node(name)
    host = SSHHost.from_spec(spec, settings)
    return Node.over_ssh(host, spec.zfs_backend_bin or "zfs-backend")
