"""``zfs-backend agent`` (the node daemon), ``zfs-backend rpc`` (its bridge for SSH sessions) and
``zfs-backend peer-exec`` (the forced command of peer nodes' keys)."""

from __future__ import annotations

import argparse

from ..agent import rpc_bridge, run_agent
from ..agent.peer_exec import main as peer_exec_main
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
    a.add_argument(
        "--test-kinds",
        action="store_true",
        help="also host the generic 'pipeline' kind (runs the argv its params name: tests, benchmarks)",
    )
    a.set_defaults(func=lambda args: run_agent(load_settings(), test_kinds=args.test_kinds))
    r = sub.add_parser(
        "rpc",
        help="bridge stdin/stdout to the local agent (what the controller runs over SSH)",
        description="Line-delimited JSON requests on stdin, answers on stdout, relayed to the local agent.",
    )
    r.add_argument(
        "--peer",
        action="store_true",
        help="use the agent's peer socket (only what peer nodes may ask: replication's receiving end)",
    )
    r.set_defaults(func=lambda args: rpc_bridge(load_settings(), peer=args.peer))
    x = sub.add_parser(
        "peer-exec",
        help="forced command of peer nodes' SSH keys (authorized_keys command=); not for interactive use",
        description=(
            "Runs what SSH_ORIGINAL_COMMAND asks if a peer node may: `zfs-backend rpc --peer` or "
            "`zfs receive [-s] [-u] [-o readonly=on] DATASET`. Anything else is refused (exit 126)."
        ),
    )
    x.set_defaults(func=lambda _args: peer_exec_main())
