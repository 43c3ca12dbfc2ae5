"""Issue 22 on the lab: the volume service's long jobs as a user runs them (``zfs-backend volume
migrate|backup|backup-list|restore``, each its own process): a migration in the foreground and
``--detach``ed, one held before its catch-up, one cancelled by Ctrl-C (exit 130, the volume where it
was), a backup restored into a new volume. Through the API: ``test_volume_jobs.py``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.lab import Lab, nfs

sys.path.insert(0, os.path.dirname(__file__))
from replication_helpers import cli, cli_env, shaped
from volume_helpers import BLOCK, assert_usable_on, file_sha, fill, vname

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")


@pytest.fixture(scope="module")
def svc(lab: Lab, lab_settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(lab_settings)
    yield s
    s.close()


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_migrate_from_the_command_line(
    svc: VolumeService, lab: Lab, lab_settings: Settings, detach: bool
) -> None:
    """Issue 22: ``zfs-backend volume migrate NAME --to node2`` acts as the controller at the activity's
    hold before its quiesce (unexport, resume), then switches the export: the volume is on node2 with its
    data (checksum) and its attachments (grants), and nothing is left on node1. ``--detach`` returns the
    activity id at once; its child does the same."""
    name = vname()
    svc.create_volume(name, 1, "node1")
    try:
        fill(svc, name, 24, seek_mib=8)
        client = lab.layout.controller_address
        svc.attach(name, {"ip": client})
        before = file_sha(svc, name)
        old = svc.driver("node1").dataset_of(svc.get_volume(name).model())
        argv = ["volume", "migrate", name, "--to", "node2"] + (["--detach"] if detach else [])
        t0 = time.monotonic()
        r = cli(lab_settings, *argv)
        print(
            f"volume migrate{' --detach' if detach else ''}: {time.monotonic() - t0:.2f} s {r.stdout[-80:]}"
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        if detach:
            assert r.stdout.strip().startswith("act-"), r.stdout
            deadline = time.monotonic() + 300
            while svc.get_volume(name).node != "node2" and time.monotonic() < deadline:
                time.sleep(0.5)
        else:
            assert f"migrated {name} to node2" in r.stdout, r.stdout
        rec = svc.get_volume(name)
        assert rec.node == "node2" and rec.status == "in-use", rec
        d2 = svc.driver("node2")
        ds = d2.dataset_of(rec.model())
        entry = d2.exports.get(ds)
        assert entry is not None and client in entry.clients, entry
        assert rec.provider_location == d2.location(ds)
        assert file_sha(svc, name) == before
        assert not svc.driver("node1").zfs.exists(old)
        assert svc.driver("node1").exports.get(old) is None
        addr, path = rec.provider_location.split(":", 1)
        with nfs.NfsClient(addr, path) as c:  # writable at its new place, through the grant
            c.pwrite("/volume", 0, b"x" * BLOCK)
    finally:
        try:
            svc.detach(name)
        finally:
            svc.delete_volume(name)


def test_migrate_held_before_its_catchup_from_the_command_line(
    svc: VolumeService, lab: Lab, lab_settings: Settings
) -> None:
    """Issue 22: ``volume migrate --hold-at catchup --detach``: the activity waits before its catch-up for
    the operator (``activity resume``); its detached controller still unexports the source at the hold
    before the quiesce (it held only at the catch-up before, and the quiesce then unmounted an exported
    source), and the volume moves with its data."""
    from zfs_backend.rpc.connect import connect_node

    name = vname()
    svc.create_volume(name, 1, "node1")
    try:
        fill(svc, name, 16)
        svc.attach(name, {"ip": lab.layout.controller_address})
        before = file_sha(svc, name)
        r = cli(
            lab_settings,
            "volume",
            "migrate",
            name,
            "--to",
            "node2",
            "--hold-at",
            "catchup",
            "--detach",
            "--json",
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        act_id = json.loads(r.stdout)["id"]
        with connect_node("node1", lab_settings) as node:
            act = node.get(act_id)
            deadline = time.monotonic() + 120
            while act.state != "suspended" and time.monotonic() < deadline:
                time.sleep(0.3)
            rec = act.record()
            assert rec.state == "suspended" and rec.result["held"] == "catchup", rec
        assert svc.get_volume(name).node == "node1"
        r = cli(lab_settings, "activity", "resume", act_id, "--node", "node1")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 300
        while svc.get_volume(name).node != "node2" and time.monotonic() < deadline:
            time.sleep(0.5)
        rec2 = svc.get_volume(name)
        assert rec2.node == "node2", rec2
        assert file_sha(svc, name) == before
        entry = svc.driver("node2").exports.get(svc.driver("node2").dataset_of(rec2.model()))
        assert entry is not None and lab.layout.controller_address in entry.clients
    finally:
        try:
            svc.detach(name)
        finally:
            svc.delete_volume(name)


def test_ctrl_c_cancels_a_migration_from_the_command_line(
    svc: VolumeService, lab: Lab, lab_settings: Settings
) -> None:
    """Issue 22: Ctrl-C (SIGINT) in ``volume migrate`` cancels the migration as in ``replicate``: exit 130,
    the copy on the target gone, the volume where it was, exported to its client and usable."""
    name = vname()
    svc.create_volume(name, 1, "node1")
    try:
        fill(svc, name, 32)
        client = lab.layout.controller_address
        svc.attach(name, {"ip": client})
        loc = svc.get_volume(name).provider_location
        d2 = svc.driver("node2")
        dst = d2.dataset_of(svc.get_volume(name).model())
        with shaped(lab, "node1", 2):
            p = subprocess.Popen(
                [sys.executable, "-m", "zfs_backend.cli.main", "volume", "migrate", name, "--to", "node2"],
                env=cli_env(lab_settings),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                deadline = time.monotonic() + 120
                while not d2.zfs.exists(dst) and time.monotonic() < deadline and p.poll() is None:
                    time.sleep(0.2)
                assert p.poll() is None, p.communicate()
                p.send_signal(signal.SIGINT)
                out, err = p.communicate(timeout=180)
            finally:
                if p.poll() is None:
                    p.kill()
        assert p.returncode == 130, (out, err)
        assert "cancelled" in out, out
        assert not d2.zfs.exists(dst)
        assert_usable_on(svc, name, "node1", loc)
        entry = svc.driver("node1").exports.get(svc.driver("node1").dataset_of(svc.get_volume(name).model()))
        assert entry is not None and client in entry.clients, entry
    finally:
        try:
            svc.detach(name)
        finally:
            svc.delete_volume(name)


def test_backup_and_restore_from_the_command_line(svc: VolumeService, lab_settings: Settings) -> None:
    """Issue 22: ``volume backup``, ``backup-list`` and ``restore`` as a user runs them: the restored
    volume holds what the backed-up one held (checksum)."""
    name = vname()
    svc.create_volume(name, 1, "node1")
    restored = f"{name}-r"
    try:
        fill(svc, name, 8)
        want = file_sha(svc, name)
        r = cli(lab_settings, "volume", "backup", name, "--backup-node", "node3")
        assert r.returncode == 0 and f"of {name}" in r.stdout, (r.stdout, r.stderr)
        r = cli(lab_settings, "volume", "backup-list", name, "--json")
        assert r.returncode == 0, r.stderr
        [b] = json.loads(r.stdout)
        assert b["status"] == "available" and b["backup_node"] == "node3", b
        r = cli(lab_settings, "volume", "restore", b["id"], "--to", restored)
        assert r.returncode == 0 and f"into {restored}" in r.stdout, (r.stdout, r.stderr)
        assert file_sha(svc, restored) == want
        r = cli(lab_settings, "volume", "restore", "no-such-backup", "--to", f"{name}-x")
        assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    finally:
        with contextlib.suppress(Exception):
            svc.delete_volume(restored)
        svc.delete_volume(name)
