"""``scripts/bench replicate``: our replication vs a plain ``zfs send | ssh | zfs recv``, on the lab.

Side by side in one run on the same link (node1 → node2 of a lab of its own, with agents):

* throughput: median of ``--repeats`` full streams of ``--size`` MiB, ours (the ``replicate``
  activity on node1's agent; time from running to succeeded, as the activity reports it) vs a plain
  pipeline run *on node1* (``zfs send | ssh -c CIPHER node2 zfs recv``, timed on the node); ratio =
  plain seconds / our seconds (target ≥ 0.95);
* incremental stream bytes / changed bytes;
* seconds from ``cancel()`` to the destination rolled back (target < 2 s);
* bytes moved after ``suspend()`` returned;
* peak RSS of the agent process (sampled) during a ``--big`` MiB stream.

Defaults are the issue's (512 MiB, 5 repeats, 1 GiB); ``--quick`` runs 64 MiB x 3 and 256 MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from dataclasses import dataclass

import psutil
from rich.console import Console
from rich.table import Table

from zfs_backend.config import Settings, load_settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab
from zfs_backend.replication import snapshot_replicate
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

MiB = 1 << 20
SRC, DST = "node1", "node2"
_PLAIN = (
    's=$(date +%s.%N); zfs send "$1" | ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -c "$2" '
    '"$3" zfs recv "$4" || exit 1; e=$(date +%s.%N); echo "$s $e"'
)


@dataclass
class Ctx:
    lab: Lab
    src: SSHHost
    dst: SSHHost
    settings: Settings
    agents: dict[str, object]


def _node_for(ctx: Ctx):  # type: ignore[no-untyped-def]
    from zfs_backend.agent.connect import connect_node

    def get(name: str):  # type: ignore[no-untyped-def]
        if name not in ctx.agents:
            ctx.agents[name] = connect_node(name, ctx.settings)  # type: ignore[arg-type]
        return ctx.agents[name]

    return get


def _write(h: SSHHost, ds: str, file: str, mib: int) -> None:
    z = Zfs(h)
    if not z.exists(parse_dataset(ds)):
        z.create(parse_dataset(ds), props={"compression": "off"})
    h.run(["dd", "if=/dev/urandom", f"of=/{ds}/{file}", "bs=1M", f"count={mib}", "status=none"], timeout=900)


def _drop(h: SSHHost, ds: str) -> None:
    Zfs(h).destroy(parse_dataset(ds), recursive=True, missing_ok=True, deadline=30)


def _ours(ctx: Ctx, snap: str, dest: str, **kw):  # type: ignore[no-untyped-def]
    return snapshot_replicate(
        f"{SRC}:{snap}", None, f"{DST}:{dest}", settings=ctx.settings, node_for=_node_for(ctx), **kw
    )


def throughput(ctx: Ctx, size: int, repeats: int, cipher: str) -> dict[str, float]:
    _write(ctx.src, "tank/bench", "data", size)
    Zfs(ctx.src).snapshot(parse_snapshot("tank/bench@t"))
    ours, plain = [], []
    for _ in range(repeats):
        _drop(ctx.dst, "tank/bench-plain")
        res = ctx.src.run(
            ["sh", "-c", _PLAIN, "bench", "tank/bench@t", cipher, DST, "tank/bench-plain"], timeout=1800
        )
        s, e = (float(x) for x in res.text.split())
        plain.append(e - s)
        _drop(ctx.dst, "tank/bench-plain")
        _drop(ctx.dst, "tank/bench")
        act = _ours(ctx, "tank/bench@t", "tank/bench", cipher=cipher)
        assert act.wait(1800) == "succeeded", act.record()
        ours.append(act.resources().elapsed_s)
        _drop(ctx.dst, "tank/bench")
    mo, mp = statistics.median(ours), statistics.median(plain)
    return {"ours_s": mo, "plain_s": mp, "ours_mibs": size / mo, "plain_mibs": size / mp, "ratio": mp / mo}


def incremental(ctx: Ctx, changed: int) -> dict[str, float]:
    _drop(ctx.dst, "tank/bench")
    assert _ours(ctx, "tank/bench@t", "tank/bench").wait(1800) == "succeeded"
    _write(ctx.src, "tank/bench", "more", changed)
    Zfs(ctx.src).snapshot(parse_snapshot("tank/bench@t2"))
    act = _ours(ctx, "tank/bench@t2", "tank/bench")
    assert act.wait(600) == "succeeded", act.record()
    n = act.progress[0]
    return {"stream": n, "changed": changed * MiB, "ratio": n / (changed * MiB)}


def _until(act, nbytes: int, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while act.progress[0] < nbytes and time.monotonic() < deadline:
        time.sleep(0.05)


def cancel_and_suspend(ctx: Ctx, size: int) -> dict[str, float]:
    _drop(ctx.dst, "tank/bench")
    out: dict[str, float] = {}
    act = _ours(ctx, "tank/bench@t", "tank/bench", bwlimit=64 * MiB)
    _until(act, min(64 * MiB, size * MiB // 4))
    act.suspend()
    n0 = act.progress[0]
    time.sleep(3)
    out["after_suspend"] = act.progress[0] - n0
    act.resume()
    _until(act, n0 + 16 * MiB)
    t0 = time.monotonic()
    act.cancel()
    while act.state != "cancelled" or Zfs(ctx.dst).exists(parse_dataset("tank/bench")):
        if time.monotonic() - t0 > 60:
            break
        time.sleep(0.02)
    out["cancel_s"] = time.monotonic() - t0
    return out


def agent_rss(ctx: Ctx, big: int) -> dict[str, float]:
    _drop(ctx.dst, "tank/bench-big")
    _drop(ctx.src, "tank/bench-big")
    _write(ctx.src, "tank/bench-big", "data", big)
    Zfs(ctx.src).snapshot(parse_snapshot("tank/bench-big@t"))
    st = ctx.lab.state
    assert st is not None
    proc = psutil.Process(st.pids[SRC]["agent"])
    peak = proc.memory_info().rss
    before = peak
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.Error:
                return

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    act = _ours(ctx, "tank/bench-big@t", "tank/bench-big")
    ok = act.wait(1800)
    stop.set()
    th.join()
    rec = act.record()
    _drop(ctx.dst, "tank/bench-big")
    _drop(ctx.src, "tank/bench-big")
    return {
        "state_ok": float(ok == "succeeded"),
        "bytes": rec.progress.done,
        "agent_rss_before": before,
        "agent_rss_peak": peak,
        "activity_peak_rss": rec.resources.peak_rss_bytes,
        "cpu_s": rec.resources.cpu_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench replicate", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512, help="MiB per throughput run (default 512)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each side (median; default 5)")
    ap.add_argument("--changed", type=int, default=32, help="MiB changed for the incremental (default 32)")
    ap.add_argument("--big", type=int, default=1024, help="MiB of the RSS run (default 1024)")
    ap.add_argument("--cipher", default="aes128-gcm@openssh.com")
    ap.add_argument("--quick", action="store_true", help="64 MiB x 3, RSS on 256 MiB")
    ap.add_argument("--home", default="/var/lib/zfs-backend-bench", help="the benchmark lab's state dir")
    ap.add_argument("--network", default="198.18.110.0/24")
    ap.add_argument("--down", action="store_true", help="take the benchmark lab down afterwards")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.repeats, a.big = 64, 3, 256
    con = Console()
    settings = load_settings({**os.environ, "ZFS_BACKEND_HOME": a.home, "ZFS_BACKEND_LAB_NETWORK": a.network})
    lab = Lab(settings)
    pool = max(1 << 30, (max(a.size, a.big) * 2 + 512) * MiB)
    st = lab.state
    if st is not None and (st.pool_size < pool or len(st.nodes) != 2):
        con.print("  the benchmark lab's pools are too small for these sizes: recreating it")
        lab.down()
        lab = Lab(settings)
    lab.up(nodes=2, pool_size=pool, with_agent=True, on_step=lambda m: con.print(f"  {m}"))
    inv = load_inventory(settings.inventory)
    ctx = Ctx(lab, inv.connect(SRC, settings), inv.connect(DST, settings), settings, {})
    try:
        for h in (ctx.src, ctx.dst):
            for ds in ("tank/bench", "tank/bench-plain", "tank/bench-big"):
                _drop(h, ds)
        con.print(f"throughput: {a.size} MiB x {a.repeats}, cipher {a.cipher} …")
        tp = throughput(ctx, a.size, a.repeats, a.cipher)
        con.print("incremental …")
        inc = incremental(ctx, a.changed)
        con.print("suspend / cancel …")
        cs = cancel_and_suspend(ctx, a.size)
        con.print(f"agent RSS over a {a.big} MiB stream …")
        rss = agent_rss(ctx, a.big)
    finally:
        for h in (ctx.src, ctx.dst):
            for ds in ("tank/bench", "tank/bench-plain", "tank/bench-big"):
                try:
                    _drop(h, ds)
                except Exception as e:
                    con.print(f"cleanup {h.name}:{ds}: {e}")
        if a.down:
            lab.down()
    t = Table(title=f"replicate benchmark ({SRC} → {DST}, lab {a.network})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("target")
    t.add_row(
        f"plain send|ssh|recv, median of {a.repeats}",
        f"{tp['plain_mibs']:.0f} MiB/s ({tp['plain_s']:.2f} s)",
        "",
    )
    t.add_row("ours (replicate activity)", f"{tp['ours_mibs']:.0f} MiB/s ({tp['ours_s']:.2f} s)", "")
    t.add_row("ratio ours / plain", f"{tp['ratio']:.3f}", "≥ 0.95")
    t.add_row(f"incremental stream / changed ({a.changed} MiB)", f"{inc['ratio']:.4f}", "≤ 1.05 + 1 MiB")
    t.add_row("cancel() → rolled back", f"{cs['cancel_s']:.2f} s", "< 2 s")
    t.add_row("bytes moved after suspend()", f"{cs['after_suspend']:.0f} B", "0 (≤ 1 chunk)")
    t.add_row(
        f"agent peak RSS, {a.big} MiB stream",
        f"{rss['agent_rss_peak'] / MiB:.1f} MiB (idle {rss['agent_rss_before'] / MiB:.1f})",
        "flat",
    )
    t.add_row(
        "activity peak RSS (send+ssh) / CPU",
        f"{rss['activity_peak_rss'] / MiB:.1f} MiB / {rss['cpu_s']:.1f} s",
        "",
    )
    con.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
