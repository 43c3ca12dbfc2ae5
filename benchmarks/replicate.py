"""``scripts/bench replicate``: what a user waits for, our replication against the raw pipeline.

On a lab of its own (node1 → node2, agents, the same link for every side), each measure runs
``--repeats`` times per side, **in rotating order** (raw, CLI, API; then CLI, API, raw; ...), and
reports the median with min and max of wall-clock seconds, timed from the call to the verified result:

* **raw**: ``zfs send [-i base] snap | ssh node2 zfs recv dest`` typed on node1 (timed on node1);
* **CLI**: ``zfs-backend replicate node1:snap node2:dest`` from the controller's shell, until it exits
  (it exits once the destination's receiver has verified the snapshot's GUID);
* **API**: ``snapshot_replicate(...)`` then ``wait()`` in a long-lived controller process (how the
  driver, the flows and cinder-volume use it).

Measures: a recursive tree of ``--tree`` small datasets, its increment raw (``send -R``) vs
``--parallel 1`` vs ``--parallel 4`` (``_replicate_tree.py``); a full stream (``--full`` MiB), an
incremental (``--incr`` MiB changed), an empty
incremental (the fixed cost, on its own line), ``activity show --node`` and ``--help``, cancel on a
shaped link until the command returns with the destination rolled back (CLI and API; and from the CLI
of a full copy, the new dataset gone after), throughput at
``--tp`` MiB (API vs raw), bytes that reach the receiving ``zfs recv`` after ``suspend()`` returned
(read from its ``/proc/PID/io`` on node2, not from the relay), and the agent's RSS over a big stream.
``--json FILE`` (``-`` for stdout) writes every sample, for comparison across commits.

``--vagrant``: the same between the Vagrant tier's two OpenZFS VMs (``zb-node1`` → ``zb-node2``, which
``scripts/vagrant-tier up`` must have brought up; their inventory as tests/vagrant gets it), through
their agents (systemd units). Smaller defaults (the VMs are emulated) and the measures that need no
lab: full, incremental, empty, commands, throughput, tree (cancel and suspend shape the lab's link,
the RSS one reads the lab agent's process: ``-`` in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from zfs_backend.activity.core import BackendActivity
from zfs_backend.activity.states import TERMINAL
from zfs_backend.config import Settings, load_settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab
from zfs_backend.replication import snapshot_replicate
from zfs_backend.rpc.client import Node
from zfs_backend.rpc.connect import connect_node
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

from ._common import vagrant_settings
from ._replicate_tree import tree, tree_rows

MiB = 1 << 20
SRC, DST = "node1", "node2"
CLI = [sys.executable, "-m", "zfs_backend.cli.main"]
# runs on node1; names reach it as positional parameters
_RAW = (
    's=$(date +%s.%N); if [ -n "$2" ]; then zfs send -i "$2" "$1"; else zfs send "$1"; fi '
    '| ssh -o BatchMode=yes -i "$5" "$3" zfs recv "$4" || exit 1; e=$(date +%s.%N); echo "$s $e"'
)
# The raw baseline's own key, node1 -> node2: the nodes' own keys reach only ``peer-exec``, which receives
# only into what the controller granted (issue 19), so a plain ``zfs recv`` needs a key of its own. Offered
# first (``-i``), accepted from node1's address only, removed again at the end.
RAW_KEY = "/root/.ssh/zfs_backend_bench_raw"
RAW_MARK = "zfs-backend-bench-raw"


#: the measures on the Vagrant tier (the others need the lab: its link shaping, its agents' processes)
VAGRANT_MEASURES = "full,incr,empty,commands,tp,tree"


@dataclass
class Bench:
    lab: Lab | None
    settings: Settings
    src: SSHHost
    dst: SSHHost
    con: Console
    agents: dict[str, Node] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    # -- plumbing ----------------------------------------------------------------------------------
    def node_for(self, name: str) -> Node:
        if name not in self.agents:
            self.agents[name] = connect_node(name, self.settings)
        return self.agents[name]

    def env(self) -> dict[str, str]:
        if self.lab is None:  # the Vagrant tier: its inventory
            return {
                **os.environ,
                "ZFS_BACKEND_HOME": str(self.settings.home),
                "ZFS_BACKEND_INVENTORY": str(self.settings.inventory),
            }
        return {
            **os.environ,
            "ZFS_BACKEND_HOME": str(self.settings.home),
            "ZFS_BACKEND_LAB_NETWORK": self.settings.lab_network,
        }

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def write(self, ds: str, file: str, mib: int) -> None:
        z = Zfs(self.src)
        if not z.exists(parse_dataset(ds)):
            z.create(parse_dataset(ds), props={"compression": "off"})
        self.src.run(
            ["dd", "if=/dev/urandom", f"of=/{ds}/{file}", "bs=1M", f"count={mib}", "status=none"],
            timeout=1800,
        )

    def snap(self, name: str) -> None:
        Zfs(self.src).snapshot(parse_snapshot(name))

    def drop(self, host: SSHHost, ds: str) -> None:
        Zfs(host).destroy(parse_dataset(ds), recursive=True, missing_ok=True, deadline=60)

    def reset_to(self, snap: str) -> None:
        """The destination back at ``snap`` (every later snapshot and change gone): the same starting
        point for every side of an incremental."""
        Zfs(self.dst).rollback(parse_snapshot(snap), destroy_newer=True)

    def verify(self, snap: str) -> None:
        want = Zfs(self.src).get_int(parse_snapshot(snap), "guid")
        got = Zfs(self.dst).get_int(parse_snapshot(snap), "guid")
        assert want == got, f"{snap}: destination GUID {got} != {want}"

    def raw_key_up(self, src_address: str) -> None:
        """Install the raw baseline's key (see ``RAW_KEY``) on node2 for node1."""
        self.raw_key_down()
        self.src.run(["rm", "-f", RAW_KEY, f"{RAW_KEY}.pub"])
        self.src.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", RAW_MARK, "-f", RAW_KEY])
        pub = self.src.run(["cat", f"{RAW_KEY}.pub"]).text.strip()
        line = f'restrict,from="{src_address}" {pub}\n'
        self.dst.run(["tee", "-a", "/root/.ssh/authorized_keys"], input=line.encode())

    def raw_key_down(self) -> None:
        self.dst.run(["sed", "-i", f"/ {RAW_MARK}$/d", "/root/.ssh/authorized_keys"], check=False)

    # -- the three sides -------------------------------------------------------------------------------
    def raw(self, snap: str, base: str | None = None) -> float:
        dest = snap.split("@")[0]
        argv = ["sh", "-c", _RAW, "bench", snap, base or "", DST, dest, RAW_KEY]
        res = self.src.run(argv, timeout=1800)
        s, e = (float(x) for x in res.text.split())
        return e - s

    def cli(self, snap: str, *flags: str) -> float:
        dest = snap.split("@")[0]
        t0 = time.perf_counter()
        r = subprocess.run(
            [*CLI, "replicate", f"{SRC}:{snap}", f"{DST}:{dest}", *flags],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr
        return took

    def cancel_cli(self, activity_id: str) -> float:
        """``zfs-backend activity cancel ID --node node1`` until it returns (the destination rolled back)."""
        t0 = time.perf_counter()
        r = subprocess.run(
            [*CLI, "activity", "cancel", activity_id, "--node", SRC],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.perf_counter() - t0
        assert r.returncode == 0, r.stderr
        return took

    def api(self, snap: str, **kw: Any) -> float:
        dest = snap.split("@")[0]
        t0 = time.perf_counter()
        act = snapshot_replicate(
            f"{SRC}:{snap}", None, f"{DST}:{dest}", settings=self.settings, node_for=self.node_for, **kw
        )
        state = act.wait(1800)
        took = time.perf_counter() - t0
        assert state == "succeeded", act.record()
        return took

    def rotate(
        self,
        key: str,
        repeats: int,
        sides: dict[str, Callable[[], float]],
        before: Callable[[], None],
        after: Callable[[], None],
    ) -> None:
        names = list(sides)
        for i in range(repeats):
            order = names[i % len(names) :] + names[: i % len(names)]
            for side in order:
                before()
                self.add(f"{key}.{side}", sides[side]())
                after()


# --- measures --------------------------------------------------------------------------------------------


def full(
    b: Bench, mib: int, repeats: int, key: str = "full", sides: tuple[str, ...] = ("raw", "cli", "api")
) -> None:
    ds = f"tank/b{key}"
    b.drop(b.src, ds)
    b.write(ds, "data", mib)
    b.snap(f"{ds}@s")
    fns = {"raw": lambda: b.raw(f"{ds}@s"), "cli": lambda: b.cli(f"{ds}@s"), "api": lambda: b.api(f"{ds}@s")}
    b.rotate(key, repeats, {s: fns[s] for s in sides}, lambda: b.drop(b.dst, ds), lambda: b.verify(f"{ds}@s"))
    b.drop(b.dst, ds)
    b.drop(b.src, ds)


def incremental(b: Bench, mib: int, repeats: int, key: str) -> None:
    """``mib`` changed (0: the empty incremental, the fixed cost of a replication)."""
    ds = f"tank/b{key}"
    b.drop(b.src, ds)
    b.drop(b.dst, ds)
    b.write(ds, "base", 8)
    b.snap(f"{ds}@base")
    b.api(f"{ds}@base")
    if mib:
        b.write(ds, "more", mib)
    b.snap(f"{ds}@i")
    target = f"{ds}@i"
    b.rotate(
        key,
        repeats,
        {
            "raw": lambda: b.raw(target, f"{ds}@base"),
            "cli": lambda: b.cli(target),
            "api": lambda: b.api(target),
        },
        lambda: b.reset_to(f"{ds}@base"),
        lambda: b.verify(target),
    )
    b.drop(b.dst, ds)
    b.drop(b.src, ds)


def commands(b: Bench, repeats: int) -> None:
    ds = "tank/bshow"
    b.drop(b.src, ds)
    b.drop(b.dst, ds)
    b.write(ds, "a", 1)
    b.snap(f"{ds}@s")
    act = snapshot_replicate(f"{SRC}:{ds}@s", None, f"{DST}:{ds}", settings=b.settings, node_for=b.node_for)
    act.wait(120)
    for _ in range(repeats * 2):
        for key, argv in (
            ("show", [*CLI, "activity", "show", act.id, "--node", SRC]),
            ("help", [*CLI, "--help"]),
        ):
            t0 = time.perf_counter()
            r = subprocess.run(argv, env=b.env(), capture_output=True, check=False)
            b.add(f"command.{key}", time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr
    b.drop(b.dst, ds)
    b.drop(b.src, ds)


def _lab(b: Bench) -> Lab:
    """The benchmark's lab, for a measure that needs one (not on the Vagrant tier)."""
    if b.lab is None:
        raise SystemExit(f"this measure needs the lab; on the VMs (--vagrant): {VAGRANT_MEASURES}")
    return b.lab


def _until(act: BackendActivity, nbytes: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while act.progress[0] < nbytes:
        assert time.monotonic() < deadline and act.state in ("pending", "running"), act.record()
        time.sleep(0.05)


def cancel(b: Bench, repeats: int, mib: int, rate_mib: int) -> None:
    """Cancel an incremental mid-stream on a shaped link: seconds until the command (or call) returns
    with the destination rolled back, checked after."""
    ds = "tank/bcancel"
    b.drop(b.src, ds)
    b.drop(b.dst, ds)
    b.write(ds, "base", 4)
    b.snap(f"{ds}@base")
    b.api(f"{ds}@base")
    b.write(ds, "more", mib)
    b.snap(f"{ds}@i")
    _lab(b).shape(SRC, rate_mib * 8 * MiB)
    try:
        for i in range(repeats):
            for side in ("cli", "api") if i % 2 == 0 else ("api", "cli"):
                b.reset_to(f"{ds}@base")
                act = snapshot_replicate(
                    f"{SRC}:{ds}@i", None, f"{DST}:{ds}", settings=b.settings, node_for=b.node_for
                )
                _until(act, 4 * MiB)
                if side == "cli":
                    b.add("cancel.cli", b.cancel_cli(act.id))
                else:
                    t0 = time.perf_counter()
                    act.cancel()
                    b.add("cancel.api", time.perf_counter() - t0)
                assert act.record().state == "cancelled", act.record()
                snaps = [s.snap for s in Zfs(b.dst).list_snapshots(parse_dataset(ds))]
                assert snaps == ["base"], snaps
        # a full copy (into a new dataset) cancelled from the command line: the dataset is gone after
        for _ in range(repeats):
            b.drop(b.dst, ds)
            act = snapshot_replicate(
                f"{SRC}:{ds}@i", None, f"{DST}:{ds}", True, settings=b.settings, node_for=b.node_for
            )
            _until(act, 4 * MiB)
            b.add("cancel.full_cli", b.cancel_cli(act.id))
            assert act.record().state == "cancelled", act.record()
            assert not Zfs(b.dst).exists(parse_dataset(ds)), f"{DST}:{ds} is left after a cancelled full copy"
    finally:
        _lab(b).shape(SRC, None)
    b.drop(b.dst, ds)
    b.drop(b.src, ds)


def _recv_rchar(b: Bench, dest: str) -> int:
    """Bytes read so far by the ``zfs receive`` into ``dest`` on node2 (its /proc/PID/io)."""
    node2 = _lab(b).node(DST)
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        # the node's peer-exec runs it by its full path (/usr/sbin/zfs receive ...)
        if (
            len(cmd) > 2
            and os.path.basename(cmd[0]) == "zfs"
            and cmd[1] in ("receive", "recv")
            and cmd[-1] == dest
        ):
            try:
                if os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(f"/run/netns/{node2.netns}").st_ino:
                    return int(p.io_counters().read_chars)
            except (OSError, psutil.Error):
                continue
    seen = [" ".join(p.info.get("cmdline") or []) for p in psutil.process_iter(["cmdline"])]
    zfs = [c for c in seen if "zfs receive" in c or "zfs recv" in c]
    raise AssertionError(f"no zfs receive into {dest} on {DST}; receives running: {zfs}")


def suspend_at_receiver(b: Bench, mib: int, rate_mib: int) -> None:
    ds = "tank/bsuspend"
    b.drop(b.src, ds)
    b.drop(b.dst, ds)
    b.write(ds, "data", mib)
    b.snap(f"{ds}@s")
    _lab(b).shape(SRC, rate_mib * 8 * MiB)
    try:
        act = snapshot_replicate(
            f"{SRC}:{ds}@s", None, f"{DST}:{ds}", settings=b.settings, node_for=b.node_for
        )
        try:
            _until(act, 8 * MiB)
            act.suspend()
            time.sleep(0.5)  # what was in flight when suspend() returned lands
            r0 = _recv_rchar(b, ds)
            time.sleep(3)
            b.add("suspend.bytes_at_receiver_3s", float(_recv_rchar(b, ds) - r0))
        finally:  # never leave a stream holding the datasets the next run drops
            if act.state not in TERMINAL:
                act.cancel()
    finally:
        _lab(b).shape(SRC, None)
    b.drop(b.dst, ds)
    b.drop(b.src, ds)


def agent_rss(b: Bench, mib: int) -> None:
    ds = "tank/brss"
    b.drop(b.src, ds)
    b.drop(b.dst, ds)
    b.write(ds, "data", mib)
    b.snap(f"{ds}@s")
    st = _lab(b).state
    assert st is not None
    proc = psutil.Process(st.pids[SRC]["agent"])
    peak = before = proc.memory_info().rss
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
    b.api(f"{ds}@s")
    stop.set()
    th.join()
    b.add("rss.agent_idle", float(before))
    b.add("rss.agent_peak", float(peak))
    b.drop(b.dst, ds)
    b.drop(b.src, ds)


# --- report ------------------------------------------------------------------------------------------------


def _stat(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def _secs(xs: list[float] | None) -> str:
    if not xs:
        return "-"
    m, lo, hi = _stat(xs)
    return f"{m:.3f} s [{lo:.3f}-{hi:.3f}]"


def _ratio(s: dict[str, list[float]], a: str, b: str) -> float | None:
    if not s.get(a) or not s.get(b):
        return None
    return statistics.median(s[a]) / statistics.median(s[b])


def report(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    s = b.samples
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, value: str, ratio: float | None, target: str) -> None:
        rows.append((name, value, "" if ratio is None else f"{ratio:.2f}x", target))

    for key, label, goals in (
        ("full", f"full {args.full} MiB", ("≤ 1.10x", "≤ 1.05x")),
        ("incr", f"incremental {args.incr} MiB", ("≤ 1.5x", "≤ 1.2x")),
        ("empty", "empty incremental (fixed cost)", ("≤ 0.7 s", "")),
        ("tp", f"throughput {args.tp} MiB", ("", "≥ 0.97x raw (raw/API)")),
    ):
        add(f"{label}: raw", _secs(s.get(f"{key}.raw")), None, "")
        if s.get(f"{key}.cli"):
            add(f"{label}: CLI", _secs(s.get(f"{key}.cli")), _ratio(s, f"{key}.cli", f"{key}.raw"), goals[0])
        if key == "tp":
            r = _ratio(s, f"{key}.raw", f"{key}.api")
            add(f"{label}: API", _secs(s.get(f"{key}.api")), r, goals[1])
        else:
            add(f"{label}: API", _secs(s.get(f"{key}.api")), _ratio(s, f"{key}.api", f"{key}.raw"), goals[1])
    for label, key in tree_rows(args.tree, args.tree_mib):
        add(label, _secs(s.get(key)), _ratio(s, key, "tree.raw") if key != "tree.raw" else None, "")
    add("activity show --node (CLI)", _secs(s.get("command.show")), None, "≤ 0.4 s")
    add("zfs-backend --help", _secs(s.get("command.help")), None, "")
    add("cancel → rolled back, shaped link: CLI", _secs(s.get("cancel.cli")), None, "≤ 1.0 s")
    add("cancel → rolled back, shaped link: API", _secs(s.get("cancel.api")), None, "")
    add("cancel of a full copy, shaped link: CLI", _secs(s.get("cancel.full_cli")), None, "≤ 1.0 s")
    sus = s.get("suspend.bytes_at_receiver_3s")
    add("bytes into zfs recv in 3 s after suspend()", f"{sus[0]:.0f} B" if sus else "-", None, "0")
    if s.get("rss.agent_peak"):
        add(
            f"agent RSS over a {args.big} MiB stream",
            f"{s['rss.agent_peak'][0] / MiB:.1f} MiB (idle {s['rss.agent_idle'][0] / MiB:.1f})",
            None,
            "flat",
        )
    t = Table(
        title=f"scripts/bench replicate: {SRC} → {DST}, median \\[min-max] of {args.repeats}, rotating order"
    )
    for col in ("measure", "wall clock", "vs raw", "goal"):
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    b.con.print(t)
    return {
        "when": time.time(),
        "args": vars(args),
        "samples": s,
        "medians": {k: statistics.median(v) for k, v in s.items()},
    }


def main(argv: list[str] | None = None) -> int:
    global SRC, DST  # --vagrant: the VMs' names, for every measure and the report
    ap = argparse.ArgumentParser(
        prog="scripts/bench replicate",
        description=(__doc__ or "").split("\n")[0],
        epilog=(
            "tree (--only tree runs it alone): a recursive tree of --tree small datasets, its increment of "
            "--tree-mib MiB per dataset replicated three ways in rotating order: raw `zfs send -R -i | ssh "
            "| zfs recv`, replicate --recursive --parallel 1 (one send -R through the agents) and "
            "--parallel 4 (one stream per dataset, four at a time); each compared with raw."
        ),
    )
    ap.add_argument("--repeats", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--full", type=int, default=256, help="MiB of the full stream (default 256)")
    ap.add_argument("--incr", type=int, default=32, help="MiB changed for the incremental (default 32)")
    ap.add_argument("--tp", type=int, default=512, help="MiB of the throughput run (default 512)")
    ap.add_argument("--big", type=int, default=1024, help="MiB of the agent RSS run (default 1024)")
    ap.add_argument("--tree", type=int, default=50, help="datasets of the tree measure (default 50)")
    ap.add_argument("--tree-mib", type=int, default=1, help="MiB changed per dataset of the tree (default 1)")
    ap.add_argument("--quick", action="store_true", help="3 repeats, 64/16/128/256 MiB")
    ap.add_argument(
        "--only", help="comma-separated measures: full,incr,empty,commands,cancel,tp,suspend,rss,tree"
    )
    ap.add_argument("--json", metavar="FILE", help="write every sample as JSON ('-': stdout)")
    ap.add_argument("--home", default="/var/lib/zfs-backend-bench", help="the benchmark lab's state dir")
    ap.add_argument("--network", default="198.18.110.0/24", help="the benchmark lab's network")
    ap.add_argument("--down", action="store_true", help="take the benchmark lab down afterwards")
    ap.add_argument(
        "--vagrant",
        action="store_true",
        help="between the Vagrant tier's two OpenZFS VMs (up already: scripts/vagrant-tier up), not a lab; "
        f"2 repeats, 32/8/64 MiB, a tree of 5, measures {VAGRANT_MEASURES} unless given",
    )
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats, a.full, a.incr, a.tp, a.big = 3, 64, 16, 128, 256
    con = Console(stderr=a.json == "-")
    lab: Lab | None = None
    if a.vagrant:
        given = set(argv if argv is not None else sys.argv[1:])
        for opt, attr, value in (
            ("--repeats", "repeats", 2),
            ("--full", "full", 32),
            ("--incr", "incr", 8),
            ("--tp", "tp", 64),
            ("--tree", "tree", 5),
        ):
            if not a.quick and opt not in given:
                setattr(a, attr, value)
        a.only = a.only or VAGRANT_MEASURES
        if "--home" not in given:
            a.home = "/var/lib/zfs-backend-bench-vagrant"
        settings, vm_names = vagrant_settings(a.home)
        SRC, DST = vm_names[0], vm_names[1]
        inv = load_inventory(settings.inventory)
        con.print(f"  the Vagrant tier's VMs {SRC} and {DST} ({settings.inventory})")
        src = inv.connect(SRC, settings, connect_timeout=60)
        dst = inv.connect(DST, settings, connect_timeout=60)
    else:
        settings = load_settings(
            {**os.environ, "ZFS_BACKEND_HOME": a.home, "ZFS_BACKEND_LAB_NETWORK": a.network}
        )
        lab = Lab(settings)
        pool = max(1 << 30, (max(a.full, a.tp, a.big) * 2 + 512) * MiB)
        st = lab.state
        if st is not None and (st.pool_size < pool or len(st.nodes) != 2):
            con.print("  the benchmark lab's pools are too small for these sizes: recreating it")
            lab.down()
            lab = Lab(settings)
        lab.up(nodes=2, pool_size=pool, with_agent=True, on_step=lambda m: con.print(f"  {m}"))
        inv = load_inventory(settings.inventory)
        src, dst = inv.connect(SRC, settings), inv.connect(DST, settings)
    b = Bench(lab, settings, src, dst, con)
    only = set((a.only or "full,incr,empty,commands,cancel,tp,suspend,rss,tree").split(","))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("empty", lambda: incremental(b, 0, a.repeats, "empty")),
        ("incr", lambda: incremental(b, a.incr, a.repeats, "incr")),
        ("full", lambda: full(b, a.full, a.repeats)),
        ("commands", lambda: commands(b, a.repeats)),
        ("cancel", lambda: cancel(b, a.repeats, 64, 16)),
        ("tp", lambda: full(b, a.tp, a.repeats, key="tp", sides=("raw", "api"))),
        ("suspend", lambda: suspend_at_receiver(b, 128, 16)),
        ("rss", lambda: agent_rss(b, a.big)),
        ("tree", lambda: tree(b, a.tree, a.tree_mib, a.repeats, raw_key=RAW_KEY, dst_node=DST)),
    ]
    try:
        b.raw_key_up(inv.node(SRC).address)
        for name, step in steps:
            if name in only:
                con.print(f"{name} …")
                step()
    finally:
        for node in b.agents.values():
            node.close()
        b.raw_key_down()
        if a.down and lab is not None:
            lab.down()
    out = report(b, a)
    if a.json:
        text = json.dumps(out, indent=1)
        if a.json == "-":
            print(text)
        else:
            with open(a.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
