"""``scripts/bench history``: does a long history slow down ``activity list`` and ``top``?

On a lab of its own (node1, node2), node1's agent store is seeded with ``--short`` finished activities
(default 10) and node2's with ``--long`` (default 10,000; realistic records: replicate params,
resources, a result and three events each; the last ten finished in the last ten minutes on both). Then,
alternating node1 and node2 query by query, measured from the controller:

* **API** ``list`` as ``activity list`` asks it (every live activity and the 20 that finished last):
  p50 / p99 over ``--queries`` (goal p99 ≤ 50 ms at 10,000); and with the protocol's default window
  (100: what costs more is the rows returned, not the history kept);
* **API** ``list`` as ``top`` polls it (live, and finished in the last ten minutes): p50 / p99;
* **CLI** ``zfs-backend activity list --node N`` (table) and ``--json``, wall clock until it exits,
  ``--repeats`` times each, median [min-max] (goal ≤ 0.3 s at 10,000), beside ``zfs-backend --help``
  (the command line's fixed cost: Python and its imports, no agent);
* the whole history in one answer (``list(limit=None)``, what every ``list`` returned before the
  window): its time, or the error when it does not fit in one protocol line;
* pruning on the node (``ActivityStore.prune`` down to 1,000, what the agent's retention does), once.

``--json FILE`` (``-``: stdout) writes every figure. Timing is never asserted anywhere: this is the place
for figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from zfs_backend.cli.activity_cmd import SHOWN
from zfs_backend.config import load_settings
from zfs_backend.errors import ZfsBackendError
from zfs_backend.hosts import load_inventory
from zfs_backend.lab import Lab
from zfs_backend.lab.node import NODE_HOME
from zfs_backend.rpc.client import Node
from zfs_backend.rpc.connect import connect_node
from zfs_backend.rpc.protocol import LIST_LIMIT

from ._common import cli, write_json

DB = f"{NODE_HOME}/agent/activities.db"

# Runs on a node (its root sees this installation): seed N finished activities into the agent's store
# (which the running agent has open: WAL, one transaction), or prune it and print the seconds it took.
_SEED = r"""
import json, sys, time
from zfs_backend.activity.store import ActivityStore, new_activity_id
db, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
st = ActivityStore(db)
if mode == "prune":
    t = time.perf_counter(); gone = st.prune(keep=n, max_age_s=1e9); print(gone, time.perf_counter() - t)
    raise SystemExit(0)
now = time.time()
res = json.dumps({"elapsed_s": 1.2, "net_bytes_sent": 33554432, "net_bytes_received": 0, "cpu_s": 0.4,
                  "peak_rss_bytes": 14417920, "rate_bps": 27962026.0, "eta_s": None})
rows, events = [], []
for i in range(n):
    aid = new_activity_id()
    fin = now - 300 + 30 * (i - n + 10) / 10 if i >= n - 10 else now - 600 - 172800 * (n - i) / n
    params = json.dumps({"snapshot": f"tank/volumes/volume-{i % 50}@s{i}", "source_node": "node1",
                         "destination_node": "node2", "destination": f"tank/r/volume-{i % 50}"})
    result = json.dumps({"sent_bytes": 33554432, "snapshots": [f"s{i}"], "verified": True})
    rows.append((aid, "replicate", "node1", "succeeded", 0, 33554432, 33554432, fin - 1.3, fin - 1.2, fin,
                 fin, res, params, result))
    events += [(aid, fin - 1.3, None, "pending", "created"), (aid, fin - 1.2, "pending", "running", None),
               (aid, fin, "running", "succeeded", None)]
with st._tx() as cur:
    cur.executemany("INSERT INTO activities (id, kind, node, state, status, done, total, created_at, "
                    "started_at, finished_at, updated_at, resources, params, result) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    cur.executemany("INSERT INTO events (activity_id, at, old_state, new_state, detail) VALUES (?,?,?,?,?)",
                    events)
print(sum(st.count().values()))
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench history", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--short", type=int, default=10, help="finished activities on node1 (default 10)")
    ap.add_argument("--long", type=int, default=10_000, help="finished activities on node2 (default 10000)")
    ap.add_argument("--queries", type=int, default=200, help="API queries per node and shape (default 200)")
    ap.add_argument("--repeats", type=int, default=7, help="CLI runs per node and shape (default 7)")
    ap.add_argument(
        "--home", default="/var/lib/zfs-backend-bench-history", help="the benchmark lab's state dir"
    )
    ap.add_argument("--network", default="198.18.112.0/24")
    ap.add_argument("--down", action="store_true", help="take the lab down at the end")
    ap.add_argument("--json", help="write the figures to FILE (- for stdout)")
    a = ap.parse_args(argv)
    con = Console(stderr=True)
    settings = load_settings({**os.environ, "ZFS_BACKEND_HOME": a.home, "ZFS_BACKEND_LAB_NETWORK": a.network})
    lab = Lab(settings)
    lab.up(nodes=2)
    inv = load_inventory(settings.inventory)
    sizes = {"node1": a.short, "node2": a.long}
    hosts = {n: inv.connect(n, settings) for n in sizes}
    for n, size in sizes.items():  # a fresh history of exactly `size` on each node
        hosts[n].run([sys.executable, "-c", _SEED, DB, "prune", "0"], timeout=600)
        held = hosts[n].run([sys.executable, "-c", _SEED, DB, "seed", str(size)], timeout=600).text.split()
        con.print(f"{n}: {held[-1]} activities in its store")
    nodes: dict[str, Node] = {n: connect_node(n, settings) for n in sizes}
    out: dict[str, Any] = {"sizes": sizes}
    shapes = {
        "api_list": lambda nd: nd.client.list(limit=SHOWN),
        "api_top": lambda nd: nd.client.list(since=time.time() - 600, limit=500),
        "api_default": lambda nd: nd.client.list(),
    }
    for name, call in shapes.items():
        lat: dict[str, list[float]] = {n: [] for n in sizes}
        for n in sizes:
            call(nodes[n])  # warm: the session is up
        for _ in range(a.queries):
            for n in sizes:
                t = time.perf_counter()
                call(nodes[n])
                lat[n].append(time.perf_counter() - t)
        out[name] = {
            n: {"p50_s": pct(v, 50), "p99_s": pct(v, 99), "rows": len(call(nodes[n]))} for n, v in lat.items()
        }
    helps: list[float] = []
    for name, extra in (("cli_list", []), ("cli_list_json", ["--json"])):
        runs: dict[str, list[float]] = {n: [] for n in sizes}
        for _ in range(a.repeats):
            for n in sizes:
                runs[n].append(cli(settings, "activity", "list", "--node", n, *extra, timeout=600))
            helps.append(cli(settings, "--help", timeout=600))  # the CLI's fixed cost, same moments
        out[name] = {
            n: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)} for n, v in runs.items()
        }
    out["cli_help"] = {"median_s": statistics.median(helps), "min_s": min(helps), "max_s": max(helps)}
    whole: dict[str, Any] = {}
    for n in sizes:
        t = time.perf_counter()
        try:
            rows = len(nodes[n].client.list(limit=None))
            whole[n] = {"s": time.perf_counter() - t, "rows": rows}
        except ZfsBackendError as e:
            whole[n] = {"error": str(e).splitlines()[0][:100]}
    out["api_whole_history"] = whole
    gone, took = (
        hosts["node2"].run([sys.executable, "-c", _SEED, DB, "prune", "1000"], timeout=600).text.split()
    )
    out["prune"] = {"pruned": int(gone), "s": float(took)}
    for nd in nodes.values():
        nd.close()
    report(out, a)
    if a.down:
        lab.down()
    if a.json:
        write_json(a.json, out)
    return 0


def report(o: dict[str, Any], a: argparse.Namespace) -> None:
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    t = Table(title=f"history: {a.short} vs {a.long} finished activities (alternating)")
    t.add_column("measure")
    for n in ("node1", "node2"):
        t.add_column(f"{n}: {o['sizes'][n]}", justify="right")
    t.add_column("goal")
    for key, label, goal in (
        (
            "api_list",
            f"API list as activity list asks (live + {SHOWN} last finished) p50 / p99",
            "p99 ≤ 50 ms",
        ),
        ("api_top", "API list as top polls (live + last 10 min) p50 / p99", "p99 ≤ 50 ms"),
        ("api_default", f"API list, the protocol's default (live + {LIST_LIMIT}) p50 / p99", ""),
    ):
        t.add_row(
            label,
            *(
                f"{ms(o[key][n]['p50_s'])} / {ms(o[key][n]['p99_s'])} ({o[key][n]['rows']} rows)"
                for n in ("node1", "node2")
            ),
            goal,
        )
    for key, label in (("cli_list", "CLI activity list"), ("cli_list_json", "CLI activity list --json")):
        t.add_row(
            f"{label}, median [min-max]",
            *(
                f"{o[key][n]['median_s']:.3f} [{o[key][n]['min_s']:.3f}-{o[key][n]['max_s']:.3f}] s"
                for n in ("node1", "node2")
            ),
            "≤ 0.3 s",
        )
    h = o["cli_help"]
    t.add_row(
        "CLI zfs-backend --help (fixed cost)",
        f"{h['median_s']:.3f} [{h['min_s']:.3f}-{h['max_s']:.3f}] s",
        "",
        "",
    )
    w = o["api_whole_history"]
    t.add_row(
        "API whole history (list limit=None)",
        *(w[n].get("error") or ms(w[n]["s"]) for n in ("node1", "node2")),
        "(before)",
    )
    t.add_row("agent store: prune to 1,000", "", f"{o['prune']['pruned']} in {ms(o['prune']['s'])}", "")
    Console().print(t)


if __name__ == "__main__":
    raise SystemExit(main())
