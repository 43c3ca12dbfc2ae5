"""What the lab tests of the volume service's long jobs share (``test_volume_jobs.py``,
``test_volume_jobs_cli.py``): a volume's dataset, filling it, its checksum, whether it stayed usable where
it was, and a writer that writes through NFS while a migration runs (what it acknowledged is what must
survive)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from typing import Any

from zfs_backend.driver.service import VolumeService
from zfs_backend.lab import nfs
from zfs_backend.zfs import Zfs

BLOCK = 64 << 10


def vname() -> str:
    return f"j{uuid.uuid4().hex[:8]}"


def dataset(svc: VolumeService, name: str) -> tuple[Zfs, Any]:
    rec = svc.get_volume(name)
    d = svc.driver(rec.node)
    return d.zfs, d.dataset_of(rec.model())


def fill(svc: VolumeService, name: str, mib: int, seek_mib: int = 0) -> None:
    z, ds = dataset(svc, name)
    out = f"of={z.mountpoint(ds)}/volume"
    argv = [
        "dd",
        "if=/dev/urandom",
        out,
        "bs=1M",
        f"count={mib}",
        f"seek={seek_mib}",
        "conv=notrunc",
        "status=none",
    ]
    z.host.run(argv, timeout=300)


def file_sha(svc: VolumeService, name: str) -> str:
    z, ds = dataset(svc, name)
    return z.host.run(["sha256sum", f"{z.mountpoint(ds)}/volume"], timeout=300).text.split()[0]


def assert_usable_on(svc: VolumeService, name: str, node: str, before_loc: str | None) -> None:
    rec = svc.get_volume(name)
    assert rec.node == node and rec.provider_location == before_loc
    z, ds = dataset(svc, name)
    z.host.run(["dd", "if=/dev/zero", f"of={z.mountpoint(ds)}/volume", "bs=4k", "count=1", "conv=notrunc"])
    assert not [s for s in z.list_snapshots(ds) if s.snap.startswith("migrate-")]


class Writer(threading.Thread):
    """Writes numbered 64 KiB blocks through NFS, fsync each; a write counts only once acknowledged.
    When the export fails (quiesce, switch) it asks the service where the volume is now and goes on."""

    def __init__(self, svc: VolumeService, name: str, client: str) -> None:
        super().__init__(daemon=True)
        self.svc, self.name, self.client = svc, name, client
        self.acked: dict[int, str] = {}
        self.failures = 0
        self.stop = threading.Event()
        self.locations: list[str] = []

    def _connect(self) -> nfs.NfsClient:
        svc = VolumeService(self.svc.settings)  # its own connection to the records
        loc = svc.get_volume(self.name).provider_location
        assert loc is not None
        if not self.locations or self.locations[-1] != loc:
            self.locations.append(loc)
        addr, path = loc.split(":", 1)
        return nfs.NfsClient(addr, path, timeout_ms=5000)

    def run(self) -> None:
        c: nfs.NfsClient | None = None
        i = 0
        while not self.stop.is_set() and i < 100_000:
            try:
                if c is None:
                    c = self._connect()
                data = os.urandom(BLOCK)
                off = (i % 512) * BLOCK
                c.pwrite("/volume", off, data)
                self.acked[off] = hashlib.sha256(data).hexdigest()
                i += 1
                time.sleep(0.02)  # a steady writer, still writing when the quiesce comes
            except Exception:
                self.failures += 1
                if c is not None:
                    c.close()
                c = None
                time.sleep(0.2)
        if c is not None:
            c.close()
