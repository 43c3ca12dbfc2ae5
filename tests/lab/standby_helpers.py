"""Helpers for the hot-standby lab tests: a writer that keeps writing to a volume through NFS (from the
controller's address, granted like any client) and remembers what was acknowledged, the flows' process
environment on the test lab, and cleanup of what a test leaves on the nodes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from polling import until

from zfs_backend.config import Settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.flows.env import FlowEnv
from zfs_backend.lab import nfs
from zfs_backend.zfs import Zfs, parse_dataset

MiB = 1 << 20


class Writer:
    """Writes ``block`` bytes of fresh random data at the next offset, ``rate`` bytes per second, through
    NFS to wherever ``locate()`` says the volume is (``ADDR:/path``): a failover moves it, and the writer
    follows (an error means "not acknowledged": it reconnects and writes that block again). ``acked``:
    offset -> SHA-256 of what an acknowledged (fsynced) write put there, with the time it was acked."""

    def __init__(self, locate: Callable[[], str], *, rate: int = MiB, block: int = 64 << 10) -> None:
        self.locate, self.rate, self.block = locate, rate, block
        self.acked: dict[int, tuple[str, float]] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="writer")

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait_for(self, nbytes: int, timeout: float = 120.0) -> None:
        until(
            f"the writer to have {nbytes} bytes acknowledged",
            lambda: len(self.acked) * self.block >= nbytes,
            timeout,
            interval=0.1,
        )

    def _client(self) -> nfs.NfsClient | None:
        addr, path = self.locate().split(":", 1)
        try:
            return nfs.NfsClient(addr, path, timeout_ms=5000)
        except nfs.NfsError:
            self.errors += 1
            return None

    def _run(self) -> None:
        client: nfs.NfsClient | None = None
        off = 0
        t0 = time.monotonic()
        while not self._stop.is_set():
            if client is None:
                client = self._client()
                if client is None:
                    self._stop.wait(0.2)
                    continue
            data = os.urandom(self.block)
            try:
                client.pwrite("/volume", off, data)
            except nfs.NfsError:
                self.errors += 1
                client.close()
                client = None
                self._stop.wait(0.2)
                continue
            self.acked[off] = (hashlib.sha256(data).hexdigest(), time.time())
            off += self.block
            ahead = t0 + off / self.rate - time.monotonic()
            if ahead > 0:
                self._stop.wait(ahead)
        if client is not None:
            client.close()

    def verify(self, location: str, before: float | None = None) -> int:
        """Read every acknowledged block (acked before ``before``, when given) back from ``location``;
        returns how many were checked. Fails naming the first block that differs."""
        addr, path = location.split(":", 1)
        checked = 0
        with nfs.NfsClient(addr, path) as c:
            for off, (digest, at) in sorted(self.acked.items()):
                if before is not None and at > before:
                    continue
                got = hashlib.sha256(c.pread("/volume", off, self.block)).hexdigest()
                assert got == digest, f"acknowledged write at {off} (acked at {at:.3f}) lost on {location}"
                checked += 1
        return checked


def flow_env(settings: Settings, db: str | None = None, **driver_options: Any) -> FlowEnv:
    """The flows' environment on the test lab; ``driver_options`` replace the nodes' driver options (e.g.
    ``stateless_volume_operations=False``)."""
    e = FlowEnv(settings)
    if driver_options:
        from zfs_backend.driver import NodeOptions, ZfsNfsDriver
        from zfs_backend.hosts import load_inventory

        def driver_for(node: str) -> ZfsNfsDriver:
            spec = load_inventory(settings.inventory).node(node)
            opts = NodeOptions.from_vars(node, spec.vars, spec.address).replace(**driver_options)
            d = ZfsNfsDriver(opts, settings=settings)
            d.do_setup()
            return d

        e._service = VolumeService(settings, driver_for=driver_for)
    return e


def new_volume(e: FlowEnv, node: str, client: str) -> str:
    """A 1 GiB volume on ``node``, attached (granted) to ``client``; returns its name."""
    name = f"sb-{uuid.uuid4().hex[:8]}"
    svc = e.service()
    svc.create_volume(name, 1, node)
    svc.attach(name, {"ip": client})
    return name


def location(e: FlowEnv, volume: str) -> str:
    return str(e.service().get_volume(volume).provider_location)


def cleanup(e: FlowEnv, volume: str, nodes: list[str]) -> None:
    """Whatever a test left: the standby relationship, the volume on every node, the records."""
    svc = e.service()
    with contextlib.suppress(Exception):
        from zfs_backend.flows.standby import standby_remove

        standby_remove(volume)
    rec = svc.get_volume(volume)
    errors: list[str] = []
    for _ in range(3):  # a step that failed (a busy dataset, a locked db) is tried again, then reported
        errors = []
        for node in nodes:
            try:
                d = svc.driver(node)
                ds = d.dataset_of(rec.model())
                d.exports.remove(ds)
                z: Zfs = d.zfs
                z.destroy(parse_dataset(str(ds)), recursive=True, deadline=30.0, missing_ok=True)
            except Exception as e:
                errors.append(f"{node}: {e}")
        try:
            with svc.transaction() as db:
                for table in ("attachments", "volume_attachments", "replication"):
                    db.execute(f"DELETE FROM {table} WHERE volume_id = ?", (rec.id,))
                db.execute("DELETE FROM volumes WHERE id = ?", (rec.id,))
        except Exception as e:
            errors.append(f"records: {e}")
        if not errors:
            return
        time.sleep(2)
    raise AssertionError(f"cleanup of {volume} left something: {'; '.join(errors)}")
