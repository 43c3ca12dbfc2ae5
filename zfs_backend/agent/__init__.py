"""The node agent: hosts activities, persists them, carries them on after a restart; control over a
root-only unix socket, reached remotely through ``zfs-backend rpc`` over SSH.

Entry points for the CLI: ``run_agent(settings)`` (``zfs-backend agent``) and ``rpc_bridge(settings)``
(``zfs-backend rpc``). Client side: ``Node``, ``AgentClient``, ``RemoteActivity``.
"""

from .client import AgentClient, ChannelTransport, CommandTransport, Node, RemoteActivity, UnixSocketTransport
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
