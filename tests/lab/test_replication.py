"""snapshot_replicate on the lab: real zfs-fuse nodes, real SSH, the replicate kind on node agents.

Datasets are small (8-48 MiB); transfers are made long enough to act on mid-way with ``lab.shape``.
Every test destroys what it creates and restores shaping/links in ``finally``.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from zfs_backend.activity.core import BackendActivity
from zfs_backend.config import Settings
from zfs_backend.errors import DatasetNotFound, InvalidName, NotGranted, UsageError
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.replication import (
    AlreadyRunning,
    DestinationDiverged,
    DestinationExistsConflict,
    InsufficientSpace,
    NoCommonBase,
)
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import (
    MiB,
    assert_success,
    checksums,
    guid,
    listing,
    new_name,
    replicate,
    shaped,
    snapshot,
    wait_for_bytes,
    write,
)


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab, nodes: dict[str, SSHHost]) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")
    # (the lab gives nodes a plain ~/.bashrc: the host's pyenv hook stalled logins after a killed ssh)


# --- the happy paths -------------------------------------------------------------------------------


def test_full_then_incremental(nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 16)
    snapshot(src, ds, "s1")
    act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
    assert act.kind == "replicate" and act.node == "node1" and act.self_restarting
    assert_success(act)
    assert checksums(dst, ds) == checksums(src, ds)
    assert guid(dst, f"{ds}@s1") == guid(src, f"{ds}@s1")
    full_bytes = act.progress[0]
    assert 16 * MiB <= full_bytes <= 16 * MiB * 1.05 + MiB
    assert act.resources().net_bytes_sent >= full_bytes  # counted at ssh, the network endpoint

    changed = 4
    write(src, ds, "b", changed)
    snapshot(src, ds, "s2")
    act2 = replicate(lab_settings, f"node1:{ds}@s2", f"node2:{ds}")
    assert_success(act2)
    stream = act2.progress[0]
    assert stream <= 1.05 * changed * MiB + MiB, stream
    assert act2.record().params["snapshot"] == f"{ds}@s2"
    assert checksums(dst, ds) == checksums(src, ds)  # reading them updates atime: the next one still works
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2"]
    assert guid(dst, f"{ds}@s2") == guid(src, f"{ds}@s2")

    # -I carries the snapshots in between
    for s in ("s3", "s4"):
        write(src, ds, s, 1)
        snapshot(src, ds, s)
    act3 = replicate(lab_settings, f"node1:{ds}@s4", f"node2:{ds}", intermediates=True)
    assert_success(act3)
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2", "s3", "s4"]


def test_force_full_copy(nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]) -> None:
    src, dst = nodes["node1"], nodes["node3"]
    ds = new_name(names)
    copy = new_name(names)
    write(src, ds, "a", 8)
    snapshot(src, ds, "s1")
    assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node3:{ds}"))
    write(src, ds, "b", 2)
    snapshot(src, ds, "s2")
    before = listing(dst, ds)
    # a full copy is granted "create" only: node3 refuses its begin on a dataset that exists (NotGranted)
    # before the source's plan would (DestinationExistsConflict); nothing changes either way
    with pytest.raises((DestinationExistsConflict, NotGranted)):
        replicate(lab_settings, f"node1:{ds}@s2", f"node3:{ds}", force_full_copy=True)
    assert listing(dst, ds) == before
    act = replicate(lab_settings, f"node1:{ds}@s2", f"node3:{copy}", force_full_copy=True)
    assert_success(act)
    assert act.progress[0] >= 10 * MiB  # a full stream, although a base exists elsewhere
    assert checksums(dst, copy) == checksums(src, ds)


# --- refusals: nothing changes ---------------------------------------------------------------------


def test_no_common_snapshot_refused(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    write(dst, ds, "other", 1)
    snapshot(dst, ds, "s1")  # the same name, another GUID
    before, sums = listing(dst, ds), checksums(dst, ds)
    with pytest.raises(NoCommonBase):
        replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
    assert listing(dst, ds) == before and checksums(dst, ds) == sums


def test_diverged_refused_then_rolled_back(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 4)
    snapshot(src, ds, "s1")
    assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}"))
    write(src, ds, "b", 1)
    snapshot(src, ds, "s2")
    assert Zfs(dst).get(parse_dataset(ds), ["readonly"]) is not None
    Zfs(dst).set(parse_dataset(ds), "readonly", "off")  # replicas are read-only: a user opens it up
    write(dst, ds, "local", 1)
    snapshot(dst, ds, "local")
    before, sums = listing(dst, ds), checksums(dst, ds)
    with pytest.raises(DestinationDiverged, match="@local"):
        replicate(lab_settings, f"node1:{ds}@s2", f"node2:{ds}")
    assert listing(dst, ds) == before and checksums(dst, ds) == sums
    act = replicate(lab_settings, f"node1:{ds}@s2", f"node2:{ds}", rollback_destination=True)
    assert_success(act)
    assert act.record().result["discarded"][""]["snapshots"] == ["local"]
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2"]
    assert checksums(dst, ds) == checksums(src, ds)


def test_missing_snapshot_and_hostile_names(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    ds = new_name(names)
    with pytest.raises(DatasetNotFound):
        replicate(lab_settings, f"node1:{ds}@nope", f"node2:{ds}")
    write(nodes["node1"], ds, "a", 1)
    with pytest.raises(DatasetNotFound):
        replicate(lab_settings, f"node1:{ds}@nope", f"node2:{ds}")
    with pytest.raises(DatasetNotFound, match="parent"):
        snapshot(nodes["node1"], ds, "s1")
        replicate(lab_settings, f"node1:{ds}@s1", "node2:tank/no/such/parent")
    for src, dst in [
        (f"node1:{ds}@s1;reboot", f"node2:{ds}"),
        (f"node1:{ds}@s1", "node2:tank/$(id)"),
        (f"node1:{ds}@s1", "-oProxyCommand=touch:tank/x"),
        (f"node1:{ds}@s1", f"node2:{ds} tank/other"),
    ]:
        with pytest.raises((InvalidName, UsageError)):
            replicate(lab_settings, src, dst)
    with pytest.raises(InvalidName):
        replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}", incremental_from="x`id`")
    assert listing(nodes["node2"], ds) is None


def test_destination_pool_full(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node3"]
    ds, filler = new_name(names), new_name(names)
    write(src, ds, "a", 48)
    snapshot(src, ds, "s1")
    zd = Zfs(dst)
    zd.create(parse_dataset(filler), props={"compression": "off"})
    avail = zd.get_int(parse_dataset(filler), "available") or 0
    fill_mib = max(0, (avail >> 20) - 32)
    dst.run(
        ["dd", "if=/dev/zero", f"of=/{filler}/fill", "bs=1M", f"count={fill_mib}", "status=none"],
        timeout=300,
        check=False,
    )
    time.sleep(1)
    with pytest.raises(InsufficientSpace, match="available"):
        replicate(lab_settings, f"node1:{ds}@s1", f"node3:{ds}")
    assert listing(dst, ds) is None
    # the same without the planner's check: the receive runs out of space mid-stream
    act = replicate(lab_settings, f"node1:{ds}@s1", f"node3:{ds}", extra_params={"space_check": False})
    assert act.wait(120) == "failed"
    assert "space" in (act.error or ""), act.error
    assert listing(dst, ds) is None


# --- steering mid-transfer -------------------------------------------------------------------------


def test_suspend_resume_under_rate_limit(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 24)
    snapshot(src, ds, "s1")
    with shaped(lab, "node1", 6):
        act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        wait_for_bytes(act, 4 * MiB)
        try:
            _suspend_resume(act, lab_settings, ds)
        finally:
            if act.state not in ("succeeded", "failed", "cancelled"):
                act.cancel()
    assert checksums(dst, ds) == checksums(src, ds)


def _suspend_resume(act: BackendActivity, lab_settings: Settings, ds: str) -> None:
    act.suspend()
    n0 = act.progress[0]
    time.sleep(2.5)
    n1 = act.progress[0]
    assert act.state == "suspended"
    assert n1 - n0 <= 2 * MiB, (n0, n1)  # at most the chunk in flight lands
    time.sleep(1)
    assert act.progress[0] == n1  # then nothing moves
    with pytest.raises(AlreadyRunning):
        replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
    act.resume()
    assert_success(act)


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_cancel_mid_transfer_rolls_back(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab, incremental: bool
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 4 if incremental else 24)
    snapshot(src, ds, "s1")
    target = "s1"
    if incremental:
        assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}"))
        write(src, ds, "b", 24)
        snapshot(src, ds, "s2")
        target = "s2"
    before, sums = listing(dst, ds), checksums(dst, ds)
    with shaped(lab, "node1", 6):
        act = replicate(lab_settings, f"node1:{ds}@{target}", f"node2:{ds}")
        wait_for_bytes(act, 3 * MiB)
        t0 = time.monotonic()
        act.cancel()
        assert act.wait(30) == "cancelled", act.record()
        took = time.monotonic() - t0
    assert act.status not in (None, 0)
    assert listing(dst, ds) == before
    assert checksums(dst, ds) == sums
    assert took < 10, took


# --- faults: the activity finishes by itself --------------------------------------------------------


def test_agent_sigkill_mid_transfer(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 24)
    snapshot(src, ds, "s1")
    with shaped(lab, "node1", 8):
        act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        n0 = wait_for_bytes(act, 4 * MiB)
        lab.restart_service("node1", "agent", hard=True)
        assert act.wait(120) == "succeeded", act.record()
    n, m = act.progress
    assert n == m >= n0
    assert checksums(dst, ds) == checksums(src, ds)
    assert guid(dst, f"{ds}@s1") == guid(src, f"{ds}@s1")


@pytest.mark.slow
def test_link_cut_longer_than_keepalive(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 24)
    snapshot(src, ds, "s1")
    with shaped(lab, "node2", 6):
        act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        wait_for_bytes(act, 4 * MiB)
        lab.link("node2", False)
        try:
            time.sleep(22)  # ssh keepalive gives up after 5 s x 3
        finally:
            lab.link("node2", True)
        assert act.wait(180) == "succeeded", act.record()
    assert checksums(dst, ds) == checksums(src, ds)
    assert guid(dst, f"{ds}@s1") == guid(src, f"{ds}@s1")


def test_ten_replications_at_once(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    routes = [("node1", "node2"), ("node2", "node3"), ("node3", "node1")]
    jobs = []
    for i in range(10):
        s, d = routes[i % 3]
        ds = new_name(names)
        write(nodes[s], ds, "a", 4)
        snapshot(nodes[s], ds, "s1")
        jobs.append((s, d, ds))
    with ThreadPoolExecutor(max_workers=10) as pool:
        acts = list(pool.map(lambda j: replicate(lab_settings, f"{j[0]}:{j[2]}@s1", f"{j[1]}:{j[2]}"), jobs))
    for act in acts:
        assert_success(act, timeout=180)
    for s, d, ds in jobs:
        assert guid(nodes[d], f"{ds}@s1") == guid(nodes[s], f"{ds}@s1")


def test_recursive_tree_with_properties(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str]
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    top = new_name(names)
    write(n1, top, "a", 4)
    write(n1, f"{top}/child", "b", 4)
    Zfs(n1).set(parse_dataset(f"{top}/child"), "zfs_backend:role", "child-data")
    Zfs(n1).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    act = replicate(lab_settings, f"node1:{top}@s1", f"node2:{top}", recursive=True, properties=True)
    assert act.wait(120) == "succeeded", act.record().error
    for ds in (top, f"{top}/child"):
        assert checksums(n2, ds) == checksums(n1, ds)
        assert guid(n2, f"{ds}@s1") == guid(n1, f"{ds}@s1")
    assert (
        Zfs(n2).get(parse_dataset(f"{top}/child"), ["zfs_backend:role"])["zfs_backend:role"] == "child-data"
    )
    # and incrementally, the whole tree again
    write(n1, f"{top}/child", "c", 2)
    Zfs(n1).snapshot(parse_snapshot(f"{top}@s2"), recursive=True)
    act = replicate(lab_settings, f"node1:{top}@s2", f"node2:{top}", recursive=True, properties=True)
    assert act.wait(120) == "succeeded", act.record().error
    assert checksums(n2, f"{top}/child") == checksums(n1, f"{top}/child")


def test_destination_zfs_restart_mid_transfer_recovers(
    lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str]
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "data", 32)
    snapshot(n1, ds, "s1")
    with shaped(lab, "node2", 4):
        act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        wait_for_bytes(act, 4 * MiB)
        lab.restart_service("node2", "zfs-fuse", hard=True)  # the destination's ZFS dies mid-receive
    assert act.wait(240) == "succeeded", act.record().error
    rec = act.record()
    assert rec.progress.done == rec.progress.total
    assert checksums(n2, ds) == checksums(n1, ds)
    assert guid(n2, f"{ds}@s1") == guid(n1, f"{ds}@s1")
