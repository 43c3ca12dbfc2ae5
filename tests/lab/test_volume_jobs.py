"""Issue 14 on the lab, through the volume service's API (``driver.volume_jobs``): a volume migrated
while a writer writes through NFS (no acknowledged write lost), a migration cancelled in each phase (the
volume where it was, usable, nothing on the target), one refused while the volume has user snapshots, and
a backup chain (full + 2 incrementals) restored into new volumes with checksums, a corrupted stream
refused. The same jobs from the command line: ``test_volume_jobs_cli.py``; the agent's metrics and
``zfs-backend top``: ``test_top_metrics.py``."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver import volume_jobs as jobs
from zfs_backend.driver.errors import VolumeBusy
from zfs_backend.driver.migration import MigrationFailed
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import BackupCorrupt
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs

sys.path.insert(0, os.path.dirname(__file__))
from replication_helpers import MiB, shaped
from volume_helpers import (
    BLOCK,
    Writer,
    assert_usable_on,
    dataset,  # noqa: F401 - tests/vagrant/test_driver_openzfs.py imports it from here
    file_sha,
    fill,
    vname,
)

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")


@pytest.fixture(scope="module")
def svc(lab: Lab, lab_settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(lab_settings)
    yield s
    s.close()


def test_migrate_in_use_volume_while_writing(svc: VolumeService, lab: Lab) -> None:
    name = vname()
    svc.create_volume(name, 1, "node1")
    fill(svc, name, 48, seek_mib=64)
    svc.attach(name, {"ip": lab.layout.controller_address})
    w = Writer(svc, name, lab.layout.controller_address)
    w.start()
    try:
        deadline = time.monotonic() + 60
        while len(w.acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        act = jobs.start_migration(svc, name, "node2")
        update = jobs.finish_migration(svc, name, "node2", act)
        n0 = len(w.acked)
        deadline = time.monotonic() + 120
        while len(w.acked) < n0 + 20 and time.monotonic() < deadline:  # writes go on at the new place
            time.sleep(0.2)
    finally:
        w.stop.set()
        w.join(60)
    rec = svc.get_volume(name)
    assert (
        rec.node == "node2"
        and rec.status == "in-use"
        and rec.provider_location == update["provider_location"]
    )
    assert act.record().result["phase"] == "done" and len(act.record().result["rounds"]) >= 3
    assert len(w.locations) == 2, w.locations
    addr, path = update["provider_location"].split(":", 1)
    with nfs.NfsClient(addr, path) as c:
        for off, digest in sorted(w.acked.items()):
            assert hashlib.sha256(c.pread("/volume", off, BLOCK)).hexdigest() == digest, off
    print(f"\nmigrate: quiesce {update['quiesce_s']:.2f} s, {len(w.acked)} blocks, {w.failures} refused")
    z1 = svc.driver("node1").zfs
    assert not z1.exists(svc.driver("node1").dataset_of(rec.model()))
    assert str(svc.driver("node1").dataset_of(rec.model())) not in svc.driver("node1").exports.entries()
    svc.detach(name)
    svc.delete_volume(name)


@pytest.mark.parametrize("phase", ["full", "catchup", "quiesce"])
def test_cancel_migration_in_each_phase(svc: VolumeService, lab: Lab, phase: str) -> None:
    name = vname()
    svc.create_volume(name, 1, "node1")
    fill(svc, name, 32)
    loc = svc.get_volume(name).provider_location
    dst_zfs = svc.driver("node2").zfs
    dst_ds = svc.driver("node2").dataset_of(svc.get_volume(name).model())
    try:
        if phase == "full":
            with shaped(lab, "node1", 4):
                act = jobs.start_migration(svc, name, "node2")
                deadline = time.monotonic() + 60
                while act.progress[0] < 2 * MiB and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert act.record().result.get("phase", "full") == "full"
                act.cancel()
        else:
            act = jobs.start_migration(svc, name, "node2", hold_at=phase)
            deadline = time.monotonic() + 120
            while act.state != "suspended" and time.monotonic() < deadline:
                time.sleep(0.2)
            rec = act.record()
            assert rec.state == "suspended" and rec.result["phase"] == phase and rec.result["held"] == phase
            if phase == "quiesce":  # cancel during the last increment, the source unexported and unmounted
                fill(svc, name, 24, seek_mib=200)
                failed: list[BaseException] = []

                def controller() -> None:  # what `volume migrate` does: unexport at the hold, go on, undo
                    try:
                        jobs.finish_migration(svc, name, "node2", act)
                    except BaseException as e:
                        failed.append(e)

                with shaped(lab, "node1", 3):
                    th = threading.Thread(target=controller, daemon=True)
                    th.start()
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        r = act.record()
                        if r.result.get("quiesced_at") and r.progress.done > r.result["rounds"][0] + MiB:
                            break
                        time.sleep(0.1)
                    r = act.record()
                    assert r.result.get("quiesced_at") and r.result.get("unmounted"), r
                    act.cancel()
                    th.join(120)
                assert failed and isinstance(failed[0], MigrationFailed), failed
            else:
                act.cancel()
        assert act.wait(120) == "cancelled", act.record().error
        assert not dst_zfs.exists(dst_ds)
        assert_usable_on(svc, name, "node1", loc)
    finally:
        svc.delete_volume(name)


def test_backup_chain_restore_and_corruption(svc: VolumeService, lab: Lab, nodes: dict[str, SSHHost]) -> None:
    name = vname()
    svc.create_volume(name, 1, "node1")
    svc.attach(name, {"ip": lab.layout.controller_address})  # in use: backups come from snapshots
    shas, ids = [], []
    for i, (mib, seek) in enumerate(((24, 0), (8, 100), (8, 300))):
        fill(svc, name, mib, seek_mib=seek)
        shas.append(file_sha(svc, name))
        t0 = time.monotonic()
        rec, act = jobs.start_backup(svc, name, incremental=i > 0, backup_node="node3")
        done = jobs.finish_backup(svc, rec.id, act)
        dt = time.monotonic() - t0
        assert done.status == "available" and done.incremental == (i > 0) and done.sha256
        assert svc.get_volume(name).status == "in-use"
        print(f"\nbackup {i}: {done.stream_bytes} bytes in {dt:.1f} s")
        ids.append(done.id)
    assert [b.id for b in jobs.list_backups(svc, name)] == ids
    restored = []
    for i in (2, 1):
        t0 = time.monotonic()
        new, act = jobs.start_restore(svc, ids[i], to=f"{name}-r{i}")
        rec = jobs.finish_restore(svc, new, act)
        print(f"restore {i}: {act.progress[0]} bytes in {time.monotonic() - t0:.1f} s")
        assert rec.status == "available" and file_sha(svc, new) == shas[i]
        restored.append(new)
    # a corrupted stream file (the full one, first of every chain) is refused before anything is applied
    store = f"/var/lib/zfs-backend/backups/{svc.get_volume(name).id}/{ids[0]}.zstream"
    nodes["node3"].run(
        ["dd", "of=" + store, "bs=1", "seek=5000", "count=1", "conv=notrunc", "status=none"], input=b"!"
    )
    before = [v.name for v in svc.list_volumes()]
    with pytest.raises(BackupCorrupt, match="corrupted"):
        jobs.start_restore(svc, ids[2], to=f"{name}-bad")
    assert [v.name for v in svc.list_volumes()] == before
    for v in restored:
        svc.delete_volume(v)
    svc.detach(name)
    svc.delete_volume(name)


def test_migration_refused_with_user_snapshots(svc: VolumeService) -> None:
    name = vname()
    svc.create_volume(name, 1, "node1")
    svc.create_snapshot(name, "s1")
    try:
        with pytest.raises(VolumeBusy, match="snapshots"):
            jobs.start_migration(svc, name, "node2")
    finally:
        svc.delete_snapshot(name, "s1")
        svc.delete_volume(name)
