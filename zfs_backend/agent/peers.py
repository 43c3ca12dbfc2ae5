"""Sessions from this node's agent to its peers' agents: what a replication's source uses to reach the
receiving end on the destination (``recv.*`` ops, see ``replication.receiver``).

One session per peer, opened on first use and kept for the agent's life (reopened when it dies):
``ssh PEER zfs-backend rpc --peer`` over the node's own SSH configuration, multiplexed on a
ControlMaster. On the peer, the node's narrow key runs only ``zfs-backend peer-exec --peer <this node>``,
which lets this through to the peer socket as a peer session of this node (replication ops only, as far
as the controller granted this node there) and nothing else but granted ``zfs receive`` and backup
streams.
"""

from __future__ import annotations

import threading

from ..config import Settings
from ..hosts.inventory import load_inventory
from ..hosts.peer import PeerHost
from ..rpc.client import AgentClient
from ..rpc.transport import CommandTransport

__all__ = ["PeerAgents", "peer_rpc_argv"]


def peer_rpc_argv(zfs_backend_bin: str = "zfs-backend") -> list[str]:
    """The remote command a node runs on a peer to reach its agent's peer socket."""
    return [zfs_backend_bin, "rpc", "--peer"]


class PeerAgents:
    """``peers(name)`` -> an ``AgentClient`` to that peer's agent (cached; thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, AgentClient] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> AgentClient:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._open(name)
                self._clients[name] = client
            return client

    def _open(self, name: str) -> AgentClient:
        spec = load_inventory(self.settings.inventory).node(name)
        host = PeerHost(spec.name, control_dir=str(self.settings.agent_socket.parent / "ssh"))
        argv = host.stream_argv(peer_rpc_argv(spec.zfs_backend_bin or "zfs-backend"), multiplex=True)
        return AgentClient(CommandTransport(argv, name=f"{name} (peer)"), node=name)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()
