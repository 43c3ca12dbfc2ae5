"""``scripts/bench transport``: a full copy over the TLS data channel against the SSH path and a local pipe.

On a lab of its own (node1, node2): a dataset of ``--size-mib`` (default 256) of random data on node1,
then, interleaved in rotating order, ``--repeats`` times each (wall clock from the call to the end,
the destination destroyed between runs):

* ``local``: ``zfs send | zfs recv`` on node1 itself (into another dataset of its pool), the ceiling the
  issue names (run over the controller's SSH command, as a user would);
* ``pipe``: node1's ``zfs send`` piped into node2's ``zfs recv`` on the host (``zfs-backend lab exec``,
  no network, no agent, no cipher): what two nodes' ZFS cost without any wire;
* ``ssh``: ``zfs-backend replicate node1:… node2:…`` as today (the stream inside SSH, aes128-gcm);
* ``tls``: the same with ``--transport tls`` (the stream on the TLS data channel, the control on SSH).

Reported: median [min-max] of each, and tls's speed as a ratio of local's and ssh's (the issue's goals:
≥ 0.9x local, ≥ 1.8x ssh). ``--pump`` also measures the channel alone on node1 (1 GiB through
``tls_send.pump_from_fd`` → ``tls_channel.pump_to_fd`` on loopback, node1's certificate both ways).
``--json FILE`` (``-``: stdout) writes every figure. Timing is never asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

from ._common import BIN, cli, lab_options, two_node_lab, write_json

MiB = 1 << 20
SIDES = ("local", "pipe", "ssh", "tls")
# on node1: the TLS pump alone, loopback, with node1's own files on both ends
_PUMP = r"""
import os, sys, threading, time
from zfs_backend.replication import tls_channel as T, tls_send as S
env = {"ZFS_BACKEND_TLS_DIR": T.DEFAULT_TLS_DIR, "ZFS_BACKEND_TLS_ADDRESS": "127.0.0.1"}
total = int(sys.argv[1]) << 20
lst = T.listen(env)
ctx = T.server_context(env)
watch_r, watch_w = os.pipe()
box = {}
th = threading.Thread(target=lambda: box.update(s=T.accept(lst, ctx, "node1", watch_r, 30)))
th.start()
cli = S.connect("node1", "127.0.0.1", lst.port, lst.token, T.DEFAULT_TLS_DIR)
th.join()
cipher = cli.cipher()[0]
src_r, src_w = os.pipe(); dst_r, dst_w = os.pipe()
def feed():
    block = memoryview(os.urandom(1 << 20)); left = total
    while left:
        left -= os.write(src_w, block[: min(left, len(block))])
    os.close(src_w)
def drain():
    while os.read(dst_r, 1 << 20):
        pass
def recv():
    T.pump_to_fd(box["s"], dst_w); os.close(dst_w)
ts = [threading.Thread(target=f) for f in (feed, drain, recv)]
t0 = time.monotonic()
for t in ts: t.start()
S.pump_from_fd(src_r, cli)
for t in ts: t.join()
print(time.monotonic() - t0, cipher)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench transport", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="the dataset's data (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--pump", action="store_true", help="also time the TLS pump alone on node1 (1 GiB)")
    lab_options(ap, "/var/lib/zfs-backend-bench-transport", "198.18.114.0/24")
    a = ap.parse_args(argv)
    con = Console(stderr=True)
    settings, lab, n1, n2 = two_node_lab(a, max(1 << 30, 3 * a.size_mib * MiB))
    z1, z2 = Zfs(n1), Zfs(n2)
    src = parse_dataset("tank/bench-transport")
    if not z1.exists(src):
        z1.create(src)
        n1.run(
            ["dd", "if=/dev/urandom", f"of={z1.mountpoint(src)}/data", "bs=1M", f"count={a.size_mib}"],
            timeout=1800,
        )
        z1.snapshot(parse_snapshot(f"{src}@s1"))
    local_dst, remote_dst = parse_dataset("tank/bench-local"), parse_dataset("tank/bench-dst")
    runs: dict[str, list[float]] = {s: [] for s in SIDES}
    for i in range(a.repeats):
        order = SIDES[i % len(SIDES) :] + SIDES[: i % len(SIDES)]
        for side in order:
            zfs, dst = (z1, local_dst) if side == "local" else (z2, remote_dst)
            with contextlib.suppress(Exception):
                zfs.destroy(dst, recursive=True, missing_ok=True, deadline=60)
            if side == "local":
                t0 = time.monotonic()
                n1.run(
                    ["sh", "-c", 'zfs send "$1" | zfs recv "$2"', "sh", f"{src}@s1", str(dst)], timeout=1800
                )
                took = time.monotonic() - t0
            elif side == "pipe":
                took = _pipe(settings.home, a.network, f"{src}@s1", str(dst))
            else:
                extra = ["--transport", "tls"] if side == "tls" else []
                took = cli(settings, "replicate", f"node1:{src}@s1", f"node2:{dst}", *extra)
            runs[side].append(took)
            con.print(f"{side}: {took:.2f} s ({a.size_mib / took:.0f} MiB/s)")
    out: dict[str, Any] = {"size_mib": a.size_mib, "repeats": a.repeats, "load": os.getloadavg()}
    for side, v in runs.items():
        out[side] = {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs_s": v}
    out["tls_vs_local"] = out["local"]["median_s"] / out["tls"]["median_s"]
    out["tls_vs_ssh"] = out["ssh"]["median_s"] / out["tls"]["median_s"]
    out["tls_vs_pipe"] = out["pipe"]["median_s"] / out["tls"]["median_s"]
    if a.pump:
        r = n1.run([sys.executable, "-c", _PUMP, "1024"], timeout=600, check=False)
        if r.returncode == 0:
            secs, cipher = r.text.split()
            out["pump"] = {"mib": 1024, "seconds": float(secs), "mib_s": 1024 / float(secs), "cipher": cipher}
        else:
            out["pump"] = {"error": r.err_text.strip()[-300:]}
    report(out)
    if a.down:
        lab.down()
    if a.json:
        write_json(a.json, out)
    return 0


def _pipe(home: Any, network: str, snap: str, dst: str) -> float:
    """node1's ``zfs send`` into node2's ``zfs recv`` through a pipe on the host; its wall clock."""
    import subprocess

    env = {**os.environ, "ZFS_BACKEND_HOME": str(home), "ZFS_BACKEND_LAB_NETWORK": network}
    t0 = time.monotonic()
    send = subprocess.Popen(
        [BIN, "lab", "exec", "node1", "--", "zfs", "send", snap], stdout=subprocess.PIPE, env=env
    )
    recv = subprocess.run(
        [BIN, "lab", "exec", "node2", "--", "zfs", "recv", dst], stdin=send.stdout, env=env, check=False
    )
    assert send.stdout is not None
    send.stdout.close()
    if send.wait() != 0 or recv.returncode != 0:
        raise SystemExit(f"the pipe side failed: send {send.returncode}, recv {recv.returncode}")
    return time.monotonic() - t0


def report(o: dict[str, Any]) -> None:
    t = Table(
        title=f"full {o['size_mib']} MiB, {o['repeats']} runs each, interleaved; load {o['load'][0]:.1f}"
    )
    for col in ("path", "median [min-max]", "MiB/s (median)"):
        t.add_column(col)
    for side in SIDES:
        k = o[side]
        t.add_row(
            side,
            f"{k['median_s']:.2f} [{k['min_s']:.2f}-{k['max_s']:.2f}] s",
            f"{o['size_mib'] / k['median_s']:.0f}",
        )
    Console().print(t)
    Console().print(
        f"tls = {o['tls_vs_local']:.2f}x local (goal ≥ 0.9x), {o['tls_vs_ssh']:.2f}x ssh (goal ≥ 1.8x), "
        f"{o['tls_vs_pipe']:.2f}x the bare cross-node pipe"
    )
    if "pump" in o:
        Console().print(f"TLS pump alone on node1: {o['pump']}")


if __name__ == "__main__":
    raise SystemExit(main())
