"""``replicate --raw`` on the lab, through the command line: zfs-fuse has no encryption and no ``send -w``,
so a raw replication is refused there with one line (exit 6), before the destination is asked anything;
nothing is created on the destination. The raw stream itself is tested on the OpenZFS VMs
(tests/vagrant/test_replication_openzfs_streams.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import cli, new_name, snapshot, write


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def test_raw_is_refused_on_zfs_fuse_with_one_line_and_nothing_changed(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 1)
    snapshot(src, ds, "s1")
    r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--raw")
    assert r.returncode == 6, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot send raw" in lines[0], r.stderr
    assert not Zfs(dst).exists(parse_dataset(ds))
    r = cli(lab_settings, "activity", "list", "--node", "node1", "--json")
    assert r.returncode == 0, r.stderr
    assert ds not in r.stdout  # refused before an activity was stored
