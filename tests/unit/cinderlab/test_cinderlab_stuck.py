"""cinder-up's way over a cinder-volume child that never sets its backend up: the children that did
(their pid on cinder-volume's "Driver post RPC initialization completed" line) are left alone, the
others get SIGABRT (their stacks to the log; the launcher starts fresh ones)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
from polling import until

from zfs_backend.cinderlab.config import CinderLayout
from zfs_backend.cinderlab.services import _abort_stuck_volume_children
from zfs_backend.config import load_settings

PARENT = r"""
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(60)
"""


def test_only_children_without_a_ready_driver_are_aborted(tmp_path: Path) -> None:
    lay = CinderLayout(load_settings({"ZFS_BACKEND_HOME": str(tmp_path)}), tmp_path / "venv")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        ready, stuck = (int(p) for p in parent.stdout.readline().split())
        lay.log_dir.mkdir(parents=True)
        (lay.log_dir / "cinder-volume.log").write_text(
            f"2026-11-30 17:45:51.927 {ready} INFO cinder.volume.manager [None req-1 - - - - - -] "
            "Driver initialization completed successfully.\n"
            f"2026-11-30 17:45:52.175 {ready} INFO cinder.volume.manager [None req-1 - - - - - -] "
            "Driver post RPC initialization completed successfully.\n"
            f"2026-11-30 17:45:52.180 {stuck} INFO cinder.volume.manager [None req-2 - - - - - -] "
            "Starting volume driver ZfsNfsDriver (1.3.0)\n"
        )
        assert _abort_stuck_volume_children(lay, parent.pid) == [stuck]
        until(
            "the stuck child to get SIGABRT",
            lambda: not psutil.pid_exists(stuck) or psutil.Process(stuck).status() == psutil.STATUS_ZOMBIE,
            10,
            interval=0.05,
        )
        assert psutil.Process(ready).is_running() and psutil.Process(ready).status() != psutil.STATUS_ZOMBIE
    finally:
        for p in psutil.Process(parent.pid).children():
            p.send_signal(signal.SIGKILL)
        parent.kill()
        parent.wait()
