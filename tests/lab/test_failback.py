"""Issue 22 on the lab: Cinder's failback (``zfs_backend.driver.failback``, what
``failover_host(secondary_id="default")`` runs): a volume forced over to its standby (node1's link is fine,
the failover is what Cinder's ``failover_host`` does), written to there, then brought back to node1: its
copy there caught up from the standby (checksums), promoted (exported to the volume's client, writable),
the standby's copy read-only and unexported again."""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from collections.abc import Iterator

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver import failover
from zfs_backend.driver.failback import fail_back
from zfs_backend.driver.service import VolumeService
from zfs_backend.lab import Lab, nfs
from zfs_backend.replication.api import snapshot_replicate

sys.path.insert(0, os.path.dirname(__file__))

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")


@pytest.fixture(scope="module")
def svc(lab: Lab, lab_settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(lab_settings)
    yield s
    s.close()


def sha(d: object, ds: object) -> str:
    z = d.zfs  # type: ignore[attr-defined]
    return str(z.host.run(["sha256sum", f"{z.mountpoint(ds)}/volume"], timeout=300).text.split()[0])


def test_fail_over_then_back_to_the_primary(svc: VolumeService, lab: Lab, lab_settings: Settings) -> None:
    name = f"fb{uuid.uuid4().hex[:8]}"
    client = lab.layout.controller_address
    svc.create_volume(name, 1, "node1")
    d1, d2 = svc.driver("node1"), svc.driver("node2")
    vol = svc.get_volume(name).model()
    ds = d1.dataset_of(vol)
    try:
        svc.attach(name, {"ip": client})
        d1.zfs.host.run(["dd", "if=/dev/urandom", f"of={d1.zfs.mountpoint(ds)}/volume", "bs=1M", "count=8"])
        svc.create_snapshot(name, "s1")
        [snap] = [s for s in d1.zfs.list_snapshots(ds)]
        act = snapshot_replicate(str(snap.name), "node1", f"node2:{ds}", True, settings=lab_settings)
        assert act.wait(300) == "succeeded", act.record().error
        # Cinder's failover_host: the standby promoted with the volume's grants, the old primary fenced
        atts = [nfs_att for nfs_att in d1.exports.get(ds).attachments]  # type: ignore[union-attr]
        out = failover.fail_over(d2, vol, attachments=atts)
        assert failover.fence_old_primary(d1, [vol]) == {vol.id: "fenced"}
        addr, path = out["provider_location"].split(":", 1)
        with nfs.NfsClient(addr, path) as c:  # the volume is written to on the standby
            c.pwrite("/volume", 1 << 20, os.urandom(2 << 20))
        want = sha(d2, ds)
        # failback
        failed_over = dataclasses.replace(vol, replication_status="failed-over")
        [u] = fail_back(d1, d2, [failed_over])
        assert u["updates"]["replication_status"] == "enabled", u
        assert u["updates"]["provider_location"] == d1.location(ds)
        assert sha(d1, ds) == want  # received unmounted (zfs-fuse showed a mounted copy stale after it)
        entry = d1.exports.get(ds)
        assert entry is not None and client in entry.clients
        assert d2.exports.get(ds) is None and d2.zfs.get_with_source(ds, "readonly")[0] == "on"
        addr, path = d1.location(ds).split(":", 1)
        with nfs.NfsClient(addr, path) as c:  # writable on the primary again
            c.pwrite("/volume", 0, b"y" * 65536)
    finally:
        for d in (d2,):
            d.exports.remove(ds)
            if d.zfs.exists(ds):
                d.zfs.destroy(ds, recursive=True)
        svc.detach(name)
        for s in d1.zfs.list_snapshots(ds):
            if not s.snap.startswith("snapshot-"):
                d1.zfs.destroy(s.name, missing_ok=True)
        svc.delete_snapshot(name, "s1")
        svc.delete_volume(name)
