"""How to reach one node (``NodeSpec``): what the inventory (:mod:`.inventory`) reads and an
:class:`~zfs_backend.hosts.ssh.SSHHost` is built from. Apart from both, so that the inventory (which
makes SSH hosts) and the SSH host (which is built from a spec) do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["NodeSpec"]


@dataclass(frozen=True)
class NodeSpec:
    """How to reach one node. ``vars``: every variable of the node after inheritance (read-only)."""

    name: str
    address: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    zfs_backend_bin: str | None = None
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
