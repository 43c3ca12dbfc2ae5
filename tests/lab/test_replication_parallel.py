"""``replicate --recursive --parallel N`` on the lab, through the command line (replication/parallel.py):
a new tree (zfs-fuse cannot receive unmounted: one ``send -R``, the plan says so), then its increment
three datasets at a time with one progress over all; cancelled mid-way (the link shaped slow) every
dataset of the destination's tree is exactly as before (names, GUIDs, data); a run after it completes,
every dataset's checksums equal to the source's. The limit of a running parallel tree changed with
``activity set --bwlimit`` (each stream gets its part; it once failed on the group of streams), no
stall, the tree complete."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import MiB, _agent, checksums, cli, listing, new_name, shaped, wait_for_bytes, write


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def tree(host: SSHHost, top: str) -> dict[str, tuple[list[tuple[str, int]] | None, dict[str, str]]]:
    """Every dataset of the tree (relative names): its snapshots (names, GUIDs) and file checksums."""
    z = Zfs(host)
    if not z.exists(parse_dataset(top)):
        return {}
    return {
        str(d.name)[len(top) :]: (listing(host, str(d.name)), checksums(host, str(d.name)))
        for d in z.list_datasets(parse_dataset(top), recursive=True)
    }


def test_a_parallel_tree_cancelled_mid_way_is_restored_and_a_rerun_completes(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    top = new_name(names)
    children = [f"{top}/c{i}" for i in range(4)] + [f"{top}/c0/g"]
    for ds in (top, *children):
        write(src, ds, "data", 1)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    argv = ["--recursive", "--parallel", "3", "--json"]
    r = cli(lab_settings, "replicate", f"node1:{top}@s1", f"node2:{top}", *argv)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert "one stream" in rec["result"]["plan"]  # a new tree, and no recv -u on zfs-fuse
    assert tree(dst, top) == tree(src, top)

    for ds in children:
        write(src, ds, "more", 3)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s2"), recursive=True)
    before = tree(dst, top)
    with shaped(lab, "node1", 2):
        r = cli(lab_settings, "replicate", f"node1:{top}@s2", f"node2:{top}", *argv, "--detach")
        assert r.returncode == 0, r.stderr
        act = _agent(lab_settings, "node1").get(json.loads(r.stdout)["id"])
        wait_for_bytes(act, 4 * MiB, timeout=120)
        c = cli(lab_settings, "activity", "cancel", act.id, "--node", "node1")
        assert c.returncode == 0, c.stderr
        assert act.wait(120) == "cancelled", act.record()
    assert tree(dst, top) == before  # every dataset: names, GUIDs, data
    assert act.record().result.get("left_alone") == []
    assert "6 stream(s) of the tree, 3 at a time" in act.record().result["plan"]

    r = cli(lab_settings, "replicate", f"node1:{top}@s2", f"node2:{top}", *argv)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["progress"]["done"] == rec["progress"]["total"] > 5 * 3 * MiB  # one n of m over all
    after = tree(dst, top)
    assert after == tree(src, top)
    assert [s for s, _ in after["/c0/g"][0] or []] == ["s1", "s2"]


def test_the_limit_of_a_running_parallel_tree_changes_live(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    top = new_name(names)
    children = [f"{top}/c{i}" for i in range(3)]
    for ds in (top, *children):
        write(src, ds, "data", 1)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    argv = ["--recursive", "--parallel", "3", "--json"]
    r = cli(lab_settings, "replicate", f"node1:{top}@s1", f"node2:{top}", *argv)
    assert r.returncode == 0, r.stderr
    for ds in children:
        write(src, ds, "more", 4)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s2"), recursive=True)
    limited = [*argv, "--bwlimit", "1M", "--detach"]
    r = cli(lab_settings, "replicate", f"node1:{top}@s2", f"node2:{top}", *limited)
    assert r.returncode == 0, r.stderr
    act = _agent(lab_settings, "node1").get(json.loads(r.stdout)["id"])
    try:
        wait_for_bytes(act, MiB, timeout=120)
        s = cli(lab_settings, "activity", "set", act.id, "--node", "node1", "--bwlimit", "64M")
        assert s.returncode == 0 and "Traceback" not in s.stderr, (s.stdout, s.stderr)
        assert act.wait(180) == "succeeded", act.record()
    finally:
        if act.state not in ("succeeded", "failed", "cancelled"):
            cli(lab_settings, "activity", "cancel", act.id, "--node", "node1")
    assert "4 stream(s) of the tree, 3 at a time" in act.record().result["plan"]  # the top too
    ev = cli(lab_settings, "activity", "events", act.id, "--node", "node1", "--json")
    details = [e["detail"] or "" for e in json.loads(ev.stdout)]
    assert f"bwlimit set to {64 * MiB} bytes/s" in details
    assert not any(d.startswith("stalled") for d in details)
    assert tree(dst, top) == tree(src, top)
