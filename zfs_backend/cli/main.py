"""The ``zfs-backend`` command: parses arguments, dispatches, and turns errors into one line + exit code.

Each subcommand group lives in its own module with ``register(subparsers)``; modules render and hold no
logic of their own. Only the module of the command being run is imported (``_COMMANDS`` names it): the
command line starts in a fraction of the time it takes to import every group (rich, paramiko, pyroute2,
yaml), which matters for commands run in loops (``activity show``) and on nodes (``rpc``, ``peer-exec``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from .. import __version__
from ..errors import ZfsBackendError

if TYPE_CHECKING:
    import argparse

__all__ = ["build_parser", "main"]

#: command -> (module that registers it, one-line help for the top-level listing)
_COMMANDS: dict[str, tuple[str, str]] = {
    "lab": ("lab_cmd", "the simulated lab of storage nodes (up, status, exec, shape, link, restart, down)"),
    "activity": (
        "activity_cmd",
        "backend activities on a node: list, show, suspend, resume, cancel, wait, watch",
    ),
    "agent": ("agent_cmd", "run the node agent (foreground, or supervised with --daemon; --status)"),
    "rpc": ("agent_cmd", "bridge stdin/stdout to the local agent (what the controller runs over SSH)"),
    "peer-exec": ("agent_cmd", "forced command of peer nodes' SSH keys; not for interactive use"),
    "exports-change": ("node_cmd", "one NFS exports change under the node's lock (run by the driver)"),
    "volume-file": ("node_cmd", "size or set the owner and mode of a volume file (run by the driver)"),
    "replicate": (
        "replicate_cmd",
        "replicate a snapshot to another node (incremental by GUID), as a backend activity",
    ),
    "volume": ("volume_cmd", "volumes on the storage nodes (the Cinder-shaped ZFS/NFS driver)"),
    "stats": ("volume_cmd", "a node's volume stats and capabilities (get_volume_stats)"),
    "standby": ("standby_cmd", "a volume's hot standby on another node: create, status, failover, remove"),
    "flow": ("flow_cmd", "workflows (TaskFlow) from the logbook: list, show, resume"),
    "conductor": ("flow_cmd", "claim and run flows posted on the jobboard, until SIGTERM"),
    "jobboard": ("flow_cmd", "a loopback redis-server for the jobboard: up, down"),
    "top": ("top_cmd", "live view of every node's activities (sort, filter; keys suspend/resume/cancel)"),
    "demo": ("demo_cmd", "bring the default lab up and replicate a dataset node1 -> node2"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s group is imported and registered (the others appear by name and
    help only, which is all the top-level ``--help`` and a mistyped command need)."""
    import argparse  # here, not at the top: the fast paths below never pay for it
    import importlib

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
    wanted = {_COMMANDS[command][0]} if command in _COMMANDS else set()
    registered: set[str] = set()
    for name, (module, helptext) in _COMMANDS.items():
        if module in wanted:
            if module not in registered:
                importlib.import_module(f"{__package__}.{module}").register(sub)
                registered.add(module)
        else:
            sub.add_parser(name, help=helptext)
    return p


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (skipping the top-level flags), when it is a known one."""
    for arg in argv:
        if arg in ("-v", "--verbose"):
            continue
        return arg if arg in _COMMANDS else None
    return None


#: fast paths whose process may end without the interpreter's teardown (see ``_quick_exit``): they hold
#: no files, threads or exit handlers of their own once they return
_QUICK_FAST_PATHS = ("peer-exec", "rpc")


def _fast_path(argv: Sequence[str]) -> int | None:
    """Commands run by machines, many times, that must not pay even for argparse: the forced command of
    peer keys and the agent bridge (both run once per SSH session on a node: a replication waits for
    the receiving one to start and to end), and the volume driver's node-side exports change and volume
    file operations."""
    if list(argv[:1]) == ["peer-exec"]:
        from ..agent.peer_exec import main as peer_exec

        return peer_exec(argv=list(argv[1:]))
    if list(argv[:1]) == ["exports-change"] and len(argv) == 1:  # the driver's, once per exports change
        from ..driver.exports_node import main as exports_change

        return exports_change(sys.stdin, sys.stdout)
    if list(argv[:1]) == ["volume-file"]:
        from ..driver.volume_file import main as volume_file

        return volume_file(argv[1:], sys.stdout)
    if list(argv[:1]) == ["rpc"] and set(argv[1:]) <= {"--peer"}:
        from ..config import load_settings
        from ..rpc.rpc_bridge import rpc_bridge

        return rpc_bridge(load_settings(), peer="--peer" in argv)
    return None


def _quick_exit(rc: int) -> NoReturn:
    """Leave without the interpreter's teardown (about 25 ms here, a tenth of a short command's whole
    cost): only for commands that mark themselves ``quick_exit`` — clients that talk to agents over a
    socket and hold no files, child processes, threads or exit handlers of their own. What they printed
    is flushed first."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(rc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default: this process's arguments, and then a command marked
    ``quick_exit`` ends the process itself)."""
    args_in = sys.argv[1:] if argv is None else list(argv)
    fast = _fast_path(args_in)
    if fast is not None:
        if argv is None and args_in[0] in _QUICK_FAST_PATHS:
            _quick_exit(fast)
        return fast
    parser = build_parser(_command_of(args_in))
    try:
        args = parser.parse_args(args_in)
    except ZfsBackendError as e:  # a ``type=`` function refused a value (cli/numbers.py): one line
        print(f"zfs-backend: error: {e}", file=sys.stderr)
        return e.exit_code
    quick_exit = bool(getattr(args, "quick_exit", False))
    if args.verbose or not quick_exit:
        # a client command (quick_exit) logs nothing of its own: it does not load logging (~12 ms) unless
        # asked to; a warning from below still reaches stderr, as its bare message
        import logging

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
    if argv is None and quick_exit:
        _quick_exit(int(rc or 0))
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
