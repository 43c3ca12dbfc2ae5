"""A node's activity history on the lab, through the CLI: ``activity list`` shows every live activity and
a window of the finished ones however many the node keeps, and the agent's retention prunes finished
activities past their age at its start, never a live one however old (node3's agent, test kinds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.lab.node import NODE_HOME
from zfs_backend.rpc.client import Node
from zfs_backend.rpc.connect import connect_node

DB = f"{NODE_HOME}/agent/activities.db"
DAY = 86400.0
# Runs on node3: N finished activities into the agent's store (open by the running agent: WAL), finished
# AGE seconds ago and one second apart; and optionally back-dates one live activity by AGE.
_SEED = r"""
import sys, time
from zfs_backend.activity.store import ActivityStore, new_activity_id
db, n, age, live = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
st = ActivityStore(db)
fin = time.time() - age
with st._tx() as cur:
    for i in range(n):
        t = fin - n + i
        cur.execute("INSERT INTO activities (id, kind, node, state, status, done, total, created_at, "
                    "started_at, finished_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (new_activity_id(), "pipeline", "node3", "succeeded", 0, 1, 1, t, t, t, t))
    if live != "-":
        cur.execute("UPDATE activities SET created_at = ?, updated_at = ? WHERE id = ?", (fin, fin, live))
"""


@pytest.fixture(scope="module")
def agent3(lab: Lab, lab_settings: Settings) -> Iterator[Node]:
    node = connect_node("node3", lab_settings)
    yield node
    node.close()


def _cli(settings: Settings, *args: str) -> list[dict]:
    env = dict(os.environ, ZFS_BACKEND_HOME=str(settings.home), ZFS_BACKEND_INVENTORY=str(settings.inventory))
    argv = [sys.executable, "-m", "zfs_backend.cli.main", "activity", "list", "--node", "node3", "--json"]
    r = subprocess.run(
        [*argv, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def test_list_window_and_retention_through_the_cli(
    lab: Lab, lab_settings: Settings, agent3: Node, nodes: dict[str, SSHHost]
) -> None:
    n3 = nodes["node3"]
    n3.run(["dd", "if=/dev/zero", "of=/tmp/hist-src", "bs=1M", "count=4", "status=none"])
    live = agent3.start(
        "pipeline",
        {
            "producer": {"host": "local", "argv": ["dd", "if=/tmp/hist-src", "bs=64K", "status=none"]},
            "consumer": {"host": "local", "argv": ["sh", "-c", "cat > /dev/null"]},
            "bwlimit_bps": 64 * 1024,
            "total": 4 << 20,
            "restart": "none",
        },
    )
    live.suspend()
    before = {r["id"] for r in _cli(lab_settings, "--all")} - {live.id}  # other tests' history
    # 40 finished 40 days ago (past the default 30), the live one back-dated as far; 30 finished today
    n3.run([sys.executable, "-c", _SEED, DB, "40", str(40 * DAY), live.id])
    n3.run([sys.executable, "-c", _SEED, DB, "30", "60", "-"])
    everything = [r for r in _cli(lab_settings, "--all") if r["id"] not in before]
    assert len(everything) == 71
    shown = _cli(lab_settings)
    assert live.id in {r["id"] for r in shown}
    finished = [r for r in shown if r["state"] == "succeeded"]
    assert len(finished) == 20  # the default window: the 20 that finished last
    assert min(r["finished_at"] for r in finished) > time.time() - 3600
    assert [r["id"] for r in _cli(lab_settings, "--limit", "0")] == [live.id]
    ids = [r["id"] for r in shown]
    assert ids == sorted(ids)  # creation order

    lab.restart_service("node3", "agent")  # the retention prunes at the agent's start
    deadline = time.monotonic() + 60
    while True:
        try:
            left = [r for r in _cli(lab_settings, "--all") if r["id"] not in before]
        except AssertionError:  # the agent is still coming up
            left = everything
        if len(left) <= 31 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(left) == 31, "the 40 finished past 30 days were not pruned"
    assert all(r["finished_at"] > time.time() - DAY for r in left if r["state"] == "succeeded")
    kept = next(r for r in left if r["id"] == live.id)
    assert kept["state"] == "suspended"  # older than the age limit, live: never pruned
    node = connect_node("node3", lab_settings)
    try:
        node.get(live.id).cancel()
    finally:
        node.close()
