"""``scripts/bench scale``: N volumes on node1, each with a hot standby on node2: what grows with N?

On a lab of its own (node1, node2). For each N of ``--standbys`` (default ``1,10``): N volumes on node1,
a standby of each on node2 (``standby create`` through the flows, ``--interval`` s), and one writer on
node1 writing ``--rate`` MiB/s in all (64 KiB fsynced writes, round robin over the volumes' files).
Over ``--duration`` seconds, measured from the controller:

* **lag** of every volume every 0.5 s (the age of the newest snapshot its standby holds, from one
  ``list`` of node1's live activities): p50 / p99 / max over all volumes (goal: p99 ≤ interval + 1 s);
* a sync's duration, p99 over every sync of every volume;
* each agent's CPU seconds per minute (itself and the children it reaped: ``zfs send``, ``ssh``, …), the
  same per sync, and its peak RSS;
* the processes in each node (its mount namespace), and of those ``ssh`` and ``sshd`` (connections).

Then the standbys and volumes go, and the next N starts. ``--json FILE`` (``-``: stdout) writes every
figure (``lag_p99_s`` per N). Timing is never asserted anywhere: this is the place for figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from zfs_backend.config import load_settings
from zfs_backend.flows.env import FlowEnv, set_env
from zfs_backend.flows.standby import standby_create, standby_remove
from zfs_backend.hosts import load_inventory
from zfs_backend.lab import Lab
from zfs_backend.rpc.connect import connect_node

from ._common import write_json

MiB = 1 << 20
# On node1: RATE bytes/s of 64 KiB fsynced random writes, round robin over the files, for SECONDS.
_WRITER = r"""
import os, sys, time
rate, seconds, paths = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
fds = [os.open(p, os.O_WRONLY) for p in paths]
block, span = 65536, 64 << 20
t0, n = time.monotonic(), 0
while time.monotonic() - t0 < seconds:
    fd = fds[n % len(fds)]
    os.pwrite(fd, os.urandom(block), (n // len(fds) * block) % span)
    os.fsync(fd)
    n += 1
    delay = t0 + n * block / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(n * block)
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def _mnt_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def node_processes(agent_pid: int) -> dict[str, int]:
    """Processes in the agent's mount namespace (its node): all, ``ssh`` and ``sshd``."""
    ns = _mnt_ns(agent_pid)
    out = {"processes": 0, "ssh": 0, "sshd": 0}
    for p in psutil.process_iter(["name"]):
        if ns is not None and _mnt_ns(p.pid) == ns:
            out["processes"] += 1
            if p.info["name"] in ("ssh", "sshd"):
                out[p.info["name"]] += 1
    return out


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def run_n(n: int, a: argparse.Namespace, lab: Lab, e: FlowEnv, con: Console) -> dict[str, Any]:
    settings, svc = e.settings, e.service()
    client = lab.layout.controller_address
    vols = [f"scale-{n}-{i}-{int(time.time()) % 100000}" for i in range(n)]
    for v in vols:
        svc.create_volume(v, 1, "node1")
        svc.attach(v, {"ip": client})
    d1 = e.driver("node1")
    paths = [f"{d1.zfs.mountpoint(d1.dataset_of(svc.get_volume(v).model()))}/volume" for v in vols]
    t0 = time.monotonic()
    for v in vols:
        standby_create(settings, v, "node2", interval_s=a.interval)
    created = time.monotonic() - t0
    con.print(f"N={n}: {n} standbys created in {created:.1f} s")
    sync_ids = {str(svc.replication(v).activity_id) for v in vols}  # type: ignore[union-attr]
    st = lab.state
    assert st is not None
    agents = {nd: psutil.Process(st.pids[nd]["agent"]) for nd in ("node1", "node2")}
    inv = load_inventory(settings.inventory)
    n1 = inv.connect("node1", settings)
    written: list[int] = []
    writer = threading.Thread(
        target=lambda: written.append(
            int(
                n1.run(
                    ["python3", "-c", _WRITER, str(a.rate * MiB), str(a.duration + a.interval), *paths],
                    timeout=a.duration + 600,
                ).text.split()[-1]
            )
        ),
        daemon=True,
    )
    writer.start()
    time.sleep(a.interval)  # the first syncs under writes
    node = connect_node("node1", settings)
    cpu0 = {k: cpu_s(p) for k, p in agents.items()}
    rss = {k: p.memory_info().rss for k, p in agents.items()}
    procs: dict[str, dict[str, int]] = {k: {} for k in agents}
    lags: list[float] = []
    syncs: dict[tuple[str, float], float] = {}
    phases: dict[tuple[str, float], dict[str, float]] = {}
    batches: dict[tuple[str, float], int] = {}
    t_start = time.time()
    tick = 0
    while time.time() - t_start < a.duration:
        now = time.time()
        for r in node.client.list(limit=0):
            if r.id not in sync_ids:
                continue
            res = r.result or {}
            taken = (res.get("newest") or {}).get("taken_at")
            if taken:
                lags.append(now - float(taken))
            ls = res.get("last_sync") or {}
            if ls.get("at"):
                syncs[(r.id, float(ls["at"]))] = float(ls.get("duration_s") or 0.0)
                batches[(r.id, float(ls["at"]))] = int((ls.get("batch") or {}).get("commit") or 1)
                phases[(r.id, float(ls["at"]))] = {k: float(v) for k, v in (ls.get("phases_s") or {}).items()}
        for k, p in agents.items():
            rss[k] = max(rss[k], p.memory_info().rss)
        if tick % 10 == 0:
            for k, p in agents.items():
                seen = node_processes(p.pid)
                procs[k] = {m: max(procs[k].get(m, 0), c) for m, c in seen.items()}
        tick += 1
        time.sleep(0.5)
    minutes = (time.time() - t_start) / 60
    cpu = {k: (cpu_s(p) - cpu0[k]) / minutes for k, p in agents.items()}
    node.close()
    writer.join(a.interval + 120)
    durs = list(syncs.values())
    phase_p99 = {
        k: pct([ph[k] for ph in phases.values() if k in ph], 99)
        for k in sorted({k for ph in phases.values() for k in ph})
    }
    out: dict[str, Any] = {
        "n": n,
        "create_s": created,
        "lag_p50_s": pct(lags, 50),
        "lag_p99_s": pct(lags, 99),
        "lag_max_s": max(lags, default=float("nan")),
        "sync_p99_s": pct(durs, 99),
        "syncs": len(durs),
        # where a sync's time goes (snapshot, expect, stream, commit; as each sync reports it)
        "phase_p99_s": phase_p99,
        # how many standbys' commits went in one call to the standby (kinds.standby_pair), on average
        "commit_batch_mean": sum(batches.values()) / max(1, len(batches)),
        "commit_batch_max": max(batches.values(), default=0),
        "written_bytes": written[0] if written else 0,
        "agent_cpu_s_per_min": cpu,
        # the agents' CPU per sync: flat in N means the cost grows with the number of syncs, not bytes
        "agent_cpu_ms_per_sync": {k: 1000 * v * minutes / max(1, len(durs)) for k, v in cpu.items()},
        "agent_rss_bytes": rss,
        "node_processes": procs,
    }
    con.print(
        f"N={n}: lag p99 {out['lag_p99_s']:.2f} s, {len(durs)} syncs, phase p99s "
        + ", ".join(f"{k} {v:.2f}" for k, v in phase_p99.items())
        + "; removing …"
    )
    for v in vols:
        with contextlib.suppress(Exception):
            standby_remove(v)
        with contextlib.suppress(Exception):
            svc.detach(v)
            svc.delete_volume(v)
    n1.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench scale", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--standbys", default="1,10", help="the Ns, comma-separated (default 1,10)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between syncs (default 5)")
    ap.add_argument("--rate", type=float, default=2.0, help="MiB/s written over all volumes (default 2)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured per N (default 60)")
    ap.add_argument(
        "--home", default="/var/lib/zfs-backend-bench-scale", help="the benchmark lab's state dir"
    )
    ap.add_argument("--network", default="198.18.114.0/24")
    ap.add_argument("--down", action="store_true", help="take the lab down at the end")
    ap.add_argument("--json", help="write the figures to FILE (- for stdout)")
    a = ap.parse_args(argv)
    ns = [int(x) for x in a.standbys.split(",") if x.strip()]
    con = Console(stderr=True, highlight=False)
    env = {**os.environ, "ZFS_BACKEND_HOME": a.home, "ZFS_BACKEND_LAB_NETWORK": a.network}
    settings = load_settings({**env, "ZFS_BACKEND_JOBBOARD": ""})
    lab = Lab(settings)
    lab.up(nodes=2, pool_size=max(2 << 30, max(ns) * (128 << 20)))
    e = FlowEnv(settings)
    old = set_env(e)
    try:
        results = [run_n(n, a, lab, e, con) for n in ns]
    finally:
        set_env(old)
        e.close()
    report(results, a)
    if a.down:
        lab.down()
    if a.json:
        write_json(a.json, {"interval_s": a.interval, "rate_mib_s": a.rate, "runs": results})
    return 0


def report(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    t = Table(title=f"hot standbys at scale: {a.rate:g} MiB/s over all volumes, {a.interval:g} s interval")
    for col in (
        "N",
        "lag p50 / p99 / max",
        "sync p99",
        "agent CPU s/min (node1, node2)",
        "agent CPU ms/sync",
        "agent RSS MiB",
        "node1 procs / ssh / sshd",
        "node2 procs / ssh / sshd",
    ):
        t.add_column(col)
    for r in results:
        c, m, p = r["agent_cpu_s_per_min"], r["agent_rss_bytes"], r["node_processes"]
        t.add_row(
            str(r["n"]),
            f"{r['lag_p50_s']:.2f} / {r['lag_p99_s']:.2f} / {r['lag_max_s']:.2f} s",
            f"{r['sync_p99_s']:.2f} s",
            f"{c['node1']:.1f}, {c['node2']:.1f}",
            ", ".join(f"{r['agent_cpu_ms_per_sync'][k]:.0f}" for k in ("node1", "node2")),
            f"{m['node1'] / MiB:.0f}, {m['node2'] / MiB:.0f}",
            *(
                f"{p[k].get('processes', 0)} / {p[k].get('ssh', 0)} / {p[k].get('sshd', 0)}"
                for k in ("node1", "node2")
            ),
        )
    Console().print(t)


if __name__ == "__main__":
    raise SystemExit(main())
