"""A kind whose restart loses nothing (``suspend_tears_down``): ``suspend`` stops the stream's processes
instead of pausing the relay, the state stays ``suspended`` (persisted, carried on by a new host), and
``resume`` restarts the stream through ``on_restart``, counting on from what the consumer holds
(``stream_resumes_at``); cancel while suspended rolls back. The replication's use of it (a resume token)
is in tests/unit/replication/test_replication_resume.py and on the VMs."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from polling import until

from zfs_backend.activity import ActivityContext, CommandPipeline
from zfs_backend.activity.pipeline import Endpoint

sys.path.insert(0, os.path.dirname(__file__))  # --import-mode=importlib: make the helper importable
from pipeline_helpers import MiB, expected_bytes, pipeline_params, start


class TokenLike(CommandPipeline):
    """A "rerun" kind that resumes like ``zfs send -t``: on restart it asks what the consumer holds (the
    file's size, as a receive token says), the producer skips that much and the consumer appends."""

    KIND = "test-token-like"
    restarts: list[int] = []
    rolled_back: list[str] = []

    def __init__(self, record: Any, ctx: ActivityContext) -> None:
        super().__init__(record, ctx)
        self._held: int | None = None

    def suspend_tears_down(self) -> bool:
        return True

    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        assert self._cons is not None
        self._held = Path(self._cons["argv"][1].removeprefix("of=")).stat().st_size
        TokenLike.restarts.append(self._held)

    def build_producer(self, offset: int) -> Endpoint:
        assert self._prod is not None
        return self._endpoint(self._prod, self._held or 0)

    def build_consumer(self, offset: int) -> Endpoint:
        assert self._cons is not None
        return self._endpoint(self._cons, self._held or 0)

    def stream_resumes_at(self) -> int | None:
        return self._held

    def rollback(self) -> None:
        TokenLike.rolled_back.append(self.id)
        super().rollback()


def _params(out: Path, total: int, **extra: Any) -> dict[str, Any]:
    return pipeline_params(out, total, bwlimit_bps=4 * MiB, restart="rerun", **extra)


def _gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def _suspended_and_torn_down(act: Any) -> list[int]:
    until("2 MiB through the relay", lambda: act.progress[0] >= 2 * MiB, 20, interval=0.02)
    pids = [p.pid for p in act._procs]
    assert len(pids) == 2
    act.suspend()
    assert act.state == "suspended"
    assert act.ctx.store.get(act.id).state == "suspended"  # persisted before reported
    until("no process of the stream left", lambda: _gone(pids), 20, interval=0.05)
    until("the worker is done with the stream", lambda: act._relay is None, 20, interval=0.05)
    return pids


def _still(act: Any) -> bool:
    n = act._relay.count
    time.sleep(0.5)
    return bool(act._relay.count == n)


def _watch(act: Any, stop: threading.Event, seen: list[tuple[int, int]]) -> None:
    while not stop.is_set():
        seen.append(act.progress)
        time.sleep(0.02)


def test_suspend_stops_the_stream_and_resume_restarts_it_counting_on(
    ctx: ActivityContext, tmp_path: Path
) -> None:
    out = tmp_path / "out.bin"
    total = 12 * MiB
    TokenLike.restarts.clear()
    act = start(ctx, _params(out, total), cls=TokenLike)
    _suspended_and_torn_down(act)
    n0 = act.progress[0]
    size0 = out.stat().st_size
    time.sleep(0.5)
    assert (act.progress[0], out.stat().st_size, act.state) == (n0, size0, "suspended")  # nothing moves
    assert ctx.store.get(act.id).status is None  # not a failure
    assert "last_error" not in ctx.store.checkpoint(act.id)
    stop, seen = threading.Event(), [act.progress]
    watcher = threading.Thread(target=_watch, args=(act, stop, seen))
    watcher.start()
    act.resume()
    assert act.wait(30) == "succeeded"
    stop.set()
    watcher.join()
    seen.append(act.progress)
    assert TokenLike.restarts == [size0]  # restarted once, from what the consumer held
    assert out.read_bytes() == expected_bytes(total)
    assert act.progress == (total, total)  # n == m: the resumed stream counted on from size0
    assert all(n1 >= n0 for (n0, _), (n1, _) in itertools.pairwise(seen)), seen


def test_suspended_survives_a_new_host_and_resumes_there(ctx: ActivityContext, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    total = 12 * MiB
    TokenLike.restarts.clear()
    act = start(ctx, _params(out, total), cls=TokenLike)
    _suspended_and_torn_down(act)
    act.detach()  # the agent stops
    rec = ctx.store.get(act.id)
    assert rec.state == "suspended"
    again = TokenLike(rec, ctx)  # what the next agent does with a stored, non-terminal record
    again.start()
    time.sleep(0.5)
    assert again.state == "suspended" and again._procs == [] and TokenLike.restarts == []
    again.resume()
    assert again.wait(30) == "succeeded"
    assert out.read_bytes() == expected_bytes(total)
    assert again.progress == (total, total)


def test_cancel_while_torn_down_rolls_back(ctx: ActivityContext, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    TokenLike.rolled_back.clear()
    act = start(ctx, _params(out, 64 * MiB, rollback={"argv": ["rm", "-f", str(out)]}), cls=TokenLike)
    _suspended_and_torn_down(act)
    act.cancel()
    assert act.state == "cancelled"
    assert TokenLike.rolled_back == [act.id]
    assert not out.exists()


@pytest.mark.parametrize("blocked", [False, True], ids=["relay-free", "relay-blocked"])
def test_a_stream_that_will_not_end_is_killed(ctx: ActivityContext, tmp_path: Path, blocked: bool) -> None:
    """A side that ignores its closed pipe (here: a consumer that stops reading) is killed after
    ``stale_exit_wait_s``, so nothing of the stream is left while suspended; also when the relay is
    blocked writing to it (it sees the abort only once that write fails)."""
    out = tmp_path / "out.bin"
    params = _params(out, 64 * MiB)
    reads = (1 << 20) if blocked else (3 << 20)
    params["consumer"] = {
        "argv": [sys.executable, "-c", f"import sys, time\nsys.stdin.buffer.read({reads})\ntime.sleep(600)"]
    }
    act = start(ctx, params, cls=CommandPipelineTearing)
    until("the consumer reads", lambda: act.progress[0] >= 1.5 * MiB, 20, interval=0.02)
    if blocked:  # the consumer's pipe full: the relay waits in its write
        until("the relay blocked", lambda: _still(act), 20, interval=0.05)
    pids = [p.pid for p in act._procs]
    act.suspend()
    until("no process of the stream left", lambda: _gone(pids), 20, interval=0.05)
    assert act.state == "suspended"
    act.cancel()
    assert act.state == "cancelled"


class CommandPipelineTearing(CommandPipeline):
    KIND = "test-tearing"
    stale_exit_wait_s = 0.5

    def suspend_tears_down(self) -> bool:
        return True


def test_the_default_suspend_pauses_and_keeps_the_processes(ctx: ActivityContext, tmp_path: Path) -> None:
    """Kinds that do not tear down (the default; zfs-fuse replications) keep today's suspend."""
    out = tmp_path / "out.bin"
    act = start(ctx, _params(out, 12 * MiB))
    until("2 MiB through the relay", lambda: act.progress[0] >= 2 * MiB, 20, interval=0.02)
    act.suspend()
    time.sleep(0.3)
    assert act._relay is not None and act._relay.paused
    assert all(psutil.pid_exists(p.pid) for p in act._procs)
    act.resume()
    assert act.wait(30) == "succeeded"
    assert out.read_bytes() == expected_bytes(12 * MiB)
