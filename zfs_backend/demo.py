"""The demo: bring the default lab up and replicate a dataset from node1 to node2, verifying the data.

It reaches the nodes only through the lab's inventory and SSH, like a controller reaching real
storage nodes.
"""

from __future__ import annotations

import time

from rich.console import Console

from .config import Settings
from .hosts import load_inventory
from .lab import Lab, parse_size
from .zfs import Zfs, parse_dataset, parse_snapshot

__all__ = ["run_demo"]

# node1 streams to node2 itself; paths and names reach the script as positional parameters only.
_NODE_TO_NODE = 'zfs send "$1" | ssh -o BatchMode=yes "$2" zfs recv "$3"'


def run_demo(settings: Settings, size: str = "64M") -> int:
    con = Console(highlight=False)
    nbytes = parse_size(size)
    lab = Lab(settings)
    con.rule("[bold]zfs_backend demo")
    t0 = time.monotonic()
    created = lab.up(nodes=2, on_step=lambda m: con.print(f"  {m}"))
    con.print(
        f"lab {'up' if created else 'already up'} in {time.monotonic() - t0:.1f} s ({lab.layout.inventory})"
    )

    inv = load_inventory(settings.inventory)
    src, dst = inv.connect("node1", settings), inv.connect("node2", settings)
    with src, dst:
        zsrc, zdst = Zfs(src), Zfs(dst)
        fs, copy = parse_dataset("tank/demo"), parse_dataset("tank/demo-copy")
        snap = parse_snapshot("tank/demo@demo1")
        for z, name in ((zsrc, fs), (zdst, copy)):
            z.destroy(name, recursive=True, missing_ok=True)

        con.print(f"[bold]node1[/]: create {fs}, write {size} of random data, snapshot {snap}")
        zsrc.create(fs)
        mnt = zsrc.mountpoint(fs) or "/tank/demo"
        src.run(
            [
                "dd",
                "if=/dev/urandom",
                f"of={mnt}/data",
                "bs=1M",
                f"count={max(1, nbytes >> 20)}",
                "status=none",
            ],
            timeout=600,
        )
        zsrc.snapshot(snap)
        want = src.run(["sha256sum", f"{mnt}/data"]).text.split()[0]

        con.print(f"[bold]node1 → node2[/]: zfs send {snap} | ssh node2 zfs recv {copy}")
        t1 = time.monotonic()
        with con.status("streaming…"):
            src.run(
                ["sh", "-c", _NODE_TO_NODE, "zfs-backend-demo", str(snap), "node2", str(copy)], timeout=3600
            )
        dt = time.monotonic() - t1

        got = dst.run(["sha256sum", f"{zdst.mountpoint(copy) or '/tank/demo-copy'}/data"]).text.split()[0]
        src_guid = zsrc.get(snap, ["guid"])["guid"]
        dst_guid = zdst.get(parse_snapshot("tank/demo-copy@demo1"), ["guid"])["guid"]
        ok = got == want and src_guid == dst_guid
        con.print(f"  {nbytes / dt / (1 << 20):.0f} MiB/s over {dt:.1f} s")
        con.print(f"  sha256 node1 {want[:16]}…  node2 {got[:16]}…  snapshot guid {src_guid} / {dst_guid}")
        con.print("[green]verified: same data, same snapshot[/]" if ok else "[red]MISMATCH[/]")
    return 0 if ok else 1
