import itertools
import os
import sys
import threading
import time

import psutil
import pytest
from polling import until

from zfs_backend.activity import ActivityContext, ActivityStore, CommandPipeline
from zfs_backend.activity.core import kind_factory, register_kind, registered_kinds
from zfs_backend.activity.pipeline import Endpoint, PipelineActivity
from zfs_backend.activity.relay import Relay
from zfs_backend.errors import InvalidTransition, UsageError
from zfs_backend.hosts import LocalHost

sys.path.insert(0, os.path.dirname(__file__))  # --import-mode=importlib: make the helper importable
from pipeline_helpers import PRODUCER, MiB, expected_bytes, pipeline_params, start


def watch_progress(act, stop):
    seen = []
    while not stop.is_set():
        seen.append(act.progress)
        time.sleep(0.02)
    seen.append(act.progress)
    return seen


def assert_monotone(seen):
    for (n0, m0), (n1, m1) in itertools.pairwise(seen):
        assert n1 >= n0, seen
        assert n1 <= m1 or (n1, m1) == (0, 0)
        assert m1 >= m0 or (n1 == m1)


def test_kind_registry():
    assert "pipeline" in registered_kinds()
    assert kind_factory("pipeline") is CommandPipeline
    with pytest.raises(UsageError, match="unknown activity kind"):
        kind_factory("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_kind("pipeline", lambda r, c: CommandPipeline(r, c))


def test_bad_params_refused(ctx, tmp_path):
    with pytest.raises(UsageError):
        start(ctx, {"producer": {"argv": "echo hi"}, "consumer": {"argv": ["cat"]}})
    with pytest.raises(UsageError, match="offset"):
        start(ctx, {"producer": {"argv": ["true"]}, "consumer": {"argv": ["cat"]}, "restart": "offset"})
    for bw in (float("inf"), float("nan"), 1e400, -1, (1 << 40) + 1):
        with pytest.raises(UsageError, match="bwlimit"):
            start(ctx, {"producer": {"argv": ["true"]}, "consumer": {"argv": ["cat"]}, "bwlimit_bps": bw})
    assert ctx.store.list() == []


@pytest.mark.parametrize("bw", [float("inf"), float("nan"), float(1 << 41)])
def test_relay_refuses_an_absurd_rate(bw):
    r, w = os.pipe()
    try:
        with pytest.raises(UsageError, match="bwlimit"):
            Relay(r, w, bwlimit_bps=bw)
    finally:
        os.close(r)
        os.close(w)


def test_stream_succeeds_exactly(ctx, tmp_path):
    out = tmp_path / "out.bin"
    total = 6 * MiB + 12345
    act = start(ctx, pipeline_params(out, total))
    stop = threading.Event()
    seen: list = []
    t = threading.Thread(target=lambda: seen.extend(watch_progress(act, stop)))
    t.start()
    assert act.wait(30) == "succeeded"
    stop.set()
    t.join()
    assert act.status == 0 and act.error is None
    assert act.progress == (total, total)
    assert_monotone(seen)
    assert out.read_bytes() == expected_bytes(total)
    rec = ctx.store.get(act.id)
    assert rec.progress.pair == (total, total)
    assert rec.finished_at and rec.started_at
    res = act.resources()
    assert res.cpu_s > 0 and res.peak_rss_bytes > 0 and res.elapsed_s > 0
    assert res.net_bytes_sent == 0  # both sides local: no network


def test_unknown_total_reports_zero_zero_until_success(ctx, tmp_path):
    out = tmp_path / "out.bin"
    params = pipeline_params(out, 3 * MiB)
    del params["total"]
    act = start(ctx, params)
    assert act.wait(30) == "succeeded"
    assert act.progress == (3 * MiB, 3 * MiB)


def test_failure_carries_stderr_and_code(ctx, tmp_path):
    params = {
        "producer": {"argv": [sys.executable, "-c", PRODUCER, str(MiB)]},
        "consumer": {"argv": ["sh", "-c", "echo disk on fire >&2; exit 3"]},
        "restart": "none",
    }
    act = start(ctx, params)
    assert act.wait(30) == "failed"
    assert act.status == 3
    assert "consumer exited 3: disk on fire" in act.error
    with pytest.raises(InvalidTransition, match=f"cannot resume activity {act.id}: it is failed"):
        act.resume()


def test_retries_then_fails_with_clear_error(ctx, tmp_path):
    params = {
        "producer": {"argv": ["sh", "-c", "echo flaky >&2; exit 7"]},
        "consumer": {"argv": ["cat"]},
        "restart": "rerun",
        "max_retries": 2,
        "backoff_s": 0.05,
    }
    act = start(ctx, params)
    assert act.wait(30) == "failed"
    assert act.status == 7
    assert act.error.startswith("stream failed after 3 attempts: producer exited 7: flaky")
    assert ctx.store.checkpoint(act.id)["attempts"] == 3


def _consumer_size(path):
    return path.stat().st_size if path.exists() else 0


def test_suspend_moves_no_byte_then_resume(ctx, tmp_path):
    out = tmp_path / "out.bin"
    total = 12 * MiB
    act = start(ctx, pipeline_params(out, total, bwlimit_bps=6 * MiB))
    until(
        "2 MiB through the relay",
        lambda: act._relay is not None and act._relay.count >= 2 * MiB,
        10,
        interval=0.02,
    )
    act.suspend()
    assert act.state == "suspended"
    assert ctx.store.get(act.id).state == "suspended"  # persisted before reported
    time.sleep(0.3)  # let the consumer write what it already holds
    count0, size0, prog0 = act._relay.count, _consumer_size(out), act.progress
    time.sleep(1.0)
    assert act._relay.count == count0
    assert _consumer_size(out) == size0
    assert act.progress == prog0
    pids = [p.pid for p in act._procs]
    assert all(psutil.pid_exists(p) for p in pids)  # the processes stay
    with pytest.raises(InvalidTransition, match="cannot suspend"):
        act.suspend()
    act.resume()
    assert act.wait(30) == "succeeded"
    assert out.read_bytes() == expected_bytes(total)


class RollbackPipeline(CommandPipeline):
    KIND = "test-rollback"
    rolled_back = False

    def rollback(self):
        RollbackPipeline.rolled_back = True
        super().rollback()


def test_cancel_kills_groups_and_rolls_back(ctx, tmp_path):
    out = tmp_path / "out.bin"
    params = pipeline_params(out, 64 * MiB, bwlimit_bps=4 * MiB, rollback={"argv": ["rm", "-f", str(out)]})
    act = start(ctx, params, cls=RollbackPipeline)
    until("the pipeline's first bytes", lambda: bool(act._procs) and act.progress[0] > 0, 10, interval=0.05)
    pgids = [p.pid for p in act._procs]
    act.cancel()
    assert act.state == "cancelled"
    assert act.status == 130
    assert RollbackPipeline.rolled_back
    assert not out.exists()
    for pg in pgids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pg, 0)
    with pytest.raises(InvalidTransition, match="cannot cancel"):
        act.cancel()
    assert [e["new"] for e in ctx.store.events(act.id)][-2:] == ["cancelling", "cancelled"]


def test_cancel_while_suspended(ctx, tmp_path):
    out = tmp_path / "out.bin"
    act = start(ctx, pipeline_params(out, 64 * MiB, bwlimit_bps=4 * MiB))
    while act.progress[0] == 0:
        time.sleep(0.05)
    act.suspend()
    act.cancel()
    assert act.state == "cancelled"


def test_bandwidth_limit_roughly_respected(ctx, tmp_path):
    out = tmp_path / "out.bin"
    total = 4 * MiB
    t0 = time.monotonic()
    act = start(ctx, pipeline_params(out, total, bwlimit_bps=2 * MiB))
    assert act.wait(30) == "succeeded"
    elapsed = time.monotonic() - t0
    assert 1.2 < elapsed < 8.0  # ~2 s at 2 MiB/s (a first bucket of tokens is free)


def test_relay_rate_unlimited_and_flat_memory(tmp_path):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    total = 256 * MiB
    prod = LocalHost().spawn(["head", "-c", str(total), "/dev/zero"], stdout=w1)
    cons = LocalHost().spawn(["sh", "-c", "cat > /dev/null"], stdin=r2)
    os.close(w1)
    os.close(r2)
    relay = Relay(r1, w2)
    rss0 = psutil.Process().memory_info().rss
    t0 = time.monotonic()
    assert relay.run() == Relay.EOF
    dt = time.monotonic() - t0
    relay.close()
    assert prod.wait() == 0 and cons.wait() == 0
    assert relay.count == total
    assert psutil.Process().memory_info().rss - rss0 < 32 * MiB
    assert total / dt > 50 * MiB  # generous: splice moves hundreds of MiB/s here


class OffsetKind(PipelineActivity):
    """A subclass kind built only from hooks, as the replication layer will do."""

    KIND = "test-offset"
    restart_mode = "offset"
    calls: list = []

    def plan(self):
        self.kind_state["planned_by"] = "test"
        OffsetKind.calls.append("plan")

    def estimate_total(self):
        return int(self.params["total"])

    def build_producer(self, offset):
        return Endpoint(LocalHost(), [sys.executable, "-c", PRODUCER, str(self.params["total"]), str(offset)])

    def build_consumer(self, offset):
        out = self.params["out"]
        return Endpoint(
            LocalHost(),
            ["dd", f"of={out}", "bs=1M", f"seek={offset}", "oflag=seek_bytes", "conv=notrunc", "status=none"],
        )

    def on_restart(self, checkpoint):
        OffsetKind.calls.append(("restart", checkpoint["delivered"]))

    def on_success(self):
        OffsetKind.calls.append("success")


def test_subclass_kind_restarts_from_offset_in_a_new_host(ctx, tmp_path):
    """Detach (agent shutdown) mid-stream, rebuild from the store, finish byte-identical."""
    out = tmp_path / "out.bin"
    total = 16 * MiB
    params = {"total": total, "out": str(out), "bwlimit_bps": 8 * MiB}
    act = start(ctx, params, cls=OffsetKind)
    while act.progress[0] < 3 * MiB:
        time.sleep(0.05)
    act.detach()
    rec = ctx.store.get(act.id)
    assert rec.state == "running"
    n_before = rec.progress.done
    assert ctx.store.checkpoint(act.id)["kind"] == {"planned_by": "test"}
    again = OffsetKind(rec, ctx)  # what the agent does after a restart
    again.start()
    assert again.wait(30) == "succeeded"
    assert again.progress == (total, total) and again.progress[0] >= n_before
    assert out.read_bytes() == expected_bytes(total)
    assert OffsetKind.calls[0] == "plan" and OffsetKind.calls.count("plan") == 1
    assert OffsetKind.calls[1][0] == "restart" and OffsetKind.calls[-1] == "success"


def test_rerun_mode_never_double_counts(ctx, tmp_path):
    out = tmp_path / "out.bin"
    total = 8 * MiB
    params = pipeline_params(out, total, bwlimit_bps=8 * MiB, restart="rerun")
    params["consumer"] = {"argv": ["dd", f"of={out}", "bs=1M", "status=none"]}
    act = start(ctx, params)
    while act.progress[0] < 2 * MiB:
        time.sleep(0.05)
    act.detach()
    rec = ctx.store.get(act.id)
    again = CommandPipeline(rec, ctx)
    stop = threading.Event()
    seen: list = []
    t = threading.Thread(target=lambda: seen.extend(watch_progress(again, stop)))
    t.start()
    again.start()
    assert again.wait(30) == "succeeded"
    stop.set()
    t.join()
    assert_monotone([rec.progress.pair, *seen])
    assert again.progress == (total, total)
    assert out.read_bytes() == expected_bytes(total)


def test_twenty_concurrent_pipelines_isolated(ctx, tmp_path):
    acts = []
    for i in range(20):
        out = tmp_path / f"out{i}.bin"
        if i == 7:  # one bad apple
            params = {"producer": {"argv": ["false"]}, "consumer": {"argv": ["cat"]}, "restart": "none"}
        else:
            params = pipeline_params(out, 2 * MiB + i)
        acts.append(start(ctx, params))
    for a in acts:
        a.wait(60)
    for i, a in enumerate(acts):
        if i == 7:
            assert a.state == "failed"
        else:
            assert a.state == "succeeded", a.error
            assert a.progress == (2 * MiB + i, 2 * MiB + i)
            assert (tmp_path / f"out{i}.bin").read_bytes() == expected_bytes(2 * MiB + i)


class EnvHost(LocalHost):
    """Looks remote to the pipeline (its local process is a wrapper, like ``ssh``)."""

    def stream_argv(self, argv):
        return ["env", *argv]


class RemoteConsumerPipeline(CommandPipeline):
    """The pipeline kind with its consumer behind a wrapper process, as a kind reaching another node does
    (``ssh``): the wrapper is the network endpoint whose bytes are counted."""

    KIND = "test-remote-consumer"

    def build_consumer(self, offset):
        return Endpoint(EnvHost("node2"), super().build_consumer(offset).argv)


def test_network_bytes_from_the_endpoint_process(tmp_path):
    st = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=st, node="test")
    out = tmp_path / "out.bin"
    total = 4 * MiB
    act = start(ctx, pipeline_params(out, total), cls=RemoteConsumerPipeline)
    assert act.wait(30) == "succeeded", act.error
    res = act.resources()
    assert res.net_bytes_sent >= total  # the endpoint's wchar (dd wrote the file)
    assert res.net_bytes_received == 0
    assert out.read_bytes() == expected_bytes(total)


def test_a_pipeline_runs_on_its_own_node_only(ctx, tmp_path):
    params = pipeline_params(tmp_path / "out.bin", MiB)
    params["consumer"]["host"] = "node2"
    with pytest.raises(UsageError, match="its own node only"):
        start(ctx, params)
    assert ctx.store.list() == []


def test_offset_probe_decides_the_restart_offset(ctx, tmp_path):
    out = tmp_path / "out.bin"
    total = 12 * MiB
    params = pipeline_params(
        out, total, bwlimit_bps=8 * MiB, offset_probe={"argv": ["stat", "-c", "%s", str(out)]}
    )
    act = start(ctx, params)
    while act.progress[0] < 2 * MiB:
        time.sleep(0.05)
    act.detach()
    with out.open("r+b") as f:  # the consumer lost its tail: the probe must see it
        f.truncate(MiB)
    again = CommandPipeline(ctx.store.get(act.id), ctx)
    again.start()
    assert again.wait(30) == "succeeded"
    assert out.read_bytes() == expected_bytes(total)


class SlowPlanPipeline(CommandPipeline):
    KIND = "test-slow-plan"
    planning = threading.Event()

    def plan(self):
        SlowPlanPipeline.planning.set()
        time.sleep(0.5)


def test_suspend_while_planning_is_not_overridden(ctx, tmp_path):
    out = tmp_path / "out.bin"
    act = start(ctx, pipeline_params(out, 2 * MiB), cls=SlowPlanPipeline)
    assert SlowPlanPipeline.planning.wait(10)
    assert act.state == "pending"
    act.suspend()  # the worker is still planning
    assert act.state == "suspended"
    time.sleep(1.0)  # planning ends meanwhile; it must not move the activity to running
    assert act.state == "suspended" and ctx.store.get(act.id).state == "suspended"
    assert not out.exists() or out.stat().st_size == 0
    act.resume()
    assert act.wait(30) == "succeeded"
    assert out.read_bytes() == expected_bytes(2 * MiB)


def test_short_estimate_is_revised_upward_never_stuck_at_m(ctx, tmp_path):
    out = tmp_path / "out.bin"
    real = 8 * MiB
    params = pipeline_params(out, real, bwlimit_bps=8 * MiB)
    params["total"] = 2 * MiB  # the estimate is 4x short
    act = start(ctx, params)
    stop = threading.Event()
    seen: list = []
    t = threading.Thread(target=lambda: seen.extend(watch_progress(act, stop)))
    t.start()
    assert act.wait(30) == "succeeded"
    stop.set()
    t.join()
    running = [(n, m) for n, m in seen[:-1] if (n, m) != (0, 0)]
    assert any(m > 2 * MiB for _, m in running), running  # m was revised
    assert all(n < m for n, m in running if n > 2 * MiB), running  # never n == m past the estimate
    assert all(n <= m for n, m in seen)
    assert act.progress == (real, real)
    assert out.read_bytes() == expected_bytes(real)


@pytest.mark.parametrize("end", ["succeeded", "cancelled"])
def test_the_terminal_record_carries_the_final_resources(ctx, tmp_path, end):
    """Whoever sees the terminal state sees the final resources with it, in the same transaction: a
    waiter woken by the move (a remote client's ``wait``) and a later ``get`` agree. (Saved after the
    move, they differed: an agent test's ``record() == get()`` failed under load.)"""
    terminal_records = []
    real = ctx.store.transition

    def transition(activity_id, new, **kw):
        rec = real(activity_id, new, **kw)
        if new in ("succeeded", "cancelled", "failed"):
            terminal_records.append(rec)
            time.sleep(0.2)  # a waiter reads now
        return rec

    ctx.store.transition = transition
    params = pipeline_params(tmp_path / "o", 4 * MiB, bwlimit_bps=8 * MiB if end == "cancelled" else None)
    act = start(ctx, params)
    if end == "cancelled":
        time.sleep(0.2)
        act.cancel()
    assert act.wait(20) == end
    act.join(5)
    assert len(terminal_records) == 1
    final = ctx.store.get(act.id)
    assert terminal_records[0].resources == final.resources
    assert final.resources.elapsed_s == pytest.approx(final.finished_at - final.started_at, abs=0.05)
