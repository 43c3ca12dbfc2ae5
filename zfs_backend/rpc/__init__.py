"""The node agent's client side: its line protocol, the transports that carry it, the client, and the
``zfs-backend rpc`` bridge (SSH's forced command that joins a controller to a node's agent socket).

``protocol`` (ops, framing, error payloads; the server in ``agent.daemon`` speaks it too),
``transport`` (a unix socket, a command's stdin/stdout, a channel), ``client`` (``AgentClient``,
``Node``, ``RemoteActivity``), ``connect`` (``connect_node``: a node of the inventory, over SSH or its
local socket), ``rpc_bridge`` (``rpc_bridge`` and ``bridge``: stdin/stdout to the agent socket).

Layering: this room imports only ``activity``, ``zfs``, ``hosts`` and the base modules; never
``replication``, the kinds or the agent (server), which may all import it.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .client import AgentClient, Node, RemoteActivity
    from .connect import connect_node
    from .rpc_bridge import bridge, rpc_bridge
    from .transport import ChannelTransport, CommandTransport, Transport, UnixSocketTransport

__all__ = [
    "AgentClient",
    "ChannelTransport",
    "CommandTransport",
    "Node",
    "RemoteActivity",
    "Transport",
    "UnixSocketTransport",
    "bridge",
    "connect_node",
    "rpc_bridge",
]

_EXPORTS = {
    "AgentClient": "client",
    "ChannelTransport": "transport",
    "CommandTransport": "transport",
    "Node": "client",
    "RemoteActivity": "client",
    "Transport": "transport",
    "UnixSocketTransport": "transport",
    "bridge": "rpc_bridge",
    "connect_node": "connect",
    "rpc_bridge": "rpc_bridge",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
