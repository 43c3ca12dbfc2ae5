"""``zfs-backend agent`` (the node daemon: foreground, or supervised with ``--daemon``) and
``zfs-backend rpc`` (its bridge for SSH sessions)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..agent import rpc_bridge, run_agent, supervisor
from ..agent.health import node_health
from ..config import Settings, load_env_file, load_settings

__all__ = ["register"]

DEFAULT_PIDFILE = "/run/zfs-backend/supervisor.pid"
DEFAULT_LOG = "/var/log/zfs-backend/agent-supervisor.log"
_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser(
        "agent",
        help="run the node agent (foreground, or supervised with --daemon)",
        description=(
            "The node daemon hosting backend activities. It persists every activity in "
            "$ZFS_BACKEND_HOME/agent/activities.db, carries unfinished ones on after a restart, and listens "
            "on a root-only unix socket (default /run/zfs-backend/agent.sock). Stops cleanly on SIGTERM. "
            "Without systemd, --daemon runs it under a supervisor that restarts it when it exits."
        ),
    )
    mode = a.add_mutually_exclusive_group()
    mode.add_argument(
        "--daemon", action="store_true", help="start a supervised agent in the background (idempotent)"
    )
    mode.add_argument("--stop", action="store_true", help="stop the supervised agent (idempotent)")
    mode.add_argument(
        "--status",
        action="store_true",
        help="exit 0 when the agent answers and every pool is ONLINE; print the health as JSON",
    )
    a.add_argument(
        "--pidfile", default=DEFAULT_PIDFILE, help=f"supervisor pid file (default {DEFAULT_PIDFILE})"
    )
    a.add_argument("--log", default=DEFAULT_LOG, help=f"supervisor log (default {DEFAULT_LOG})")
    a.add_argument(
        "--env-file",
        help="KEY=VALUE settings for the agent (ZFS_BACKEND_HOME, ZFS_BACKEND_INVENTORY, ...), as systemd's "
        "EnvironmentFile",
    )
    a.set_defaults(func=cmd_agent)
    r = sub.add_parser(
        "rpc",
        help="bridge stdin/stdout to the local agent (what the controller runs over SSH)",
        description="Line-delimited JSON requests on stdin, answers on stdout, relayed to the local agent.",
    )
    r.set_defaults(func=lambda _args: rpc_bridge(load_settings()))


def _env(args: argparse.Namespace) -> dict[str, str]:
    return load_env_file(Path(args.env_file)) if args.env_file else {}


def cmd_agent(args: argparse.Namespace) -> int:
    extra = _env(args)
    settings: Settings = load_settings({**os.environ, **extra})
    pidfile = Path(args.pidfile)
    if args.daemon:
        spec = supervisor.Supervised(
            argv=[sys.executable, "-m", "zfs_backend.agent", "run"],
            pidfile=pidfile,
            log=Path(args.log),
            env={**_BASE_ENV, "HOME": os.environ.get("HOME", "/root"), **extra},
        )
        res = supervisor.start(spec)
        print(f"agent supervisor {'started' if res.started else 'already running'} (pid {res.pid})")
        return 0
    if args.stop:
        pid = supervisor.stop(pidfile)
        print("agent supervisor not running" if pid is None else f"agent supervisor stopped (pid {pid})")
        return 0
    if args.status:
        health = node_health(settings, supervisor_pid=supervisor.status(pidfile))
        print(json.dumps(health.to_dict(), sort_keys=True))
        if not health.healthy:
            print("zfs-backend: error: unhealthy: " + "; ".join(health.problems), file=sys.stderr)
            return 12
        return 0
    return run_agent(settings)
