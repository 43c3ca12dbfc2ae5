"""``scripts/bench activity``: the cost of hosting a byte stream as a backend activity.

On a lab of its own (agents with ``--test-kinds``: the generic ``pipeline`` kind runs on its own node
only), measured side by side in one run:

* status query latency from the controller (one session: the node agent's socket forwarded over an SSH
  master) with 20 activities running: p50 / p99 (target p99 < 50 ms);
* relay throughput: the same stream on node1 (``dd`` of random data into ``cat``), as a plain shell
  pipe and as a pipeline activity hosted by node1's agent, alternated, median of ``--repeats`` (target
  ratio >= 0.95; the network side of the relay is measured by ``scripts/bench replicate``);
* bytes that reach the consumer after ``suspend()`` returned (target: 0 beyond one in-flight chunk);
* the agent's peak RSS during a 1 GiB stream (target < 100 MB).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import psutil
from rich.console import Console
from rich.table import Table

from zfs_backend.config import load_settings
from zfs_backend.hosts import load_inventory
from zfs_backend.lab import Lab
from zfs_backend.rpc.connect import connect_node

MiB = 1 << 20
# Runs on node1; the sizes and paths reach it as positional parameters.
_PLAIN = (
    't0=$(date +%s.%N); dd if="$1" bs=1M status=none | cat > /dev/null; t1=$(date +%s.%N); echo "$t0 $t1"'
)


def _pipeline(src: str, consumer: list[str], bwlimit: int | None = None, total: int = 0) -> dict[str, object]:
    p: dict[str, object] = {
        "producer": {"host": "local", "argv": ["dd", f"if={src}", "bs=1M", "status=none"]},
        "consumer": {"host": "local", "argv": consumer},
        "restart": "none",
        "total": total,
    }
    if bwlimit:
        p["bwlimit_bps"] = bwlimit
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench activity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="stream size for the throughput ratio")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each side (median)")
    ap.add_argument("--queries", type=int, default=300, help="status queries for the latency figure")
    ap.add_argument(
        "--home", default="/var/lib/zfs-backend-bench-activity", help="the benchmark lab's state dir"
    )
    ap.add_argument("--network", default="198.18.111.0/24")
    args = ap.parse_args(argv)
    con = Console()
    settings = load_settings(
        {**os.environ, "ZFS_BACKEND_HOME": args.home, "ZFS_BACKEND_LAB_NETWORK": args.network}
    )
    lab = Lab(settings)
    st = lab.state
    if st is not None and not st.test_kinds:
        lab.down()
        lab = Lab(settings)
    lab.up(nodes=2, test_kinds=True)
    inv = load_inventory(settings.inventory)
    n1 = inv.connect("node1", settings)
    node = connect_node("node1", settings)
    rows: list[tuple[str, str, str, str]] = []
    size = args.size_mib * MiB
    src = "/tmp/bench-src"
    n1.run(
        ["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={args.size_mib}", "status=none"], timeout=600
    )

    # 1. throughput, alternating plain and activity
    plain, ours = [], []
    for _ in range(args.repeats):
        t0, t1 = map(float, n1.run(["sh", "-c", _PLAIN, "bench", src], timeout=600).text.split())
        plain.append(size / (t1 - t0))
        act = node.start("pipeline", _pipeline(src, ["sh", "-c", "cat > /dev/null"], total=size))
        act.wait(600)
        rec = act.record()
        assert rec.state == "succeeded", rec.error
        ours.append(size / (rec.finished_at - rec.started_at))  # type: ignore[operator]
    ratio = statistics.median(ours) / statistics.median(plain)
    rows.append(
        (
            f"relay throughput ({args.size_mib} MiB, median of {args.repeats})",
            f"{statistics.median(ours) / MiB:.0f} MiB/s vs plain {statistics.median(plain) / MiB:.0f} MiB/s",
            f"ratio {ratio:.3f}",
            ">= 0.95",
        )
    )

    # 2. status latency with 20 running activities
    slow = [
        node.start(
            "pipeline", _pipeline(src, ["sh", "-c", "cat > /dev/null"], bwlimit=256 * 1024, total=size)
        )
        for _ in range(20)
    ]
    time.sleep(1.0)
    lat = []
    probe = slow[0]
    for _ in range(args.queries):
        t = time.perf_counter()
        probe.refresh()  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - t)
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    running = sum(1 for a in node.list("running"))
    rows.append(
        (
            f"status query from the controller ({running} running, {args.queries} queries)",
            f"p50 {p50 * 1000:.1f} ms",
            f"p99 {p99 * 1000:.1f} ms",
            "p99 < 50 ms",
        )
    )
    for a in slow:
        a.cancel()

    # 3. bytes after suspend() returned
    sus_dst = "/tmp/bench-sus"
    act = node.start(
        "pipeline", _pipeline(src, ["dd", f"of={sus_dst}", "bs=1M", "status=none"], 32 * MiB, size)
    )
    while act.progress[0] < 16 * MiB:
        time.sleep(0.05)
    act.suspend()
    n_at = act.progress[0]
    b_at = int(n1.run(["stat", "-c", "%s", sus_dst]).text)
    time.sleep(2.0)
    n_later = act.progress[0]
    b_later = int(n1.run(["stat", "-c", "%s", sus_dst]).text)
    act.cancel()
    rows.append(
        (
            "bytes moved after suspend() returned (2 s)",
            f"relay {n_later - n_at} B",
            f"consumer file +{b_later - b_at} B",
            "0 beyond one chunk (1 MiB)",
        )
    )

    # 4. agent RSS during a 1 GiB stream
    agent_pid = lab.state.pids["node1"]["agent"]  # type: ignore[union-attr]
    proc = psutil.Process(agent_pid)
    peak = proc.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    big = {
        "producer": {"host": "local", "argv": ["head", "-c", str(1 << 30), "/dev/zero"]},
        "consumer": {"host": "local", "argv": ["sh", "-c", "cat > /dev/null"]},
        "total": 1 << 30,
        "restart": "none",
    }
    act = node.start("pipeline", big)
    act.wait(600)
    stop.set()
    th.join()
    rows.append(("agent peak RSS during a 1 GiB stream", f"{peak / MiB:.1f} MiB", act.state, "< 100 MB"))

    n1.run(["rm", "-f", src, sus_dst])
    node.close()
    table = Table(title=f"scripts/bench activity (lab {args.network}, node1)")
    for col in ("measure", "value", "ratio / detail", "target"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    con.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
