"""`lab down` leaves nothing behind: no namespace, process, mount, link or file; also after a
half-failed `up`. Uses its own small lab (own state dir and network)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.config import load_settings
from zfs_backend.lab import Lab
from zfs_backend.lab.netns import list_lab_netns


def _traces(lab: Lab) -> dict[str, object]:
    lay = lab.layout
    with open("/proc/self/mountinfo") as f:
        mounts = [ln.split()[4] for ln in f if str(lay.state_dir) in ln]
    links = [ln for ln in os.listdir("/sys/class/net") if ln.startswith(f"zb{lay.tag}")]
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(lay.state_dir).encode() in cmd:
            procs.append(pid)
    return {
        "netns": list_lab_netns(lay),
        "mounts": mounts,
        "links": links,
        "procs": procs,
        "files": lay.state_dir.exists(),
    }


@pytest.fixture
def small_lab() -> Iterator[Lab]:
    home = Path("/var/lib") / f"zfs-backend-lifecycle-{os.getpid()}"
    lab = Lab(load_settings({"ZFS_BACKEND_HOME": str(home), "ZFS_BACKEND_LAB_NETWORK": "198.18.101.0/24"}))
    yield lab
    lab.down()
    shutil.rmtree(home, ignore_errors=True)


def test_down_leaves_nothing(small_lab: Lab) -> None:
    small_lab.up(nodes=2, pool_size=256 << 20, with_agent=False)
    st = small_lab.state
    assert st is not None
    pids = [p for svc in st.pids.values() for p in svc.values()]
    assert small_lab.status()[1].services["sshd"]
    small_lab.down()
    assert _traces(small_lab) == {"netns": [], "mounts": [], "links": [], "procs": [], "files": False}
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    small_lab.down()  # idempotent


def test_down_after_crashed_daemon_and_half_failed_up(small_lab: Lab) -> None:
    small_lab.up(nodes=1, pool_size=256 << 20, with_agent=False)
    small_lab.stop_service("node1", "zfs-fuse", hard=True)
    # forget the state file, as if `up` died before writing it: down must still find everything
    small_lab.layout.state_file.unlink()
    small_lab.down()
    assert _traces(small_lab) == {"netns": [], "mounts": [], "links": [], "procs": [], "files": False}
