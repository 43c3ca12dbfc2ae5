"""``parallel`` replication of a recursive tree (replication.parallel): the plan of the tree's streams
(pure), the relay group, and the streams run by a pipeline activity with local processes (no ZFS): at
most ``parallel`` at a time, a new dataset after its parent, one count over all, the first failure
stopping the others, cancel killing every stream before the rollback."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.activity import ActivityContext, ActivityStore, new_activity_id
from zfs_backend.activity.pipeline import Endpoint, PipelineActivity
from zfs_backend.activity.relay import Relay
from zfs_backend.errors import DestinationDiverged, NoCommonBase
from zfs_backend.hosts import LocalHost
from zfs_backend.replication.parallel import ParallelStreams, RelayGroup, TreeJob, job_specs, tree_jobs
from zfs_backend.replication.plan import Plan
from zfs_backend.replication.remote import DestinationDataset
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_snapshot


def snap(name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=guid, createtxg=txg, used=0, referenced=1, creation=0)


def src_tree() -> dict[str, list[Snapshot]]:
    tree: dict[str, list[Snapshot]] = {}
    for i, rel in enumerate(["", "a", "a/x", "b"]):
        ds = "tank/t" + (f"/{rel}" if rel else "")
        tree[rel] = [snap(f"{ds}@s1", 100 + i, 10), snap(f"{ds}@s2", 200 + i, 20)]
    tree["late"] = [snap("tank/t/late@s3", 999, 30)]  # made after @s2: not part of the tree's @s2
    return tree


def test_the_tree_plan_by_dataset() -> None:
    src = src_tree()
    dst = {
        "": DestinationDataset([snap("tank/r@s1", 100, 5)]),
        "b": DestinationDataset([snap("tank/r/b@s1", 103, 5), snap("tank/r/b@s2", 203, 6)]),  # done
    }
    jobs = {j.rel: j for j in tree_jobs(src, dst, "s2", intermediates=True)}
    assert sorted(jobs) == ["", "a", "a/x"]  # b holds @s2 already; late has no @s2
    top = jobs[""].plan
    assert top.base is not None and top.base.guid == 100 and top.intermediates and jobs[""].after is None
    assert jobs["a"].full and jobs["a"].after is None  # its parent exists on the destination
    assert jobs["a/x"].full and jobs["a/x"].after == "a"  # new under a new parent: after it
    assert [j.rel for j in tree_jobs(src, dst, "s2")] == ["", "a", "a/x"]  # -i: the same streams


def test_a_new_tree_waits_for_its_top() -> None:
    jobs = tree_jobs(src_tree(), {}, "s2")
    assert [(j.rel, j.after, j.full) for j in jobs] == [
        ("", None, True),
        ("a", "", True),
        ("b", "", True),
        ("a/x", "a", True),
    ]


def test_a_dataset_that_diverged_or_shares_nothing_refuses_the_tree_naming_it() -> None:
    src = src_tree()
    changed = {"": DestinationDataset([snap("tank/r@s1", 100, 5)], changed=True, detail="1 file")}
    with pytest.raises(DestinationDiverged, match=r"^the top: .*1 file"):
        tree_jobs(src, changed, "s2")
    foreign = {
        "": DestinationDataset([snap("tank/r@s1", 100, 5)]),
        "a": DestinationDataset([snap("tank/r/a@z", 7, 5)]),
    }
    with pytest.raises(NoCommonBase, match=r"^a: "):
        tree_jobs(src, foreign, "s2")
    ok = tree_jobs(src, changed, "s2", rollback_destination=True)
    assert ok[0].plan.rollback_to is not None


def test_job_specs() -> None:
    jobs = {j.rel: j for j in tree_jobs(src_tree(), {}, "s2")}
    send, recv = job_specs(jobs[""], "tank/r", properties=True, resumable=True, read_only=True)
    assert str(send.snapshot) == "tank/t@s2" and send.properties and not send.recursive
    assert str(recv.target) == "tank/r" and recv.resumable and dict(recv.set_properties) == {"readonly": "on"}
    send, recv = job_specs(jobs["a/x"], "tank/r", properties=False, resumable=False, read_only=True)
    assert str(send.snapshot) == "tank/t/a/x@s2" and str(recv.target) == "tank/r/a/x"
    assert dict(recv.set_properties) == {}  # a child inherits the top's readonly


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

    def estimate_total(self) -> int:
        return int(self.params["size"]) * len(self.params["jobs"])

    def _tree_streams(self) -> list[tuple[TreeJob, Endpoint, Endpoint]]:
        p, out = self.params, []
        for rel, after in p["jobs"]:
            name = rel or "top"
            script = (
                f"echo start {name} >> {self.log}; sleep {p['slow']}; "
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


def test_the_first_failure_stops_the_others_and_fails_the_attempt(
    ctx: ActivityContext, tmp_path: Path
) -> None:
    act = run_tree(ctx, tmp_path, jobs=JOBS, fail="b", slow=0.5)
    assert act.wait(60) == "failed"
    assert (act.record().error or "").startswith("stream failed: b: producer exited 1")
    assert "a/x" not in [r for w, r in events(act) if w == "start"]  # nothing started after it


def test_cancel_kills_every_stream_then_rolls_back(ctx: ActivityContext, tmp_path: Path) -> None:
    act = run_tree(ctx, tmp_path, jobs=[["", None], ["a", None], ["b", None]], parallel=3, slow=30)
    deadline = time.monotonic() + 30
    while len(act._procs) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = list(act._procs)
    assert len(procs) == 6  # all three streams up
    threading.Thread(target=act.cancel, daemon=True).start()
    assert act.wait(60) == "cancelled"
    assert act.rolled_back
    assert all(p.poll() is not None for p in procs)
