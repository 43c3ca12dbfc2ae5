"""``zfs-backend agent`` (the node daemon: foreground, or supervised with ``--daemon``),
``zfs-backend rpc`` (its bridge for SSH sessions) and ``zfs-backend peer-exec`` (the forced command of
peer nodes' keys)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..agent import run_agent
from ..agent.peer_exec import main as peer_exec_main
from ..config import Settings, load_env_file, load_settings
from ..rpc import rpc_bridge
from .numbers import PORT_MAX, whole

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
    a.add_argument(
        "--test-kinds",
        action="store_true",
        help="also host the generic 'pipeline' kind (runs the argv its params name: tests, benchmarks)",
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
    a.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address of the Prometheus metrics (default: loopback only; give one on purpose to be scraped)",
    )
    a.add_argument(
        "--metrics-port",
        type=whole("--metrics-port", 0, PORT_MAX),
        default=9464,
        help="port of the metrics (default 9464; 0: off)",
    )
    a.set_defaults(func=cmd_agent)
    r = sub.add_parser(
        "rpc",
        help="bridge stdin/stdout to the local agent (what the controller runs over SSH)",
        description="Line-delimited JSON requests on stdin, answers on stdout, relayed to the local agent.",
    )
    r.add_argument(
        "--peer",
        action="store_true",
        help=(
            "use the agent's peer socket (only what peer nodes may ask; the agent refuses a session that "
            "does not begin with peer.hello, which only peer-exec --peer NODE writes)"
        ),
    )
    r.set_defaults(func=lambda args: rpc_bridge(load_settings(), peer=args.peer))
    x = sub.add_parser(
        "peer-exec",
        help="forced command of peer nodes' SSH keys (authorized_keys command=); not for interactive use",
        description=(
            "Runs what SSH_ORIGINAL_COMMAND asks if a peer node may: `zfs-backend rpc --peer`, "
            "`zfs receive [-s] [-u] [-o readonly=on] DATASET`, or `zfs-backend backup-write|backup-read "
            "VOLUME BACKUP` (a backup node's streams), as far as the controller granted that peer (the "
            "agent is asked first). Anything else is refused (exit 126)."
        ),
    )
    x.add_argument("--peer", metavar="NODE", help="the peer node whose key this is (required)")
    x.set_defaults(
        func=lambda args: peer_exec_main(argv=["--peer", args.peer] if args.peer is not None else [])
    )


def _env(args: argparse.Namespace) -> dict[str, str]:
    return load_env_file(Path(args.env_file)) if args.env_file else {}


def cmd_agent(args: argparse.Namespace) -> int:
    from ..agent import supervisor  # only the modes that need them (the CLI imports what it runs)
    from ..agent.health import node_health

    extra = _env(args)
    settings: Settings = load_settings({**os.environ, **extra})
    pidfile = Path(args.pidfile)
    if args.daemon:
        child = [
            sys.executable, "-m", "zfs_backend.cli.main", "agent",
            "--metrics-address", args.metrics_address, "--metrics-port", str(args.metrics_port),
        ]  # fmt: skip
        if args.test_kinds:
            child.append("--test-kinds")
        spec = supervisor.Supervised(
            argv=child,
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
    return run_agent(
        settings,
        test_kinds=args.test_kinds,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
    )
