"""Retention of finished activities: the agent prunes its store at start (and every few minutes) to the
configured count and age; the pruner survives a failing round; the ``list`` op's window is checked."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import pytest
from polling import until

from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore, new_activity_id
from zfs_backend.agent.retention import DAY_S, Pruner, Retention
from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError, ProtocolError
from zfs_backend.rpc.client import Node
from zfs_backend.rpc.protocol import LIST_LIMIT, list_window

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from test_agent_daemon import Agent


def _seed(db: Path, n: int) -> list[str]:
    st = ActivityStore(db)
    ids = []
    for _ in range(n):
        rec = st.insert(ActivityRecord(id=new_activity_id(), kind="pipeline", node="n1"))
        st.transition(rec.id, "running")
        st.transition(rec.id, "succeeded", status=0)
        ids.append(rec.id)
    st.close()
    return ids


def test_settings_defaults_and_bounds() -> None:
    r = Retention.from_settings(load_settings({}))
    assert (r.keep, r.max_age_s) == (10_000, 30 * DAY_S)
    env = {"ZFS_BACKEND_ACTIVITY_KEEP": "50", "ZFS_BACKEND_ACTIVITY_KEEP_DAYS": "2"}
    assert Retention.from_settings(load_settings(env)) == Retention(50, 2 * DAY_S)
    for key in ("ZFS_BACKEND_ACTIVITY_KEEP", "ZFS_BACKEND_ACTIVITY_KEEP_DAYS"):
        for bad in ("0", "-1", "ten", "9" * 30):
            with pytest.raises(ConfigError, match=key):
                load_settings({key: bad})


def test_the_agent_prunes_at_start_and_lists_a_window(tmp_path: Path) -> None:
    a = Agent(tmp_path)
    ids = _seed(a.home / "agent" / "activities.db", 12)
    a.env["ZFS_BACKEND_ACTIVITY_KEEP"] = "5"
    a.start()
    try:
        node = Node.local(socket_path=a.sock)
        until("the agent to prune", lambda: len(node.client.list(limit=None)) <= 5, 30, interval=0.1)
        assert [r.id for r in node.client.list(limit=None)] == ids[-5:]
        assert [r.id for r in node.client.list(limit=2)] == ids[-2:]
        assert node.client.list(limit=0) == []
        assert [r.id for r in node.client.list(since=time.time() + 60)] == []
        with pytest.raises(ProtocolError, match="limit"):
            node.client.call("list", limit=-1)
        assert '"msg": "pruned finished activities"' in (a.home / "agent" / "agent.log").read_text()
    finally:
        a.stop()


@pytest.mark.parametrize(
    ("args", "window"),
    [({}, (LIST_LIMIT, None)), ({"limit": None}, (None, None)), ({"limit": 3, "since": 5}, (3, 5.0))],
)
def test_list_window(args: dict, window: tuple) -> None:
    assert list_window(args) == window


@pytest.mark.parametrize("args", [{"limit": -1}, {"limit": "10"}, {"limit": True}, {"since": "now"}])
def test_list_window_refused(args: dict) -> None:
    with pytest.raises(ProtocolError, match="list: "):
        list_window(args)


class _Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def prune(self, *, keep: int, max_age_s: float, now: float | None = None) -> int:
        self.calls += 1
        if self.calls == 1:
            raise OSError("database is locked")
        self.done.set()
        return 0


def test_a_failing_round_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    store = _Flaky()
    p = Pruner(store, Retention(1, 1.0), logging.getLogger("t"), interval=0.01)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        p.start()
        assert store.done.wait(30)
        p.stop()
    assert not p.is_alive() and store.calls >= 2
    assert "pruning finished activities failed" in caplog.text
