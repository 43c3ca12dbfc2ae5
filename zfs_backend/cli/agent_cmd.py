"""``zfs-backend agent`` (the node daemon) and ``zfs-backend rpc`` (its bridge for SSH sessions)."""

from __future__ import annotations

import argparse

from ..agent import rpc_bridge, run_agent
from ..config import load_settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser(
        "agent",
        help="run the node agent in the foreground",
        description=(
            "The node daemon hosting backend activities. It persists every activity in "
            "$ZFS_BACKEND_HOME/agent/activities.db, carries unfinished ones on after a restart, and listens "
            "on a root-only unix socket (default /run/zfs-backend/agent.sock). Stops cleanly on SIGTERM."
        ),
    )
    a.set_defaults(func=lambda _args: run_agent(load_settings()))
    r = sub.add_parser(
        "rpc",
        help="bridge stdin/stdout to the local agent (what the controller runs over SSH)",
        description="Line-delimited JSON requests on stdin, answers on stdout, relayed to the local agent.",
    )
    r.set_defaults(func=lambda _args: rpc_bridge(load_settings()))
