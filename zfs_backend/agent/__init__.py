"""The node agent (server): hosts activities, persists them, carries them on after a restart; control
over a root-only unix socket, reached remotely through ``zfs-backend rpc`` over SSH.

``daemon`` (the sockets and ``run_agent``), ``logs`` (its JSON-lines log), ``manager`` (the activities,
the receiving end's ops, the grants), ``holds``, ``retention``, ``metrics``, ``peers`` (sessions to peer
agents), ``peer_exec`` (the forced command of node keys), ``supervisor`` (``agent --daemon`` without
systemd), ``health`` (``agent --status``).

Entry point for the CLI: ``run_agent(settings)`` (``zfs-backend agent``). The client side (``Node``,
``AgentClient``, ``RemoteActivity``, ``connect_node``) and ``rpc_bridge`` (``zfs-backend rpc``) are in
:mod:`zfs_backend.rpc`. Layering: the agent sits above the kinds, the replication core and ``rpc``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .daemon import run_agent
    from .manager import ActivityManager

__all__ = ["ActivityManager", "run_agent"]

_EXPORTS = {
    "ActivityManager": "manager",
    "run_agent": "daemon",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
