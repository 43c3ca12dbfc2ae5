"""State files are private: after a workload (a volume made through the volume service, a replication
run as an activity on node1's agent), every directory under the test lab's home (``$ZFS_BACKEND_HOME``:
the service's ``volumes.db``, the lab directory, its keys and SSH files, each node's directory, home,
agent store and logs) is mode 0700 and every file 0600, owned by root.

Not walked: each node's ``upper`` (its root filesystem, seen as ``/`` inside the node, with a real
server's modes: ``/etc/hosts`` 0644, ``/`` 0755) and ``work`` (overlayfs' scratch), both inside the
node's 0700 directory; the files in ``lab/ns`` are namespace handles, whose mode (0444) is the kernel's.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import Zfs, parse_dataset

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)


def walk(home: Path, lab: Lab) -> tuple[list[str], list[Path]]:
    """(every mode problem under ``home``, every file seen)."""
    skip = {n.upper for n in lab.nodes()} | {n.work for n in lab.nodes()}
    problems: list[str] = []
    files: list[Path] = []

    def check(p: Path, want: int) -> None:
        st = os.lstat(p)
        if stat.S_IMODE(st.st_mode) != want or st.st_uid != 0:
            problems.append(
                f"{p}: mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid}, want {want:04o} uid 0"
            )

    check(home, 0o700)
    for top, dirs, names in os.walk(home):
        d = Path(top)
        dirs[:] = [x for x in dirs if d / x not in skip]
        for x in dirs:
            check(d / x, 0o700)
        for x in names:
            p = d / x
            mode = os.lstat(p).st_mode
            if d == lab.layout.ns_dir:
                continue  # namespace handles (bind mounts of /proc/PID/ns/*)
            if stat.S_ISSOCK(mode) and d == home / "ssh":
                check(p, 0o600)  # the controller's SSH masters and the agents' sockets forwarded over them
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"{p}: not a regular file ({stat.filemode(mode)})")
                continue
            files.append(p)
            check(p, 0o600)
    return problems, files


def test_state_files_private_after_a_workload(
    lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    svc = VolumeService(lab_settings)  # the CLI's: <home>/volumes.db
    name = f"modes-{uuid.uuid4().hex[:8]}"
    replica = None
    try:
        rec = svc.create_volume(name, 1, "node1")
        svc.create_snapshot(name, "s1")
        svc.attach(name, {"ip": lab.layout.controller_address})
        act = svc.replicate(name, "s1", "node2")  # an activity on node1's agent, into node2
        assert act.wait(120) == "succeeded", act.error
        replica = parse_dataset(f"tank/volumes/volume-{rec.id}")
        problems, files = walk(lab_settings.home, lab)
    finally:
        try:
            svc.detach(name)
            svc.delete_snapshot(name, "s1")
            svc.delete_volume(name)
        finally:
            svc.close()
            if replica is not None:
                Zfs(nodes["node2"]).destroy(replica, recursive=True, deadline=30, missing_ok=True)
            (lab_settings.home / "volumes.db").unlink(missing_ok=True)
    assert problems == []
    # the walk saw the state it is about (not an empty tree)
    seen = {p.relative_to(lab_settings.home).as_posix() for p in files}
    expected = {
        "volumes.db",
        "lab/lab.json",
        "lab/inventory.yml",
        "lab/ssh/id_ed25519",
        "lab/ssh/known_hosts",
    }
    for n in lab.nodes():
        rel = n.dir.relative_to(lab_settings.home).as_posix()
        expected |= {
            f"{rel}/home/inventory.yml",
            f"{rel}/home/agent/activities.db",
            f"{rel}/home/agent/agent.log",
            f"{rel}/logs/agent.log",
            f"{rel}/logs/sshd.log",
            f"{rel}/keys/id_ed25519",
            f"{rel}/keys/id_ed25519.pub",
        }
    assert expected <= seen, sorted(expected - seen)
    assert any(p.endswith("home/agent/activities.db-wal") for p in seen)
