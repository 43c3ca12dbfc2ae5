"""Live controls of a pipeline (``activity.live``): the bandwidth limit changed while the stream runs,
and the stall watchdog."""

import os
import sys
import time

import pytest
from polling import until

from zfs_backend.activity import CommandPipeline, new_activity_id
from zfs_backend.activity.limits import parse_bwlimit_setting, parse_stall_timeout
from zfs_backend.activity.relay import Relay
from zfs_backend.errors import InvalidTransition, UsageError
from zfs_backend.hosts import LocalHost

sys.path.insert(0, os.path.dirname(__file__))  # --import-mode=importlib: make the helper importable
from pipeline_helpers import MiB, expected_bytes, pipeline_params, start


def rate_over(act, window):
    """Bytes/s the relay moved over ``window`` seconds."""
    c0, t0 = act._relay.count, time.monotonic()
    time.sleep(window)
    return (act._relay.count - c0) / (time.monotonic() - t0)


# -- the relay --------------------------------------------------------------------------------------
def test_relay_set_rate_changes_limit_and_chunk():
    r, w = os.pipe()
    try:
        relay = Relay(r, w, bwlimit_bps=10 * MiB)
        assert relay.bwlimit_bps == 10 * MiB and relay.chunk == MiB
        relay.set_rate(64 * 1024)
        assert relay.bwlimit_bps == 64 * 1024 and relay.chunk == 6553
        relay.set_rate(None)
        assert relay.bwlimit_bps is None and relay.chunk == MiB
        with pytest.raises(UsageError, match="bwlimit"):
            relay.set_rate(float("inf"))
        assert relay.bwlimit_bps is None  # a refused rate changes nothing
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("bad", [True, "1M", 1023, -5, 1 << 41, float("nan"), 10**400])
def test_bwlimit_setting_bounded(bad):
    with pytest.raises(UsageError, match="bwlimit"):
        parse_bwlimit_setting(bad)


def test_bwlimit_setting_accepts_none_and_whole_floats():
    assert parse_bwlimit_setting(None) is None
    assert parse_bwlimit_setting(2048.0) == 2048


@pytest.mark.parametrize("bad", [0, 9.9, -1, float("inf"), float("nan"), "60", True, 10**400])
def test_stall_timeout_bounded(ctx, tmp_path, bad):
    with pytest.raises(UsageError, match="stall_timeout_s"):
        parse_stall_timeout(bad)
    params = pipeline_params(tmp_path / "o", MiB, stall_timeout_s=bad)
    with pytest.raises(UsageError, match="stall_timeout_s"):
        CommandPipeline(CommandPipeline.new_record(new_activity_id(), params, ctx), ctx)
    assert ctx.store.list() == []


# -- live bandwidth limit ---------------------------------------------------------------------------
def test_bwlimit_changes_on_a_running_stream_without_restart(ctx, tmp_path):
    out = tmp_path / "out.bin"
    total = 48 * MiB
    act = start(ctx, pipeline_params(out, total, bwlimit_bps=2 * MiB))
    until(
        "the relay to move bytes",
        lambda: act._relay is not None and act._relay.count > 256 * 1024,
        interval=0.02,
    )
    pids = [p.pid for p in act._procs]
    slow = rate_over(act, 1.5)
    act.set_bwlimit(16 * MiB)
    assert act._relay.bwlimit_bps == 16 * MiB  # the running relay's, at once
    time.sleep(0.3)
    fast = rate_over(act, 1.0)
    assert fast > 2.5 * slow, (slow, fast)  # 8x asked: a ratio that a loaded machine still shows
    assert [p.pid for p in act._procs] == pids  # the same processes: no restart
    act.set_bwlimit(None)
    assert act._relay.bwlimit_bps is None
    assert act.wait(60) == "succeeded"
    assert out.read_bytes() == expected_bytes(total)
    cp = ctx.store.checkpoint(act.id)
    assert cp["attempts"] == 1 and cp.get("failures", 0) == 0 and cp["bwlimit_bps"] == 0
    details = [e["detail"] for e in ctx.store.events(act.id)]
    assert f"bwlimit set to {16 * MiB} bytes/s" in details and "bwlimit lifted" in details


def test_bwlimit_set_is_kept_for_the_next_attempt(ctx, tmp_path):
    out = tmp_path / "out.bin"
    act = start(ctx, pipeline_params(out, 32 * MiB, bwlimit_bps=1 * MiB))
    until("the relay to move bytes", lambda: act._relay is not None and act._relay.count > 0, interval=0.02)
    act.set_bwlimit(3 * MiB)
    act.detach()
    again = CommandPipeline(ctx.store.get(act.id), ctx)  # an agent restart
    assert again._bwlimit() == 3 * MiB
    again.set_bwlimit(None)
    again.start()
    assert again.wait(60) == "succeeded"
    assert out.read_bytes() == expected_bytes(32 * MiB)


def test_bwlimit_refused_when_terminal_or_absurd(ctx, tmp_path):
    act = start(ctx, pipeline_params(tmp_path / "o", MiB))
    assert act.wait(30) == "succeeded"
    with pytest.raises(InvalidTransition, match="succeeded"):
        act.set_bwlimit(MiB)
    act2 = start(ctx, pipeline_params(tmp_path / "p", 16 * MiB, bwlimit_bps=MiB))
    with pytest.raises(UsageError):
        act2.set_bwlimit(12)
    assert act2._bwlimit() == MiB
    act2.cancel()


# -- the stall watchdog -----------------------------------------------------------------------------
#: writes 1 MiB then hangs the first time (flag file absent), the whole stream the next time
HANGS_ONCE = r"""
import os, random, sys, time
total, flag = int(sys.argv[1]), sys.argv[2]
out = sys.stdout.buffer
first = not os.path.exists(flag)
open(flag, "a").close()
pos, block = 0, 0
while pos < total:
    data = random.Random(block).randbytes(1 << 20)[: total - pos]
    out.write(data)
    out.flush()
    pos += len(data)
    block += 1
    if first:
        time.sleep(3600)
"""


class QuickWatch(CommandPipeline):
    KIND = "test-quick-watch"
    stall_timeout_s = 1.5
    backoff_s = 0.1


def test_stalled_stream_torn_down_and_restarted(ctx, tmp_path):
    out, total = tmp_path / "out.bin", 4 * MiB
    params = pipeline_params(out, total, restart="rerun")
    params["producer"] = {"argv": [sys.executable, "-c", HANGS_ONCE, str(total), str(tmp_path / "flag")]}
    act = start(ctx, params, cls=QuickWatch)
    assert act.wait(60) == "succeeded", act.error
    assert out.read_bytes() == expected_bytes(total)
    cp = ctx.store.checkpoint(act.id)
    assert cp["attempts"] == 2 and cp["failures"] == 1
    assert cp["last_error"].startswith("stalled: no byte moved for")
    assert any((e["detail"] or "").startswith("stalled: ") for e in ctx.store.events(act.id))


def test_slow_throttled_and_suspended_streams_are_not_stalled(ctx, tmp_path):
    out, total = tmp_path / "out.bin", 512 * 1024
    act = start(ctx, pipeline_params(out, total, bwlimit_bps=64 * 1024), cls=QuickWatch)
    until("the relay to move bytes", lambda: act._relay is not None and act._relay.count > 0, interval=0.02)
    act.suspend()
    time.sleep(3 * QuickWatch.stall_timeout_s)  # suspended: no byte, and no stall
    act.resume()
    assert act.wait(60) == "succeeded", act.error  # ~8 s at 64 KiB/s: each batch well inside 1.5 s
    assert ctx.store.checkpoint(act.id)["attempts"] == 1
    assert not any((e["detail"] or "").startswith("stalled") for e in ctx.store.events(act.id))
    assert out.read_bytes() == expected_bytes(total)


def test_relay_idle_counts_only_while_running_unpaused():
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    prod = LocalHost().spawn(["sleep", "30"], stdout=w1)
    os.close(w1)
    relay = Relay(r1, w2)
    assert relay.idle_s() == 0.0  # not started
    import threading

    t = threading.Thread(target=relay.run)
    t.start()
    time.sleep(0.5)
    assert relay.idle_s() >= 0.4
    relay.pause()
    assert relay.idle_s() == 0.0
    relay.unpause()
    assert relay.idle_s() < 0.4
    relay.tear_down("stalled: test")
    prod.kill()
    prod.wait()
    t.join(5)
    assert relay.torn_down == "stalled: test"
    relay.close()
    os.close(r2)
