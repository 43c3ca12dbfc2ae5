"""``parallel`` replication of a recursive tree (replication.parallel): the relay group, and the streams
run by a pipeline activity with local processes (no ZFS): at most ``parallel`` at a time, a new dataset
after its parent, one count over all, the first failure stopping the others, cancel killing every stream
before the rollback, the live bandwidth limit shared by the slots, the stall watchdog tearing every
stream down. The tree's plan: test_replication_tree_plan.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from polling import until

from zfs_backend.activity import ActivityContext, ActivityStore, new_activity_id
from zfs_backend.activity.pipeline import Endpoint, PipelineActivity
from zfs_backend.activity.relay import Relay
from zfs_backend.hosts import LocalHost
from zfs_backend.replication.parallel import ParallelStreams, RelayGroup
from zfs_backend.replication.plan import Plan
from zfs_backend.replication.tree_plan import TreeJob
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_snapshot


def snap(name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=guid, createtxg=txg, used=0, referenced=1, creation=0)


def test_the_relay_group_counts_all_and_controls_late_ones() -> None:
    fds: list[int] = []

    def relay() -> Relay:
        r, w = os.pipe()
        fds.extend((r, w))
        return Relay(r, w)

    g = RelayGroup()
    a, b = relay(), relay()
    g.add(a)
    a.count = 5
    g.pause()
    g.add(b)  # added while paused: paused
    assert b.paused and a.paused
    b.count = 7
    assert g.count == 12
    g.retire(a)
    assert g.count == 12
    g.unpause()
    assert not b.paused
    g.abort()
    c = relay()
    g.add(c)  # added after an abort: aborted
    assert c.run() == Relay.ABORTED
    for fd in fds:
        os.close(fd)


def test_the_relay_group_shares_its_limit_live_and_tears_every_stream_down() -> None:
    fds: list[int] = []

    def relay() -> Relay:
        r, w = os.pipe()
        fds.extend((r, w))
        return Relay(r, w, bwlimit_bps=123.0)

    g = RelayGroup(slots=4, bwlimit_bps=8_000_000)
    a = relay()
    g.add(a)
    assert a.bwlimit_bps == 2_000_000  # its slot's part, not the relay's own
    g.set_rate(4_000_000)  # changed while it runs: every live relay, and the later ones
    b = relay()
    g.add(b)
    assert a.bwlimit_bps == b.bwlimit_bps == 1_000_000
    g.set_rate(2048)
    assert a.bwlimit_bps == 1024  # never below the lowest limit a relay takes
    g.set_rate(None)
    assert a.bwlimit_bps is None and b.bwlimit_bps is None
    assert g.idle_s() == 0.0  # nothing running: nothing idle
    assert g.torn_down is None
    g.tear_down("stalled: test")
    assert g.torn_down == a.torn_down == b.torn_down == "stalled: test" and g.aborted
    assert a.run() == Relay.ABORTED
    for fd in fds:
        os.close(fd)


# -- the streams, run ---------------------------------------------------------------------------------


class Tree(ParallelStreams, PipelineActivity):
    """A pipeline whose "tree" is local processes: each job writes ``size`` bytes into its own file
    (``fail``: that job's producer exits 1; ``slow``: every producer sleeps first)."""

    KIND = "tree-test"
    max_retries = 0

    def __init__(self, record: Any, ctx: ActivityContext) -> None:
        super().__init__(record, ctx)
        p = record.params
        self.request = SimpleNamespace(recursive=True, parallel=int(p["parallel"]))  # type: ignore[assignment]
        self.out = Path(p["out"])
        self.log = self.out / "log"
        self.rolled_back = False
        if "stall_s" in p:  # below the smallest stall_timeout_s a request may ask (10 s)
            self.stall_timeout_s = float(p["stall_s"])

    def estimate_total(self) -> int:
        return int(self.params["size"]) * len(self.params["jobs"])

    def _tree_streams(self) -> list[tuple[TreeJob, Endpoint, Endpoint]]:
        p, out = self.params, []
        for rel, after in p["jobs"]:
            name = rel or "top"
            pause = 600 if rel == p.get("stall") else p["slow"]  # stall: no byte for a long time
            script = (
                f"echo start {name} >> {self.log}; sleep {pause}; "
                + ("exit 1; " if rel == p.get("fail") else f"head -c {p['size']} /dev/zero; ")
                + f"echo end {name} >> {self.log}"
            )
            job = TreeJob(rel, Plan(target=snap("tank/t@s", 1, 1)), after)
            host = LocalHost("test")
            out.append(
                (
                    job,
                    Endpoint(host, ["sh", "-c", script]),
                    Endpoint(host, ["sh", "-c", f"cat > {self.out}/{rel.replace('/', '_') or 'top'}"]),
                )
            )
        return out

    def rollback(self) -> None:
        self.rolled_back = True


def run_tree(ctx: ActivityContext, tmp_path: Path, **params: Any) -> Tree:
    p = {"parallel": 2, "size": 100_000, "slow": 0.3, "out": str(tmp_path), **params}
    rec = Tree.new_record(new_activity_id(), p, ctx)
    act = Tree(rec, ctx)
    act.persist_new()
    act.start()
    return act


@pytest.fixture
def ctx(tmp_path: Path):  # type: ignore[no-untyped-def]
    st = ActivityStore(tmp_path / "state" / "activities.db")
    yield ActivityContext(store=st, node="test")
    st.close()


def events(act: Tree) -> list[tuple[str, str]]:
    pairs = (line.split() for line in act.log.read_text().splitlines())
    return [(w, "" if r == "top" else r) for w, r in pairs]


JOBS = [["", None], ["a", ""], ["b", ""], ["c", ""], ["a/x", "a"]]


def test_the_streams_run_n_at_a_time_parents_first_with_one_count(
    ctx: ActivityContext, tmp_path: Path
) -> None:
    act = run_tree(ctx, tmp_path, jobs=JOBS)
    assert act.wait(60) == "succeeded", act.record().error
    assert act.progress == (5 * 100_000, 5 * 100_000)  # n of m over all of them
    for name in ("top", "a", "b", "c", "a_x"):
        assert (tmp_path / name).stat().st_size == 100_000
    seen = events(act)
    order = [r for w, r in seen if w == "start"]
    ends = [r for w, r in seen if w == "end"]
    assert order[0] == "" and ends[0] == ""  # the new top first: everything waits for it
    assert seen.index(("end", "a")) < seen.index(("start", "a/x"))
    running, most = 0, 0
    for w, _r in seen:
        running += 1 if w == "start" else -1
        most = max(most, running)
    assert most <= 2  # never more than parallel (that all run at once: the cancel test)
    assert act._monitor is not None and act._monitor._roots == []  # each stream forgotten once reaped
    assert act._cp["pids"] == []


def test_the_first_failure_stops_the_others_and_fails_the_attempt(
    ctx: ActivityContext, tmp_path: Path
) -> None:
    act = run_tree(ctx, tmp_path, jobs=JOBS, fail="b", slow=0.5)
    assert act.wait(60) == "failed"
    assert (act.record().error or "").startswith("stream failed: b: producer exited 1")
    assert "a/x" not in [r for w, r in events(act) if w == "start"]  # nothing started after it


def test_cancel_kills_every_stream_then_rolls_back(ctx: ActivityContext, tmp_path: Path) -> None:
    act = run_tree(ctx, tmp_path, jobs=[["", None], ["a", None], ["b", None]], parallel=3, slow=30)
    until("all three streams up", lambda: len(act._procs) >= 6, 30, interval=0.05)
    procs = list(act._procs)
    assert len(procs) == 6  # all three streams up
    threading.Thread(target=act.cancel, daemon=True).start()
    assert act.wait(60) == "cancelled"
    assert act.rolled_back
    assert all(p.poll() is not None for p in procs)


def wait_for_procs(act: Tree, n: int) -> list[Any]:
    until(f"{n} processes", lambda: len(act._procs) >= n, 30, interval=0.05)
    return list(act._procs)


def test_a_limit_set_while_the_tree_runs_is_shared_by_its_live_streams(
    ctx: ActivityContext, tmp_path: Path
) -> None:
    """``activity set --bwlimit`` on a parallel tree (the group, not one relay: it once raised
    AttributeError), each live stream getting its slot's part, at once."""
    act = run_tree(ctx, tmp_path, jobs=[["", None], ["a", None]], parallel=2, slow=30, bwlimit_bps=8_000_000)
    assert len(wait_for_procs(act, 4)) == 4
    relays = list(act._relay._live)
    assert [r.bwlimit_bps for r in relays] == [4_000_000, 4_000_000]
    act.set_bwlimit(2_000_000)
    assert [r.bwlimit_bps for r in relays] == [1_000_000, 1_000_000]
    assert act._cp["bwlimit_bps"] == 2_000_000  # kept for the next attempt
    act.set_bwlimit(None)
    assert [r.bwlimit_bps for r in relays] == [None, None]
    threading.Thread(target=act.cancel, daemon=True).start()
    assert act.wait(60) == "cancelled"


def test_one_stalled_stream_tears_the_tree_down_and_fails_the_attempt(
    ctx: ActivityContext, tmp_path: Path
) -> None:
    """The watchdog reads the idlest live stream: ``b`` sends nothing while the others finish; every
    stream is torn down, its processes killed, and the attempt fails with the watchdog's reason."""
    act = run_tree(ctx, tmp_path, jobs=JOBS, stall="b", slow=0.2, stall_s=1.5)
    procs = wait_for_procs(act, 2)
    assert act.wait(60) == "failed"
    error = act.record().error or ""
    assert "stalled: no byte moved" in error, error
    assert all(p.poll() is not None for p in procs)
    assert not [r for w, r in events(act) if w == "end" and r == "b"]
