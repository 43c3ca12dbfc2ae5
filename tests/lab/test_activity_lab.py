"""Backend activities on the lab: pipelines hosted by node1's agent (a pipeline runs on its own node; the
way to another node is the replicate kind, see test_replication*.py), controlled from the controller
through SSH only (the agent's `zfs-backend rpc` bridge)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from polling import NotYet, eventually

from zfs_backend.config import Settings
from zfs_backend.errors import ActivityNotFound, InvalidTransition
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.rpc.client import Node, RemoteActivity
from zfs_backend.rpc.connect import connect_node

MiB = 1 << 20


@pytest.fixture(scope="module")
def agent1(lab: Lab, lab_settings: Settings) -> Iterator[Node]:
    node = connect_node("node1", lab_settings)
    yield node
    node.close()


def _source(n1: SSHHost, path: str, size: int) -> str:
    n1.run(["dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={size // MiB}", "status=none"])
    return n1.run(["sha256sum", path]).text.split()[0]


def _params(src: str, dst: str, size: int, bwlimit: int | None = None) -> dict[str, object]:
    p: dict[str, object] = {
        "producer": {
            "host": "local",
            "argv": ["dd", f"if={src}", "bs=1M", "status=none"],
            "resume_argv": ["dd", f"if={src}", "bs=64K", "skip={offset}", "iflag=skip_bytes", "status=none"],
        },
        "consumer": {
            "host": "local",
            "argv": ["dd", f"of={dst}", "bs=1M", "status=none"],
            "resume_argv": [
                "dd",
                f"of={dst}",
                "bs=64K",
                "seek={offset}",
                "oflag=seek_bytes",
                "conv=notrunc",
                "status=none",
            ],
        },
        "offset_probe": {"host": "local", "argv": ["stat", "-c", "%s", dst]},
        "rollback": {"host": "local", "argv": ["rm", "-f", dst]},
        "total": size,
        "restart": "offset",
    }
    if bwlimit:
        p["bwlimit_bps"] = bwlimit
    return p


def _wait_progress(act: RemoteActivity, at_least: int, timeout: float = 30.0) -> None:

    def progressed() -> None:
        if act.progress[0] < at_least:
            assert act.state in ("pending", "running"), act.record().to_dict()
            raise NotYet("no progress")

    eventually(progressed, timeout, interval=0.1, retry=NotYet)


def _wait_done(act: RemoteActivity, timeout: float = 120.0) -> list[tuple[int, int]]:
    """Poll to the end, returning every progress seen (to check it never goes backwards)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        rec = act.refresh()
        seen.append(rec.progress.pair)
        if rec.state in ("succeeded", "failed", "cancelled"):
            return seen
        assert time.monotonic() < deadline, f"still {rec.state}"
        time.sleep(0.2)


def test_pipeline_ends_exactly_n_of_n(agent1: Node, nodes: dict[str, SSHHost]) -> None:
    size = 24 * MiB
    want = _source(nodes["node1"], "/tmp/act-src", size)
    act = agent1.start("pipeline", _params("/tmp/act-src", "/tmp/act-dst", size))
    seen = _wait_done(act)
    rec = act.record()
    assert rec.state == "succeeded" and rec.status == 0
    assert rec.progress.pair == (size, size)
    assert all(n <= m for n, m in seen) and [n for n, _ in seen] == sorted(n for n, _ in seen)
    assert rec.resources.elapsed_s > 0 and rec.resources.peak_rss_bytes > 0
    assert nodes["node1"].run(["sha256sum", "/tmp/act-dst"]).text.split()[0] == want
    assert act.self_restarting


def test_suspend_moves_no_bytes_then_resume(agent1: Node, nodes: dict[str, SSHHost]) -> None:
    size = 32 * MiB
    want = _source(nodes["node1"], "/tmp/sus-src", size)
    act = agent1.start("pipeline", _params("/tmp/sus-src", "/tmp/sus-dst", size, bwlimit=8 * MiB))
    _wait_progress(act, 4 * MiB)
    act.suspend()
    assert act.state == "suspended"
    time.sleep(0.7)  # let what was in flight land
    before = nodes["node1"].run(["stat", "-c", "%s", "/tmp/sus-dst"]).text.strip()
    n_before = act.progress[0]
    time.sleep(1.0)
    assert nodes["node1"].run(["stat", "-c", "%s", "/tmp/sus-dst"]).text.strip() == before
    assert act.progress[0] == n_before
    with pytest.raises(InvalidTransition):
        act.suspend()
    act.resume()
    _wait_done(act)
    assert act.record().progress.pair == (size, size)
    assert nodes["node1"].run(["sha256sum", "/tmp/sus-dst"]).text.split()[0] == want


def test_cancel_kills_and_rolls_back(agent1: Node, nodes: dict[str, SSHHost]) -> None:
    size = 32 * MiB
    _source(nodes["node1"], "/tmp/can-src", size)
    act = agent1.start("pipeline", _params("/tmp/can-src", "/tmp/can-dst", size, bwlimit=4 * MiB))
    _wait_progress(act, 2 * MiB)
    act.cancel()
    _wait_done(act, timeout=30)
    rec = act.record()
    assert rec.state == "cancelled" and rec.status == 130
    assert nodes["node1"].run(["test", "-e", "/tmp/can-dst"], check=False).returncode == 1  # rollback ran
    r = nodes["node1"].run(["pgrep", "-f", "if=/tmp/can-src"], check=False)
    assert r.returncode == 1, "producer still running"
    with pytest.raises(InvalidTransition):
        act.resume()


def test_agent_sigkill_mid_stream_carries_on(
    lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    size = 48 * MiB
    want = _source(nodes["node1"], "/tmp/kill-src", size)
    node = connect_node("node1", lab_settings)
    try:
        act = node.start("pipeline", _params("/tmp/kill-src", "/tmp/kill-dst", size, bwlimit=8 * MiB))
        _wait_progress(act, 8 * MiB)
        n_before = act.progress[0]
        lab.restart_service("node1", "agent", hard=True)  # SIGKILL, then start again
    finally:
        node.close()
    node = connect_node("node1", lab_settings)  # a fresh session to the new agent
    try:
        act = node.get(act.id)
        assert act.progress[0] >= n_before  # never backwards, even across the crash
        seen = _wait_done(act)
        assert [n for n, _ in seen] == sorted(n for n, _ in seen)
        rec = act.record()
        assert rec.state == "succeeded", rec.error
        assert rec.progress.pair == (size, size)
    finally:
        node.close()
    assert nodes["node1"].run(["sha256sum", "/tmp/kill-dst"]).text.split()[0] == want


def test_twenty_at_once_one_failing(agent1: Node, nodes: dict[str, SSHHost]) -> None:
    size = 2 * MiB
    _source(nodes["node1"], "/tmp/many-src", size)
    acts = [agent1.start("pipeline", _params("/tmp/many-src", f"/tmp/many-{i}", size)) for i in range(19)]
    bad = agent1.start(
        "pipeline",
        {
            "producer": {"host": "local", "argv": ["dd", "if=/nonexistent", "status=none"]},
            "consumer": {"host": "local", "argv": ["dd", "of=/dev/null", "status=none"]},
            "restart": "none",
        },
    )
    for a in acts:
        _wait_done(a)
    _wait_done(bad)
    assert [a.state for a in acts] == ["succeeded"] * 19
    assert bad.state == "failed" and bad.status != 0 and "nonexistent" in (bad.error or "")
    sums = nodes["node1"].run(["sh", "-c", "sha256sum /tmp/many-* | cut -d' ' -f1 | sort -u"]).text.split()
    assert len(sums) == 1


def test_cli_wait_exit_code_and_errors(
    agent1: Node, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    env = dict(
        os.environ, ZFS_BACKEND_HOME=str(lab_settings.home), ZFS_BACKEND_INVENTORY=str(lab_settings.inventory)
    )
    cli = [sys.executable, "-m", "zfs_backend.cli.main"]
    size = 4 * MiB
    _source(nodes["node1"], "/tmp/cli-src", size)
    act = agent1.start("pipeline", _params("/tmp/cli-src", "/tmp/cli-dst", size))
    waited = subprocess.run(
        [*cli, "activity", "wait", act.id, "--node", "node1", "--json"], env=env, capture_output=True
    )
    assert waited.returncode == 0, waited.stderr
    r = subprocess.run(
        [*cli, "activity", "resume", act.id, "--node", "node1"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 11 and r.stderr.count("\n") == 1 and "cannot resume" in r.stderr
    r = subprocess.run(
        [*cli, "activity", "show", "act-nope", "--node", "node1"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 10 and "Traceback" not in r.stderr
    with pytest.raises(ActivityNotFound):
        agent1.get("act-00000000000000000000000000")
