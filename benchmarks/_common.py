"""What several benchmarks share: a two-node lab of their own, the command line timed as a user runs it,
and the ``--json`` output."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zfs_backend.config import Settings, load_settings
from zfs_backend.hosts import load_inventory
from zfs_backend.hosts.base import Host
from zfs_backend.lab import Lab


def lab_options(ap: argparse.ArgumentParser, home: str, network: str) -> None:
    """``--home``, ``--network``, ``--down``, ``--json``: the options of a benchmark on a lab of its own."""
    ap.add_argument("--home", default=home, help="the benchmark lab's state dir")
    ap.add_argument("--network", default=network)
    ap.add_argument("--down", action="store_true", help="take the lab down at the end")
    ap.add_argument("--json", help="write the figures to FILE (- for stdout)")


def two_node_lab(a: argparse.Namespace, pool_size: int) -> tuple[Settings, Lab, Host, Host]:
    """The benchmark's lab (``a.home``, ``a.network``) up with node1 and node2, and a host for each."""
    settings = load_settings({**os.environ, "ZFS_BACKEND_HOME": a.home, "ZFS_BACKEND_LAB_NETWORK": a.network})
    lab = Lab(settings)
    lab.up(nodes=2, pool_size=pool_size)
    inv = load_inventory(settings.inventory)
    return settings, lab, inv.connect("node1", settings), inv.connect("node2", settings)


#: the checkout's own command line (the benchmark's virtualenv)
BIN = str(Path(sys.prefix) / "bin" / "zfs-backend")


def cli(settings: Settings, *args: str, timeout: float = 3600) -> float:
    """Wall clock of ``zfs-backend ARGS`` on the benchmark lab, from the call to its exit; a failure
    stops the benchmark naming the command."""
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
    }
    t0 = time.monotonic()
    r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"`zfs-backend {' '.join(args)}` failed: {r.stderr.strip()}")
    return took


def write_json(dest: str, figures: Any) -> None:
    """``--json FILE``: the figures, indented; ``-`` writes them to standard output."""
    text = json.dumps(figures, indent=1)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n")


#: where ``scripts/vagrant-tier up`` writes the VMs' inventory (its ``$ZFS_BACKEND_VAGRANT_STATE``)
VAGRANT_STATE = "/var/lib/zfs-backend-vagrant"


def vagrant_settings(home: str) -> tuple[Settings, list[str]]:
    """A benchmark on the Vagrant tier's OpenZFS VMs (docs/vagrant.md), which must be up: the controller's
    settings (a home of the benchmark's own, the tier's inventory, as tests/vagrant gets it:
    ``$ZFS_BACKEND_VAGRANT_INVENTORY``, else ``$ZFS_BACKEND_VAGRANT_STATE/inventory.yml``) and the VMs'
    names, sorted."""
    state = os.environ.get("ZFS_BACKEND_VAGRANT_STATE", VAGRANT_STATE)
    inv = os.environ.get("ZFS_BACKEND_VAGRANT_INVENTORY") or f"{state}/inventory.yml"
    if not Path(inv).is_file():
        raise SystemExit(f"no Vagrant tier: {inv} does not exist (scripts/vagrant-tier up)")
    settings = load_settings({**os.environ, "ZFS_BACKEND_HOME": home, "ZFS_BACKEND_INVENTORY": inv})
    names = sorted(load_inventory(settings.inventory).names)
    if len(names) < 2:
        raise SystemExit(f"the Vagrant tier has {len(names)} VM(s), the benchmark needs two")
    return settings, names
