"""The volume driver on the OpenZFS VMs, from the command line, with the data read and written through
NFS from the host (the tier's controller address on the nodes' network, granted by ``volume attach``;
the lab's userspace NFSv3 client, libnfs: the test host is a container that cannot mount NFS in its
kernel). A volume's life: create, attach (exported by the VM's nfs-ganesha), written over NFS, a
snapshot, a clone of it (``--from-snapshot``) holding exactly what the snapshot held while the origin
moved on, the clone deleted, the snapshot deleted, detach, delete (nothing left: dataset, export).
Backup onto the other VM and restore into a new volume (checksums); migrate to the other VM while
attached (checksum, the export and grant moved, writable there over NFS, nothing left behind). The
helpers are the lab's (tests/lab/test_volume_jobs.py: ``fill``, ``file_sha``, ``dataset``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import nfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
sys.path.insert(0, str(Path(__file__).parent.parent / "lab"))  # and the lab's, reused as they are
from replication_helpers import cli
from test_volume_jobs import dataset, file_sha, fill
from vagrant_helpers import CONTROLLER_ADDRESS

# a volume life, backup, restore, migrate under TCG, 3.5-6 min: `slow` (SLOW=0 leaves it out)
pytestmark = pytest.mark.slow

T = 900.0
BLOCK = 64 << 10


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(settings)
    yield s
    s.close()


def vname() -> str:
    return f"d{uuid.uuid4().hex[:8]}"


def ok(settings: Settings, *argv: str) -> str:
    r = cli(settings, *argv, timeout=T)
    assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r.stdout


def nfs_client(svc: VolumeService, name: str) -> nfs.NfsClient:
    addr, path = str(svc.get_volume(name).provider_location).split(":", 1)
    return nfs.NfsClient(addr, path, timeout_ms=30_000)


def test_volume_lifecycle_over_nfs_from_the_host(
    vm_pair: tuple[SSHHost, SSHHost], svc: VolumeService, settings: Settings
) -> None:
    node = vm_pair[0].name
    name, clone = vname(), vname()
    data = os.urandom(16 * BLOCK)
    made: list[str] = []
    try:
        ok(settings, "volume", "create", name, "--size", "1G", "--node", node, "--json")
        made.append(name)
        ok(settings, "volume", "attach", name, "--client", CONTROLLER_ADDRESS)
        d = svc.driver(node)
        z, ds = dataset(svc, name)
        entry = d.exports.get(ds)
        assert entry is not None and CONTROLLER_ADDRESS in entry.clients, entry
        with nfs_client(svc, name) as c:
            c.pwrite("/volume", 0, data)
            assert c.pread("/volume", 0, len(data)) == data
        ok(settings, "volume", "snapshot", name, "s1")
        with nfs_client(svc, name) as c:  # the origin moves on after the snapshot
            c.pwrite("/volume", 0, b"\0" * BLOCK)
        ok(settings, "volume", "create", clone, "--size", "1G", "--from-snapshot", f"{name}@s1", "--json")
        made.append(clone)
        ok(settings, "volume", "attach", clone, "--client", CONTROLLER_ADDRESS)
        with nfs_client(svc, clone) as c:
            assert hashlib.sha256(c.pread("/volume", 0, len(data))).digest() == hashlib.sha256(data).digest()
        with nfs_client(svc, name) as c:
            assert c.pread("/volume", 0, BLOCK) == b"\0" * BLOCK
        r = cli(settings, "volume", "snapshot-delete", f"{name}@s1", timeout=T)  # a clone depends on it
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        _, clone_ds = dataset(svc, clone)
        ok(settings, "volume", "detach", clone, "--client", CONTROLLER_ADDRESS)
        ok(settings, "volume", "delete", clone)
        made.remove(clone)
        assert not z.exists(clone_ds) and d.exports.get(clone_ds) is None
        ok(settings, "volume", "snapshot-delete", f"{name}@s1")
        assert [s.snap for s in z.list_snapshots(ds)] == []
        ok(settings, "volume", "detach", name, "--client", CONTROLLER_ADDRESS)
        ok(settings, "volume", "delete", name)
        made.remove(name)
        assert not z.exists(ds) and d.exports.get(ds) is None
    finally:
        for v in reversed(made):
            with contextlib.suppress(Exception):
                svc.detach(v)
            with contextlib.suppress(Exception):
                svc.delete_volume(v)


def test_backup_restore_and_migrate(
    vm_pair: tuple[SSHHost, SSHHost], svc: VolumeService, settings: Settings
) -> None:
    first, second = (h.name for h in vm_pair)
    name = vname()
    restored = f"{name}-r"
    made = [name]
    try:
        ok(settings, "volume", "create", name, "--size", "1G", "--node", first, "--json")
        fill(svc, name, 4, seek_mib=2)
        want = file_sha(svc, name)
        out = ok(settings, "volume", "backup", name, "--backup-node", second)
        assert f"of {name}" in out, out
        [b] = json.loads(ok(settings, "volume", "backup-list", name, "--json"))
        assert b["status"] == "available" and b["backup_node"] == second, b
        out = ok(settings, "volume", "restore", b["id"], "--to", restored, "--node", first)
        made.append(restored)
        assert f"into {restored}" in out, out
        assert file_sha(svc, restored) == want
        # migrate, attached: the export and the grant move with it
        ok(settings, "volume", "attach", name, "--client", CONTROLLER_ADDRESS)
        _, old = dataset(svc, name)
        out = ok(settings, "volume", "migrate", name, "--to", second)
        assert f"migrated {name} to {second}" in out, out
        rec = svc.get_volume(name)
        assert rec.node == second and rec.status == "in-use", rec
        d2 = svc.driver(second)
        _, ds = dataset(svc, name)
        entry = d2.exports.get(ds)
        assert entry is not None and CONTROLLER_ADDRESS in entry.clients, entry
        assert file_sha(svc, name) == want
        assert not svc.driver(first).zfs.exists(old) and svc.driver(first).exports.get(old) is None
        with nfs_client(svc, name) as c:  # writable at its new place, through the grant
            c.pwrite("/volume", 0, b"x" * BLOCK)
            assert c.pread("/volume", 0, BLOCK) == b"x" * BLOCK
    finally:
        for v in reversed(made):
            with contextlib.suppress(Exception):
                svc.detach(v)
            with contextlib.suppress(Exception):
                svc.delete_volume(v)
