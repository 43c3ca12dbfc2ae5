"""The node agent: hosts activities, persists them, carries them on after a restart; control over a
root-only unix socket, reached remotely through ``zfs-backend rpc`` over SSH.

Entry points for the CLI: ``run_agent(settings)`` (``zfs-backend agent``) and ``rpc_bridge(settings)``
(``zfs-backend rpc``). Client side: ``Node``, ``AgentClient``, ``RemoteActivity``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .client import (
        AgentClient,
        ChannelTransport,
        CommandTransport,
        Node,
        RemoteActivity,
        UnixSocketTransport,
    )
    from .daemon import run_agent
    from .manager import ActivityManager
    from .rpc_bridge import bridge, rpc_bridge

__all__ = [
    "ActivityManager",
    "AgentClient",
    "ChannelTransport",
    "CommandTransport",
    "Node",
    "RemoteActivity",
    "UnixSocketTransport",
    "bridge",
    "rpc_bridge",
    "run_agent",
]

_EXPORTS = {
    "ActivityManager": "manager",
    "AgentClient": "client",
    "ChannelTransport": "client",
    "CommandTransport": "client",
    "Node": "client",
    "RemoteActivity": "client",
    "UnixSocketTransport": "client",
    "bridge": "rpc_bridge",
    "rpc_bridge": "rpc_bridge",
    "run_agent": "daemon",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
