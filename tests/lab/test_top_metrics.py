"""Watching activities on the lab: a node agent's metrics scraped while a replication runs (loopback
only), and ``zfs-backend top`` driven in tmux (a replication seen running, a node seen unreachable and
back)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from polling import eventually

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs

sys.path.insert(0, os.path.dirname(__file__))
from replication_helpers import MiB, new_name, replicate, shaped, snapshot, write

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")


def test_metrics_scraped_during_a_replication(
    lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src = new_name(names)
    write(nodes["node1"], src, "f", 24)
    snapshot(nodes["node1"], src, "s1")
    code = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9464/metrics').read().decode())"
    scrape = [sys.executable, "-c", code]
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{src}@s1", "node2")
        deadline = time.monotonic() + 60
        while act.progress[0] < MiB and time.monotonic() < deadline:
            time.sleep(0.1)
        text = nodes["node1"].run(scrape).text
        act.cancel()
    assert act.wait(120) == "cancelled"
    assert 'zfs_backend_activities{kind="replicate",state="running"} 1.0' in text
    assert f'zfs_backend_activity_progress_bytes{{id="{act.id}",kind="replicate",state="running"}}' in text
    assert "zfs_backend_activity_rate_bytes" in text and "process_cpu_seconds_total" in text
    probe = f"import socket; socket.create_connection(('{lab.node('node1').address}', 9464), 5)"
    refused = nodes["node1"].run([sys.executable, "-c", probe], check=False)
    assert refused.returncode != 0  # loopback only by default


@pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (scripts/bootstrap installs it)"
)
def test_top_in_tmux(lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]) -> None:
    src = new_name(names)
    # 48 MiB at 1 MiB/s: the replication is still running when the keys below reach it on a loaded
    # machine (24 MiB at 2 MiB/s once finished before the state filter came round to "running")
    write(nodes["node1"], src, "f", 48)
    snapshot(nodes["node1"], src, "s1")
    session = f"top{uuid.uuid4().hex[:6]}"
    env = (
        f"ZFS_BACKEND_HOME={lab_settings.home} ZFS_BACKEND_LAB_NETWORK={lab_settings.lab_network} TERM=xterm"
    )
    zb = os.path.join(os.path.dirname(sys.executable), "zfs-backend")

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout

    def on_screen(text: str) -> str:
        s = screen()
        assert text in s, f"{text!r} not on the screen:\n{s}"
        return s

    def until(text: str, timeout: float = 60) -> str:
        return eventually(lambda: on_screen(text), timeout, interval=0.3)

    def keys(*k: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, *k], check=True)

    with shaped(lab, "node1", 1):
        act = replicate(lab_settings, f"node1:{src}@s1", "node2")
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "200",
                "-y",
                "40",
                f"env {env} {zb} top --interval 0.5 --sort created",
            ],
            check=True,
        )
        try:
            until(act.id[:22])  # the id column may be cut on a narrow pane
            keys("s")
            until(f"suspend: {act.id} on node1 is suspended")
            assert act.state == "suspended"
            keys("r")
            until(f"resume: {act.id} on node1 is running")
            keys("F")  # state filter: the first state in order
            until("state=cancelled")
            keys("F", "F", "F", "F")  # cancelling, failed, pending, running
            until("state=running")
            deadline = time.monotonic() + 60  # the running row in the table (the message names it too)
            while not any(ln.startswith("│") and act.id[:22] in ln for ln in screen().splitlines()):
                assert time.monotonic() < deadline, screen()
                time.sleep(0.3)
            keys("x")
            until("rolls it back)? y/n")
            keys("y")
            until(f"cancel: {act.id} on node1 is")
            assert act.wait(120) == "cancelled", act.record().error
            lab.link("node3", False)
            try:
                until("node3:down", timeout=90)
                assert "UNREACHABLE" in screen()
            finally:
                lab.link("node3", True)
            until("node3:up", timeout=120)
            keys("q")
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
