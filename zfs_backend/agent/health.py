"""A node's health as an operator (and a rolling upgrade) checks it: the agent answers on its socket,
and every imported pool is ``ONLINE``. For ``zfs-backend agent --status``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..errors import ZfsBackendError
from ..hosts.base import Host
from ..hosts.local import LocalHost
from ..rpc.client import Node
from ..zfs import cmd

__all__ = ["NodeHealth", "node_health"]


@dataclass(frozen=True)
class NodeHealth:
    agent: dict[str, Any] | None  # the agent's ping answer, None when it does not answer
    pools: dict[str, str] = field(default_factory=dict)  # pool name -> zpool health
    problems: tuple[str, ...] = ()
    supervisor_pid: int | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "agent": self.agent,
            "supervisor_pid": self.supervisor_pid,
            "pools": self.pools,
            "problems": list(self.problems),
        }


def node_health(
    settings: Settings, host: Host | None = None, supervisor_pid: int | None = None
) -> NodeHealth:
    problems: list[str] = []
    agent: dict[str, Any] | None = None
    try:
        with Node.local(settings) as node:
            agent = node.ping()
    except (ZfsBackendError, OSError) as e:
        problems.append(f"the agent does not answer on {settings.agent_socket}: {e}")
    pools: dict[str, str] = {}
    res = cmd.run(host or LocalHost(), ["zpool", "list", "-H", "-o", "name,health"], check=False)
    if res.returncode != 0:
        first = (res.err_text.strip().splitlines() or [f"exit {res.returncode}"])[0]
        problems.append(f"zpool list failed: {first}")
    for line in res.text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pools[parts[0]] = parts[1]
    if res.returncode == 0 and not pools:
        problems.append("no pool is imported")
    problems += [f"pool {name} is {h}" for name, h in pools.items() if h != "ONLINE"]
    return NodeHealth(agent=agent, pools=pools, problems=tuple(problems), supervisor_pid=supervisor_pid)
