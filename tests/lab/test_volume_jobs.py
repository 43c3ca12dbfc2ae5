"""Issue 14 on the lab: a volume migrated while a writer writes through NFS (no acknowledged write lost),
a migration cancelled in each phase (the volume where it was, usable, nothing on the target), a backup
chain (full + 2 incrementals) restored into new volumes with checksums, a corrupted stream refused, the
agent's metrics scraped during a replication, and ``zfs-backend top`` driven in tmux."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from polling import eventually

from zfs_backend.config import Settings
from zfs_backend.driver import volume_jobs as jobs
from zfs_backend.driver.errors import VolumeBusy
from zfs_backend.driver.migration import MigrationFailed
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import BackupCorrupt
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import Zfs

sys.path.insert(0, os.path.dirname(__file__))
from replication_helpers import MiB, cli, cli_env, new_name, replicate, shaped, snapshot, write

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")
BLOCK = 64 << 10


@pytest.fixture(scope="module")
def svc(lab: Lab, lab_settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(lab_settings)
    yield s
    s.close()


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


def gone(svc: VolumeService, name: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any: the record is gone or the volume was deleted
        svc.delete_volume(name)
        svc.get_volume(name)


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
