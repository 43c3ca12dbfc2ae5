"""``zfs-backend replicate SRC_NODE:pool/fs@snap DST_NODE:pool/fs``: start a replication on the source
node's agent and follow it (or ``--detach``). Rendering only; the work is in ``zfs_backend.replication``.
"""

from __future__ import annotations

import argparse

from ..activity.handle import BackendActivity
from ..activity.limits import DEFAULT_STALL_TIMEOUT_S, MAX_STALL_TIMEOUT_S, MIN_STALL_TIMEOUT_S
from ..config import load_settings
from ..replication import snapshot_replicate
from ..replication.request import MAX_PARALLEL
from .numbers import seconds, whole
from .progress import start_and_follow
from .render import parse_rate

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replicate",
        help="replicate a snapshot to another node (incremental by GUID), as a backend activity",
        description=(
            "Plans from here (full, or incremental from the newest snapshot both sides hold, matched by "
            "GUID), refuses diverged destinations and short space without changing anything, then runs "
            "`zfs send | ssh DST zfs recv` as an activity on the source node's agent. In the foreground "
            "a progress bar follows it; Ctrl-C cancels it and rolls the destination back. Exit 0 only "
            "on success; 8 when refused by a conflict."
        ),
    )
    p.add_argument("source", metavar="SRC_NODE:pool/fs@snap")
    p.add_argument("destination", metavar="DST_NODE:pool/fs")
    p.add_argument("--full", action="store_true", help="full stream into a new dataset (force_full_copy)")
    p.add_argument("--incremental-from", metavar="SNAP", help="base snapshot (must be common, by GUID)")
    p.add_argument("--intermediates", action="store_true", help="send the snapshots in between too (-I)")
    p.add_argument("--bwlimit", metavar="RATE", help="bandwidth limit, e.g. 20M (bytes/s) or 100mbit")
    p.add_argument(
        "--rollback-destination",
        action="store_true",
        help="discard the destination's snapshots/changes after the common base (irreversible)",
    )
    p.add_argument("--recursive", action="store_true", help="replicate the dataset tree (send -R)")
    p.add_argument("--properties", action="store_true", help="carry the dataset properties (send -p)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="an encrypted dataset as it is on disk (send -w): the key never leaves the source, the "
        "replica stays locked until its key is loaded; refused for a dataset that is not encrypted",
    )
    p.add_argument(
        "--parallel",
        metavar="N",
        type=whole("--parallel", 1, MAX_PARALLEL),
        default=1,
        help=f"with --recursive: N datasets of the tree at a time, one stream each (1-{MAX_PARALLEL})",
    )
    p.add_argument(
        "--stall-timeout",
        metavar="SECONDS",
        type=seconds("--stall-timeout", MIN_STALL_TIMEOUT_S, MAX_STALL_TIMEOUT_S),
        help=f"restart a stream after this long without a byte moved (default {DEFAULT_STALL_TIMEOUT_S:g})",
    )
    p.add_argument("--cipher", help="OpenSSH cipher for the stream (default aes128-gcm@openssh.com)")
    p.add_argument(
        "--compress",
        action="store_true",
        help="zstd on the wire (for slow links; costs CPU, nothing gained on data that does not compress)",
    )
    p.add_argument(
        "--transport",
        choices=("ssh", "tls"),
        help="how the stream crosses: ssh (default, $ZFS_BACKEND_REPLICATION_TRANSPORT) or tls (mutual TLS "
        "between the nodes' certificates, for trusted storage networks; the control stays on ssh)",
    )
    p.add_argument("--detach", action="store_true", help="print the activity id and return")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_replicate, quick_exit=True)


def cmd_replicate(args: argparse.Namespace) -> int:
    settings = load_settings()
    bw = None if args.bwlimit is None else max(1024, parse_rate(args.bwlimit) // 8)

    def start() -> BackendActivity:
        return snapshot_replicate(
            args.source,
            None,
            args.destination,
            args.full,
            incremental_from=args.incremental_from,
            intermediates=args.intermediates,
            bwlimit=bw,
            rollback_destination=args.rollback_destination,
            recursive=args.recursive,
            properties=args.properties,
            cipher=args.cipher,
            compress=args.compress,
            settings=settings,
            parallel=getattr(args, "parallel", 1),
            raw=getattr(args, "raw", False),
            transport=getattr(args, "transport", None),
            extra_params=None if args.stall_timeout is None else {"stall_timeout_s": args.stall_timeout},
        )

    # Ctrl-C while the agents grant and start it is noted, and cancels it as soon as it is followed
    label = f"{args.source} → {args.destination}"
    return start_and_follow(start, label=label, as_json=args.json, detach=args.detach)
