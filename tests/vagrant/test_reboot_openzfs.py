"""The destination VM rebooted mid-transfer (``scripts/vagrant-tier reload``: ``vagrant reload`` of that
VM, halted and booted again; its pool imported again by OpenZFS's import units, its agent and
nfs-ganesha started again by systemd): the replication, started through the agents under the
controller's grant, keeps retrying while the destination is away and finishes by itself from the
receive token the cut receive left in the pool, ``n == m``, listings (GUIDs) and checksums equal, no
token left.

A reboot under TCG keeps the destination away for minutes; the default retry budget (``max_retries``
5, backoff 2 s doubling up to 30 s: about a minute and a half of attempts) would fail the activity before
it is back, so the replication is started with ``max_retries`` 20 (a user's tuning parameter)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from replication_vm import MiB, T, checksums, listing, new_name, replicate, snapshot, wait_for_bytes, write

# a VM reboot under TCG, ~3 min: `slow` (left out by hand with ZFS_BACKEND_VAGRANT_SLOW=0; conftest.py)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_destination_rebooted_mid_transfer_finishes_from_the_token(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 24)
    snapshot(src, ds, "s1")
    act = replicate(
        settings,
        agents,
        f"{src.name}:{ds}@s1",
        f"{dst.name}:{ds}",
        bwlimit="512K",
        extra_params={"max_retries": 20},
    )
    try:
        n0 = wait_for_bytes(act, 2 * MiB)
        t0 = time.monotonic()
        r = subprocess.run(
            [str(REPO / "scripts" / "vagrant-tier"), "reload", dst.name],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr
        print(f"vagrant reload {dst.name}: {time.monotonic() - t0:.0f} s; {n0} bytes moved before")
        dst.close()  # its connection died with the VM: the next command connects again
        agents.pop(dst.name, None)
        assert act.wait(2 * T) == "succeeded", act.record()
    finally:
        if act.state not in ("succeeded", "failed", "cancelled"):
            act.cancel()
            act.wait(T)
    rec = act.record()
    n, m = act.progress
    assert n == m >= n0, (n, m, n0)
    assert rec.result is not None
    assert listing(dst, ds) == listing(src, ds)
    assert checksums(dst, ds) == checksums(src, ds)
    assert Zfs(dst, timeout=T).resume_token(parse_dataset(ds)) is None
    print(
        f"after the reboot: {rec.attempts if hasattr(rec, 'attempts') else '?'} attempts, result {rec.result}"
    )
