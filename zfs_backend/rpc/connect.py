"""Reach a node's agent by name: the local one through its unix socket, any other through the inventory.

A remote agent is reached over an OpenSSH ControlMaster kept alive between commands
(``Settings.ssh_persist_s``), with the node agent's socket forwarded to a private local socket
(``Settings.ssh_dir``): after the first command, a request from a new command line costs one round
trip and starts no process on the node. Where the node's sshd refuses socket forwarding, the session
runs ``zfs-backend rpc`` on the node through the same master instead.
"""

from __future__ import annotations

from typing import IO

from ..config import Settings
from ..errors import AgentUnavailable, ForwardRefused, HostUnreachable
from ..hosts.inventory import NodeSpec, load_inventory
from ..hosts.openssh import ControlConnection, OpenSSHTarget
from .client import AgentClient, Node
from .transport import CommandTransport, Transport, UnixSocketTransport

__all__ = ["LOCAL", "NODE_AGENT_SOCKET", "ForwardedTransport", "connect_node", "control_connection"]

LOCAL = "local"
#: where a node's agent listens, unless its inventory says otherwise (``zfs_backend_agent_socket``)
NODE_AGENT_SOCKET = "/run/zfs-backend/agent.sock"


def control_connection(spec: NodeSpec, settings: Settings) -> ControlConnection:
    target = OpenSSHTarget(
        name=spec.name,
        address=spec.address,
        port=spec.port,
        user=spec.user,
        key_file=spec.key_file,
        known_hosts=spec.known_hosts,
        cipher=settings.ssh_cipher,
    )
    return ControlConnection.to(target, settings.ssh_dir, settings.ssh_persist_s)


class ForwardedTransport(UnixSocketTransport):
    """The node agent's socket forwarded over the node's ControlMaster; (re)established on demand.
    Falls back to ``zfs-backend rpc`` over the master when the node does not forward sockets."""

    def __init__(self, conn: ControlConnection, remote_socket: str, rpc_argv: list[str], name: str) -> None:
        super().__init__(conn.control_dir / f"{conn.ident}.agent")
        self.conn = conn
        self.remote_socket = remote_socket
        self.name = name
        self._fallback = CommandTransport(conn.argv(rpc_argv), name=name)
        self._use_fallback = False

    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        if self._use_fallback:
            return self._fallback._open()
        try:
            return super()._open()
        except AgentUnavailable:
            pass  # no master yet, or it went away: set it up again, once
        try:
            self.path = self.conn.forward(self.remote_socket)
        except ForwardRefused:
            self._use_fallback = True
            return self._fallback._open()
        except HostUnreachable as e:
            raise AgentUnavailable(f"{self.name}: {e}") from None
        return super()._open()

    def _dead(self) -> bool:
        return self._fallback._dead() if self._use_fallback else super()._dead()

    def _drop(self) -> None:
        super()._drop()
        self._fallback._drop()


def connect_node(name: str | None, settings: Settings) -> Node:
    """``None`` or ``"local"``: this machine's agent; otherwise the inventory's node ``name``."""
    if name in (None, "", LOCAL):
        return Node.local(settings)
    spec = load_inventory(settings=settings).node(name)
    conn = control_connection(spec, settings)
    remote = str(spec.vars.get("zfs_backend_agent_socket") or NODE_AGENT_SOCKET)
    rpc = [spec.zfs_backend_bin or "zfs-backend", "rpc"]
    transport: Transport
    if settings.ssh_persist_s <= 0:  # no reuse asked for: one connection per session
        transport = CommandTransport(conn.direct_argv(rpc), name=spec.name)
    else:
        transport = ForwardedTransport(conn, remote, rpc, name=spec.name)
    return Node(AgentClient(transport, node=spec.name), spec.name)
