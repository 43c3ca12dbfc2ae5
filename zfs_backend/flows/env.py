"""What a flow's tasks reach, per process: the volume service (records, statuses), a driver per node,
an agent session per node. Tasks receive only plain data from flow storage (names, ids) and look these
up here, so a flow resumed by another process (a conductor) finds its own. Tests install a fake with
:func:`set_env`. Typed (the service, driver and agent imported for the type checker only, made on first
use), so the type checker sees what the flows do with them."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings

if TYPE_CHECKING:
    from ..driver.service import VolumeService
    from ..driver.zfs_nfs import ZfsNfsDriver
    from ..rpc.client import Node

__all__ = ["FlowEnv", "env", "set_env"]


class FlowEnv:
    """Lazily made, cached for the process."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._service: VolumeService | None = None
        self._agents: dict[str, Node] = {}
        self._lock = threading.Lock()

    def service(self) -> VolumeService:
        """The volume service."""
        with self._lock:
            if self._service is None:
                from ..driver.service import VolumeService

                self._service = VolumeService(self.settings)
            return self._service

    def driver(self, node: str) -> ZfsNfsDriver:
        """The volume service's driver for ``node`` (set up)."""
        return self.service().driver(node)

    def stats(self, node: str) -> dict[str, Any]:
        return dict(self.driver(node).get_volume_stats(refresh=True))

    def agent(self, node: str) -> Node:
        """A session to ``node``'s agent, kept for the process."""
        with self._lock:
            a = self._agents.get(node)
            if a is None:
                from ..rpc.connect import connect_node

                a = self._agents[node] = connect_node(node, self.settings)
            return a

    def close(self) -> None:
        with self._lock:
            for a in self._agents.values():
                a.close()
            self._agents.clear()
            if self._service is not None:
                self._service.close()
                self._service = None


_ENV: FlowEnv | None = None
_ENV_LOCK = threading.Lock()


def env() -> FlowEnv:
    global _ENV
    with _ENV_LOCK:
        if _ENV is None:
            _ENV = FlowEnv()
        return _ENV


def set_env(value: FlowEnv | None) -> FlowEnv | None:
    """Install ``value`` (None: the default, made on next use); returns the previous one."""
    global _ENV
    with _ENV_LOCK:
        old, _ENV = _ENV, value
        return old
