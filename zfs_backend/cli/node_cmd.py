"""``zfs-backend exports-change`` and ``zfs-backend volume-file``: what the volume driver runs on a node
over SSH (not for interactive use). The first applies one change to the NFS exports file under the
node's lock (:mod:`zfs_backend.driver.exports_node`), the second sizes or sets the owner and mode of a
volume's ``volume`` file, a regular file or nothing (:mod:`zfs_backend.driver.volume_file`). Both
answer one JSON object on stdout."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = sub.add_parser(
        "exports-change",
        help="apply one exports change (JSON on stdin) under the node's lock; run by the driver",
    )
    e.set_defaults(func=_exports_change)
    v = sub.add_parser(
        "volume-file",
        help="size (truncate) or set the owner and mode of (access) a volume's file; run by the driver",
    )
    v.add_argument("words", nargs=argparse.REMAINDER, metavar="truncate MP SIZE | access MP UID GID MODE")
    v.set_defaults(func=_volume_file)


def _exports_change(args: argparse.Namespace) -> int:
    from ..driver.exports_node import main

    return main(sys.stdin, sys.stdout)


def _volume_file(args: argparse.Namespace) -> int:
    from ..driver.volume_file import main

    return main(args.words, sys.stdout)
