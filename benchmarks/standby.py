"""``scripts/bench standby``: a hot standby as its user sees it, on a lab of its own (node1, node2).

A writer writes fresh random data to the volume through NFS at ``--rate`` MiB/s (64 KiB writes, each
fsynced: acknowledged) from the controller's address, following the volume wherever it is. Measured:

* ``standby create`` from the command line, wall clock until it exits (seeded and in sync);
* **lag** every 0.25 s for ``--duration`` s with ``--interval`` s between syncs: the age of the newest
  snapshot the standby holds (what a forced failover would lose), p50 / p99 / max (goal: p99 at most
  interval + 1 s);
* a sync's duration (snapshot, stream, commit) p50 / p99 and its phases;
* **bytes per sync over bytes written**: the standby-sync's streamed bytes over the bytes the writer had
  acknowledged in the same window;
* **controlled failover**, ``--failovers`` times back and forth: the command's wall clock, and the time
  the writer could not write (its longest gap between two acknowledged writes around the failover;
  goal < 5 s); afterwards every acknowledged write is read back from wherever the volume is
  (checksums): lost writes must be 0.

``--json FILE`` (``-``: stdout) writes every sample. Timing is never asserted anywhere: this is the place
for figures.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from zfs_backend.config import Settings, load_settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.lab import Lab, nfs
from zfs_backend.rpc.connect import connect_node

MiB = 1 << 20
CLI = [sys.executable, "-m", "zfs_backend.cli.main"]


class Writer(threading.Thread):
    def __init__(self, svc: VolumeService, volume: str, rate: float, block: int = 64 << 10) -> None:
        super().__init__(daemon=True)
        self.svc, self.volume, self.rate, self.block = svc, volume, rate, block
        self.acked: dict[int, tuple[str, float]] = {}
        self.ack_times: list[float] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def location(self) -> tuple[str, str]:
        db = VolumeService(self.svc.settings, db_path=self.svc.db_path)
        loc = db.get_volume(self.volume).provider_location or ""
        addr, path = loc.split(":", 1)
        return addr, path

    def run(self) -> None:
        client = None
        off, t0 = 0, time.monotonic()
        while not self.stop.is_set():
            if client is None:
                try:
                    client = nfs.NfsClient(*self.location(), timeout_ms=5000)
                except (nfs.NfsError, ValueError):
                    self.stop.wait(0.1)
                    continue
            data = os.urandom(self.block)
            try:
                client.pwrite("/volume", off, data)
            except nfs.NfsError:
                client.close()
                client = None
                self.stop.wait(0.1)
                continue
            now = time.time()
            with self.lock:
                self.acked[off] = (hashlib.sha256(data).hexdigest(), now)
                self.ack_times.append(now)
            off += self.block
            ahead = t0 + off / self.rate - time.monotonic()
            if ahead > 0:
                self.stop.wait(ahead)
        if client is not None:
            client.close()

    def bytes_between(self, a: float, b: float) -> int:
        with self.lock:
            return sum(1 for t in self.ack_times if a <= t <= b) * self.block

    def longest_gap(self, a: float, b: float) -> float:
        with self.lock:
            ts = [t for t in self.ack_times if a - 5 <= t <= b + 5]
        return max((y - x for x, y in itertools.pairwise(ts)), default=float("nan"))

    def lost(self, svc: VolumeService) -> int:
        addr, path = self.location()
        bad = 0
        with nfs.NfsClient(addr, path) as c:
            for off, (digest, _at) in sorted(self.acked.items()):
                if hashlib.sha256(c.pread("/volume", off, self.block)).hexdigest() != digest:
                    bad += 1
        return bad


def cli(settings: Settings, *args: str) -> tuple[float, str]:
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
    }
    t0 = time.monotonic()
    r = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"`zfs-backend {' '.join(args)}` failed: {r.stderr.strip()}")
    return took, r.stdout


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench standby", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rate", type=float, default=1.0, help="MiB/s the writer writes (default 1)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between syncs (default 5)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of lag sampling (default 60)")
    ap.add_argument(
        "--failovers", type=int, default=3, help="controlled failovers, back and forth (default 3)"
    )
    ap.add_argument("--json", metavar="FILE", help="write every sample as JSON ('-': stdout)")
    ap.add_argument(
        "--home", default="/var/lib/zfs-backend-bench-standby", help="the benchmark lab's state dir"
    )
    ap.add_argument("--network", default="198.18.113.0/24")
    ap.add_argument("--down", action="store_true", help="take the benchmark lab down afterwards")
    a = ap.parse_args(argv)
    con = Console(stderr=a.json == "-", highlight=False)
    settings = load_settings(
        {
            **os.environ,
            "ZFS_BACKEND_HOME": a.home,
            "ZFS_BACKEND_LAB_NETWORK": a.network,
            "ZFS_BACKEND_JOBBOARD": "",
        }
    )
    lab = Lab(settings)
    lab.up(nodes=2, with_agent=True, on_step=lambda m: con.print(f"  {m}"))
    svc = VolumeService(settings)
    vol = f"bench-{int(time.time())}"
    svc.create_volume(vol, 1, "node1")
    svc.attach(vol, {"ip": lab.layout.controller_address})
    w = Writer(svc, vol, a.rate * MiB)
    w.start()
    out: dict[str, Any] = {"rate_mib_s": a.rate, "interval_s": a.interval}
    try:
        time.sleep(2.0)
        con.print(f"standby create {vol} --standby node2 --interval {a.interval:g} …")
        out["create_s"], _ = cli(
            settings, "standby", "create", vol, "--standby", "node2", "--interval", str(a.interval)
        )
        rel = svc.replication(vol)
        assert rel is not None and rel.activity_id
        agent = connect_node("node1", settings)
        act = agent.get(rel.activity_id)
        con.print(f"lag, {a.duration:g} s at {a.rate:g} MiB/s …")
        time.sleep(a.interval)  # the first syncs after the seed
        lags: list[float] = []
        syncs: dict[float, dict[str, Any]] = {}
        t_start, r0 = time.time(), act.record().result
        first = float((r0.get("newest") or {}).get("taken_at") or t_start)
        while time.time() - t_start < a.duration:
            res = act.record().result
            newest = res.get("newest") or {}
            if newest.get("taken_at"):
                lags.append(time.time() - float(newest["taken_at"]))
            ls = res.get("last_sync") or {}
            if ls.get("at"):
                syncs[float(ls["at"])] = ls
            time.sleep(0.25)
        t_end, r1 = time.time(), act.record().result
        streamed = int(r1.get("total_bytes", 0)) - int(r0.get("total_bytes", 0))
        last = float((r1.get("newest") or {}).get("taken_at") or t_end)
        written = w.bytes_between(first, last)  # what the snapshots streamed in the window hold
        durs = [float(s["duration_s"]) for s in syncs.values()]
        phases = (
            {
                k: statistics.median(float(s["phases_s"][k]) for s in syncs.values())
                for k in ("snapshot", "expect", "stream", "commit")
            }
            if syncs
            else {}
        )
        out.update(
            lags=lags,
            lag_p50=pct(lags, 50),
            lag_p99=pct(lags, 99),
            lag_max=max(lags, default=float("nan")),
            sync_s=durs,
            sync_p50=pct(durs, 50),
            sync_p99=pct(durs, 99),
            sync_phases_p50=phases,
            bytes_streamed=streamed,
            bytes_written=written,
            ratio=streamed / written if written else float("nan"),
        )
        agent.close()
        fo: list[dict[str, float]] = []
        for i in range(a.failovers):
            time.sleep(max(3.0, a.interval))
            con.print(f"controlled failover {i + 1} …")
            t0 = time.time()
            took, _ = cli(settings, "standby", "failover", vol, "--json")
            t1 = time.time()
            time.sleep(3.0)
            fo.append({"command_s": took, "writer_blocked_s": w.longest_gap(t0, t1)})
        out["failovers"] = fo
        time.sleep(2.0)
    finally:
        w.stop.set()
        w.join(30)
    out["acked_writes"] = len(w.acked)
    out["lost_writes"] = w.lost(svc)
    report(con, out, a)
    with_cleanup(settings, svc, vol)
    if a.down:
        lab.down()
    if a.json:
        text = json.dumps(out, indent=1)
        if a.json == "-":
            print(text)
        else:
            with open(a.json, "w") as f:
                f.write(text + "\n")
    return 0


def report(con: Console, o: dict[str, Any], a: argparse.Namespace) -> None:
    t = Table(title=f"hot standby: {a.rate:g} MiB/s of writes, {a.interval:g} s interval")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("goal / note")
    t.add_row("standby create (CLI, seeded, in sync)", f"{o['create_s']:.2f} s", "")
    t.add_row(
        "lag p50 / p99 / max",
        f"{o['lag_p50']:.2f} / {o['lag_p99']:.2f} / {o['lag_max']:.2f} s",
        f"p99 ≤ {a.interval + 1:g} s",
    )
    t.add_row(
        "sync duration p50 / p99",
        f"{o['sync_p50']:.3f} / {o['sync_p99']:.3f} s",
        ", ".join(f"{k} {v:.3f}" for k, v in o["sync_phases_p50"].items()),
    )
    t.add_row(
        "bytes per sync / bytes written",
        f"{o['ratio']:.3f}",
        f"{o['bytes_streamed'] >> 20} MiB streamed for {o['bytes_written'] >> 20} MiB written",
    )
    for i, f in enumerate(o["failovers"], 1):
        t.add_row(
            f"controlled failover {i}: writer blocked",
            f"{f['writer_blocked_s']:.2f} s",
            f"< 5 s; the command took {f['command_s']:.2f} s",
        )
    t.add_row("acknowledged writes lost", f"{o['lost_writes']} of {o['acked_writes']}", "0")
    con.print(t)


def with_cleanup(settings: Settings, svc: VolumeService, vol: str) -> None:
    from zfs_backend.flows.env import FlowEnv, set_env
    from zfs_backend.flows.standby import standby_remove

    e = FlowEnv(settings)
    set_env(e)
    try:
        standby_remove(vol)
        svc.detach(vol)
        svc.delete_volume(vol)
    except Exception as ex:  # a benchmark leaves the lab for inspection rather than failing here
        print(f"cleanup of {vol} incomplete: {ex}", file=sys.stderr)
    finally:
        e.close()


if __name__ == "__main__":
    raise SystemExit(main())
