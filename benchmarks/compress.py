"""``scripts/bench compress``: ``replicate --compress`` against the plain stream on a slow link.

On a lab of its own (node1, node2), node1's link shaped to ``--mbit`` (default 100 Mbit/s, ``lab link``
shaping: tbf both ways): two datasets of ``--size-mib`` (default 256) on node1, one compressible (each
4 KiB block is 1 KiB of random data and 3 KiB of zeros: zstd -1 ratio about 4) and one of random data.
For each, full copies to node2 from the command line (``zfs-backend replicate``, wall clock until it exits,
the destination destroyed between runs), plain and ``--compress`` in alternating order, ``--repeats``
times each: median [min-max] and the speed-up (goals: ≥ 2x on compressible data, not slower than
0.97x on random data). The ratio zstd -1 reaches on each stream is measured on node1 beforehand.

``--json FILE`` (``-``: stdout) writes every figure. Timing is never asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

from ._common import cli, lab_options, two_node_lab, write_json

MiB = 1 << 20
# on node1: SIZE MiB into FILE, compressible (1 KiB random + 3 KiB zeros per 4 KiB) or random
_FILL = r"""
import os, sys
path, mib, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "wb") as f:
    for _ in range(mib * 256):
        f.write(os.urandom(1024) + bytes(3072) if kind == "compressible" else os.urandom(4096))
"""
_RATIO = (
    'zfs send "$1" > /tmp/bench-stream && zstd -1 -q -c /tmp/bench-stream | wc -c; rm -f /tmp/bench-stream'
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench compress", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="each dataset's data (default 256)")
    ap.add_argument("--mbit", type=float, default=100.0, help="node1's link in Mbit/s (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side (default 3)")
    lab_options(ap, "/var/lib/zfs-backend-bench-compress", "198.18.113.0/24")
    a = ap.parse_args(argv)
    con = Console(stderr=True)
    settings, lab, n1, n2 = two_node_lab(a, max(1 << 30, 3 * a.size_mib * MiB))
    z1, z2 = Zfs(n1), Zfs(n2)
    out: dict[str, Any] = {"size_mib": a.size_mib, "mbit": a.mbit}
    for kind in ("compressible", "random"):
        ds = parse_dataset(f"tank/bench-{kind}")
        if not z1.exists(ds):
            z1.create(ds)
            n1.run(
                [sys.executable, "-c", _FILL, f"{z1.mountpoint(ds)}/data", str(a.size_mib), kind],
                timeout=1800,
            )
            z1.snapshot(parse_snapshot(f"{ds}@s1"))
        sent = int(n1.run(["sh", "-c", _RATIO, "sh", f"{ds}@s1"], timeout=1800).text.split()[-1])
        raw = int(z1.get_int(ds, "referenced") or 0)
        out[kind] = {"zstd_ratio": raw / max(1, sent)}
        con.print(f"{kind}: {raw / MiB:.0f} MiB, zstd -1 ratio {raw / max(1, sent):.2f}")
    lab.shape("node1", int(a.mbit * 1_000_000))
    try:
        for kind in ("compressible", "random"):
            runs: dict[str, list[float]] = {"plain": [], "compress": []}
            for i in range(a.repeats):
                order = ("plain", "compress") if i % 2 == 0 else ("compress", "plain")
                for side in order:
                    dst = parse_dataset(f"tank/bench-dst-{kind}")
                    with contextlib.suppress(Exception):
                        z2.destroy(dst, recursive=True, missing_ok=True, deadline=30)
                    extra = ["--compress"] if side == "compress" else []
                    took = cli(settings, "replicate", f"node1:tank/bench-{kind}@s1", f"node2:{dst}", *extra)
                    runs[side].append(took)
                    con.print(f"{kind} {side}: {took:.2f} s")
            med = {s: statistics.median(v) for s, v in runs.items()}
            out[kind].update(
                {
                    s: {"median_s": med[s], "min_s": min(v), "max_s": max(v), "runs_s": v}
                    for s, v in runs.items()
                }
            )
            out[kind]["speedup"] = med["plain"] / med["compress"]
    finally:
        lab.shape("node1", None)
    report(out, a)
    if a.down:
        lab.down()
    if a.json:
        write_json(a.json, out)
    return 0


def report(o: dict[str, Any], a: argparse.Namespace) -> None:
    t = Table(title=f"replicate --compress: {a.size_mib} MiB full copies on a {a.mbit:g} Mbit/s link (CLI)")
    for col in ("data", "zstd -1 ratio", "plain, median [min-max]", "--compress", "speed-up", "goal"):
        t.add_column(col)
    for kind, goal in (("compressible", "≥ 2x"), ("random", "≥ 0.97x")):
        k = o[kind]
        cell = {
            s: f"{k[s]['median_s']:.2f} [{k[s]['min_s']:.2f}-{k[s]['max_s']:.2f}] s"
            for s in ("plain", "compress")
        }
        t.add_row(
            kind, f"{k['zstd_ratio']:.2f}", cell["plain"], cell["compress"], f"{k['speedup']:.2f}x", goal
        )
    Console().print(t)


if __name__ == "__main__":
    raise SystemExit(main())
