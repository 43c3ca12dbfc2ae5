"""Live controls of a running replication and the project's holds, on the lab, through the command line:
``activity set ID --bwlimit`` (no restart), the stall watchdog on a blackholed link (``lab link``), and
``activity holds [--release-stale]`` after a standby-sync that crashed and one that failed.

Rates are measured from the activity's own counter over windows of seconds; the assertions are ratios
far from the rates asked (8x asked, 2.5x asserted), never a time."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from polling import NotYet, eventually, until

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.lab.node import NODE_CLAIM_LEASE_S
from zfs_backend.replication.granted import start_granted
from zfs_backend.zfs import Zfs, parse_snapshot

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import (
    MiB,
    _agent,
    checksums,
    cli,
    guid,
    new_name,
    replicate,
    snapshot,
    write,
)


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab, nodes: dict[str, SSHHost]) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def ok(settings: Settings, *argv: str, timeout: float = 300) -> str:
    res = cli(settings, *argv, timeout=timeout)
    assert res.returncode == 0, (argv, res.stdout, res.stderr)
    return res.stdout


def record(settings: Settings, aid: str) -> dict:
    return json.loads(ok(settings, "activity", "show", aid, "--node", "node1", "--json"))


def events(settings: Settings, aid: str, node: str = "node1") -> list[dict]:
    return json.loads(ok(settings, "activity", "events", aid, "--node", node, "--json"))


def done_bytes(settings: Settings, aid: str) -> int:
    return int(record(settings, aid)["progress"]["done"])


def rate_over(settings: Settings, aid: str, window: float) -> float:
    n0, t0 = done_bytes(settings, aid), time.monotonic()
    time.sleep(window)
    n1, t1 = done_bytes(settings, aid), time.monotonic()
    return (n1 - n0) / (t1 - t0)


def send_pids(src: SSHHost) -> set[str]:
    """The pids of the ``zfs send`` processes on the source node (the stream's producer)."""
    out = src.run(["ps", "-eo", "pid=,args="]).text
    return {line.split()[0] for line in out.splitlines() if " send " in f" {line} " and "zfs" in line}


def wait_bytes(settings: Settings, aid: str, at_least: int, timeout: float = 60) -> None:

    def moved() -> None:
        if done_bytes(settings, aid) < at_least:
            raise NotYet(str(record(settings, aid)))

    eventually(moved, timeout, interval=0.2, retry=NotYet)


def test_bwlimit_changed_on_a_running_replication(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 64)
    snapshot(src, ds, "s1")
    out = ok(
        lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--bwlimit", "1M", "--detach", "--json"
    )
    aid = json.loads(out)["id"]
    try:
        wait_bytes(lab_settings, aid, 512 * 1024)
        pids = send_pids(src)
        slow = rate_over(lab_settings, aid, 3.0)
        said = ok(lab_settings, "activity", "set", aid, "--node", "node1", "--bwlimit", "8M")
        assert "bwlimit 8.0 MiB/s" in said, said
        time.sleep(1.0)  # "within a second"
        assert send_pids(src) == pids and pids  # the same zfs send: the stream was not restarted
        fast = rate_over(lab_settings, aid, 2.0)
        assert fast > 2.5 * slow, (slow, fast)
        assert slow < 2 * MiB, slow  # the limit given at the start held (progress is persisted every 0.5 s)
        ok(lab_settings, "activity", "set", aid, "--node", "node1", "--bwlimit", "none")
        ok(lab_settings, "activity", "wait", aid, "--node", "node1", "--timeout", "120")
    finally:
        cli(lab_settings, "activity", "cancel", aid, "--node", "node1")
    details = [e["detail"] for e in events(lab_settings, aid)]
    assert f"bwlimit set to {8 * MiB} bytes/s" in details and "bwlimit lifted" in details
    assert not any((d or "").startswith("stalled") for d in details)
    assert checksums(dst, ds) == checksums(src, ds)
    # a finished activity's limit cannot change: one line, exit 11
    res = cli(lab_settings, "activity", "set", aid, "--node", "node1", "--bwlimit", "1M")
    assert res.returncode == 11 and "succeeded" in res.stderr and "Traceback" not in res.stderr


def test_stall_watchdog_restarts_a_blackholed_stream(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    """The link to the destination blackholed: no byte moves; the watchdog (10 s, before ssh's keepalive
    gives up at ~15 s) tears the stream down and says so; the link restored, the activity finishes."""
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 24)
    snapshot(src, ds, "s1")
    argv = ["replicate", f"node1:{ds}@s1", f"node2:{ds}", "--bwlimit", "2M", "--stall-timeout", "10"]
    aid = json.loads(ok(lab_settings, *argv, "--detach", "--json"))["id"]
    try:
        wait_bytes(lab_settings, aid, 2 * MiB)
        lab.link("node2", False)
        try:

            def has_stalled() -> None:
                got = events(lab_settings, aid)
                if not any((e["detail"] or "").startswith("stalled") for e in got):
                    raise NotYet(str(got))

            eventually(has_stalled, 60, interval=0.5, retry=NotYet)
        finally:
            lab.link("node2", True)
        ok(lab_settings, "activity", "set", aid, "--node", "node1", "--bwlimit", "none")
        ok(lab_settings, "activity", "wait", aid, "--node", "node1", "--timeout", "240", timeout=300)
    finally:
        cli(lab_settings, "activity", "cancel", aid, "--node", "node1")
    stalled = [e for e in events(lab_settings, aid) if (e["detail"] or "").startswith("stalled")]
    assert "stall_timeout 10 s" in stalled[0]["detail"], stalled
    assert record(lab_settings, aid)["state"] == "succeeded"
    assert checksums(dst, ds) == checksums(src, ds)
    assert guid(dst, f"{ds}@s1") == guid(src, f"{ds}@s1")


def holds(settings: Settings, node: str, *extra: str) -> dict:
    return json.loads(ok(settings, "activity", "holds", "--node", node, "--json", *extra))


def start_sync(settings: Settings, ds: str) -> str:
    params = {
        "dataset": ds,
        "destination_node": "node2",
        "destination": ds,
        "base": "zfs_backend-standby-1",
        "interval_s": 1.0,
        "max_lag_s": 0.0,
    }
    return str(start_granted(lambda n: _agent(settings, n), "node1", "standby-sync", params).id)


def project_holds(report: dict, owner: str) -> list[dict]:
    return [h for h in report["holds"] if h["owner"] == owner]


@pytest.mark.slow
def test_holds_of_crashed_and_failed_standby_sync(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    """A standby-sync holds its base on both nodes. The agent SIGKILLed: carried on, its holds live and
    never released as stale. Cancelled while the standby is unreachable (it fails): the primary's hold
    goes at once; the standby's stays with the claim, listed live while its lease runs, stale once it
    lapsed, then released by --release-stale. A user's hold on the same snapshots is never touched."""
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "zfs_backend-standby-1")
    assert (
        replicate(lab_settings, f"node1:{ds}@zfs_backend-standby-1", f"node2:{ds}").wait(120) == "succeeded"
    )
    aid = start_sync(lab_settings, ds)

    def held_both() -> None:
        h1, h2 = holds(lab_settings, "node1"), holds(lab_settings, "node2")
        if not (project_holds(h1, aid) and project_holds(h2, aid)):
            raise NotYet(str((h1, h2)))

    eventually(held_both, 60, interval=0.5, retry=NotYet)
    # the crash: SIGKILL the agent; the supervisor starts it again and it carries the sync on
    lab.restart_service("node1", "agent", hard=True)
    time.sleep(3)
    assert record(lab_settings, aid)["state"] == "running"
    after = holds(lab_settings, "node1", "--release-stale")
    assert after["released"] == [] and all(h["live"] for h in project_holds(after, aid)), after
    # the failure: the standby unreachable, cancel: the rollback there fails, the primary's hold goes
    lab.link("node2", False)
    try:
        cli(lab_settings, "activity", "cancel", aid, "--node", "node1", timeout=180)
        assert record(lab_settings, aid)["state"] in ("failed", "cancelled")
    finally:
        lab.link("node2", True)
    assert project_holds(holds(lab_settings, "node1"), aid) == []
    standby = project_holds(holds(lab_settings, "node2"), aid)
    assert len(standby) == 1 and standby[0]["live"] and "lease" in standby[0]["why"], standby
    held = parse_snapshot(standby[0]["snapshot"])
    Zfs(dst).hold(held, "keepme")  # a user's hold: never listed, never released
    try:
        assert holds(lab_settings, "node2", "--release-stale")["released"] == []  # the lease still runs
        until(  # the lab agents' claim lease (NODE_CLAIM_LEASE_S) lapses: the primary never renews it
            "the standby's hold to go stale",
            lambda: not project_holds(holds(lab_settings, "node2"), aid)[0]["live"],
            NODE_CLAIM_LEASE_S + 30,
            interval=5,
        )
        report = holds(lab_settings, "node2", "--release-stale")
        assert [h["tag"] for h in report["released"]] == [f"zfs_backend:{aid}"], report
        assert project_holds(report, aid) == []
        assert Zfs(dst).get(held, ["userrefs"])["userrefs"] == "1"  # the user's hold is still there
    finally:
        Zfs(dst).release(held, "keepme")
