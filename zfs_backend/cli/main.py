"""The ``zfs-backend`` command: parses arguments, dispatches, and turns errors into one line + exit code.

Each subcommand group lives in its own module with ``register(subparsers)``; modules render and hold no
logic of their own.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ZfsBackendError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zfs-backend",
        description=(
            "Reference ZFS/NFS storage backend whose long work (snapshot replication) runs as backend "
            "activities with progress, suspend/resume, cancel with rollback and a resource report; "
            "plus a simulated lab of storage nodes."
        ),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is run, to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from . import activity_cmd, agent_cmd, demo_cmd, lab_cmd, replicate_cmd, volume_cmd

    for g in (lab_cmd, activity_cmd, agent_cmd, replicate_cmd, volume_cmd, demo_cmd):
        g.register(sub)
    return p


def _fast_path(argv: Sequence[str]) -> int | None:
    """Commands run by machines, many times, that must not pay for loading the whole CLI: the forced
    command of peer keys and the agent bridge (both run once per SSH session on a node)."""
    if list(argv[:1]) == ["peer-exec"] and len(argv) == 1:
        from ..agent.peer_exec import main as peer_exec

        return peer_exec()
    if list(argv[:1]) == ["rpc"] and set(argv[1:]) <= {"--peer"}:
        from ..agent.rpc_bridge import rpc_bridge
        from ..config import load_settings

        return rpc_bridge(load_settings(), peer="--peer" in argv)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    fast = _fast_path(args_in)
    if fast is not None:
        return fast
    parser = build_parser()
    args = parser.parse_args(args_in)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        rc = args.func(args)
    except ZfsBackendError as e:
        print(f"zfs-backend: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("zfs-backend: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
