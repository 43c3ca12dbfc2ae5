"""``ActivityContext``: what a kind needs from whoever hosts it (the agent, a test, the CLI).

The activity store, the node's name and settings, hosts by name (``host``), sessions to peer nodes'
agents (``peer_agent``) and peer nodes as the ``Host`` a stream reaches over SSH (``peer_host``; by
default ``PeerHost`` with the node's own SSH configuration, over ControlMasters kept beside the agent's
socket). A kind never reads the settings or builds a peer itself: it asks its context.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import Settings, load_settings
from ..errors import UsageError
from ..hosts.base import Host
from ..hosts.local import LocalHost
from ..hosts.peer import DEFAULT_CIPHER, PeerHost
from .store import ActivityStore

__all__ = ["LOCAL_HOST_NAMES", "ActivityContext", "PeerCaller", "PeerHostFactory", "ssh_peer_host"]

LOCAL_HOST_NAMES = frozenset({"", "local", "localhost"})


def _default_host_for(name: str) -> Host:
    if name in LOCAL_HOST_NAMES or name == socket.gethostname():
        return LocalHost(name or None)
    raise UsageError(f"unknown host {name!r}: this agent has no way to reach it")


class PeerCaller(Protocol):
    """A session to a peer node's agent (its peer socket): ``call(op, **args)`` returns the result or
    raises the typed error the peer raised."""

    def call(self, op: str, **args: Any) -> Any: ...


def _no_peers(name: str) -> PeerCaller:
    raise UsageError(f"node {name!r}: this host has no way to reach peer agents")


#: makes the peer ``node`` as a ``Host`` a stream reaches (``peer_host_for(settings, node, cipher)``)
PeerHostFactory = Callable[[Settings, str, str], PeerHost]


def ssh_peer_host(settings: Settings, node: str, cipher: str) -> PeerHost:
    """The default: OpenSSH with the node's own configuration, over the agent's ControlMasters (their
    directory beside the agent's socket)."""
    return PeerHost(node, cipher=cipher, control_dir=str(settings.agent_socket.parent / "ssh"))


@dataclass
class ActivityContext:
    """What a kind needs from whoever hosts it: the store, the node's name and settings, a way to reach
    hosts and peers."""

    store: ActivityStore
    node: str = field(default_factory=socket.gethostname)
    host_for: Callable[[str], Host] = _default_host_for
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("zfs_backend.activity"))
    #: True when the host carries non-terminal activities on after a restart (the agent)
    self_restarting: bool = False
    #: sessions to peer nodes' agents (the agent provides them; none elsewhere)
    peer: Callable[[str], PeerCaller] | None = None
    #: the node's settings (where the agent's socket and SSH ControlMasters live, ...)
    settings: Settings = field(default_factory=load_settings)
    #: makes a peer node's ``Host`` for streams (see ``peer_host``)
    peer_host_for: PeerHostFactory = ssh_peer_host

    def peer_agent(self, name: str) -> PeerCaller:
        return (self.peer or _no_peers)(name)

    def peer_host(self, name: str, cipher: str = DEFAULT_CIPHER) -> PeerHost:
        """Node ``name`` as a stream from this node reaches it (``ssh`` with ``cipher``)."""
        return self.peer_host_for(self.settings, name, cipher)

    def host(self, name: str | None) -> Host:
        if not name or name == self.node:
            return LocalHost(self.node)
        return self.host_for(name)
