"""``zfs-backend demo``: bring the default lab up and show the main job end to end."""

from __future__ import annotations

import argparse

from ..config import load_settings
from ..lab.topology import parse_size
from .demo import run_demo

__all__ = ["register"]


def _size(text: str) -> str:
    """``text`` once it parses as a lab size (refused with one line before the lab comes up)."""
    parse_size(text)
    return text


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="bring the default lab up and replicate a dataset node1 -> node2",
        description=(
            "Brings the default lab up (if needed), creates a dataset with data on node1, snapshots it, "
            "replicates it to node2 over SSH and verifies the data there, printing each step; then keeps a "
            "hot standby of a volume on node2 and fails over to it (verified through NFS)."
        ),
    )
    p.add_argument("--size", type=_size, default="64M", help="amount of data to write on node1 (default 64M)")
    p.set_defaults(func=lambda args: run_demo(load_settings(), args.size))
