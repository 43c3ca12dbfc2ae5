"""Where a node's agent listens, from the environment alone.

``config.Settings`` carries these paths for everything else; this module exists so that a node's forced
SSH command (``agent/peer_exec.py``, run once per replication stream) can find the agent's peer socket
without importing ``config`` (whose dataclass costs ``inspect`` and ``ast`` at start-up). One rule, read
in one place: ``$ZFS_BACKEND_AGENT_SOCKET`` (default ``/run/zfs-backend/agent.sock``) and, beside it,
``peer.sock``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["DEFAULT_AGENT_SOCKET", "PEER_SOCKET_NAME", "agent_socket_path", "peer_socket_path"]

DEFAULT_AGENT_SOCKET = "/run/zfs-backend/agent.sock"
PEER_SOCKET_NAME = "peer.sock"


def agent_socket_path(env: Mapping[str, str]) -> str:
    """The agent's own (controller) socket."""
    return env.get("ZFS_BACKEND_AGENT_SOCKET", DEFAULT_AGENT_SOCKET)


def peer_socket_path(env: Mapping[str, str]) -> str:
    """The socket peer nodes reach, in the agent socket's directory."""
    return os.path.join(os.path.dirname(agent_socket_path(env)), PEER_SOCKET_NAME)
