"""Grants counted per attachment and changed under the node's lock, on the lab: several controller
processes attach and detach at once (the driver API in processes of their own, and the CLI) without
losing or leaking a grant; a host with two attachments keeps access until both are detached; the
driver's root file operations refuse a ``volume`` that a client replaced by a symbolic link, and its
target is left as it was; a loopback client is refused with one line."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver import NodeOptions, Volume, ZfsNfsDriver
from zfs_backend.driver.errors import UnsafeVolumeFile
from zfs_backend.driver.nfs import parse_exports
from zfs_backend.driver.service import VolumeService
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab, nfs

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)

WORKER = Path(__file__).with_name("attach_worker.py")


def _worker_module() -> object:
    spec = importlib.util.spec_from_file_location("attach_worker", WORKER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def env_of(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
    }


@pytest.fixture(scope="module")
def node1(lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings) -> Iterator[ZfsNfsDriver]:
    spec = load_inventory(lab_settings.inventory).node("node1")
    d = ZfsNfsDriver(
        NodeOptions.from_vars("node1", spec.vars, spec.address), nodes["node1"], settings=lab_settings
    )
    d.do_setup()
    yield d


def attachments(d: ZfsNfsDriver) -> dict[str, list[tuple[str, str]]]:
    """node1's exports file, parsed back: dataset -> its attachments."""
    text = d.host.run(["cat", d.options.exports_file]).text  # type: ignore[union-attr]
    return {k: [(a.id, a.client) for a in e.attachments] for k, e in parse_exports(text)[0].items()}


def test_concurrent_processes_lose_no_grant_and_leak_none(
    lab: Lab, node1: ZfsNfsDriver, lab_settings: Settings
) -> None:
    d, workers, rounds = node1, 3, 4
    shared = Volume(id=uuid.uuid4().hex[:12], size=1)
    own = [Volume(id=uuid.uuid4().hex[:12], size=1) for _ in range(workers)]
    made = []
    before = attachments(d)  # other tests' exports: left alone
    try:
        for v in (shared, *own):
            d.create_volume(v)
            made.append(v)
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), "node1", str(w), str(rounds), shared.id, own[w].id],
                env=env_of(lab_settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(workers)
        ]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0 and out.strip() == "done", err[-2000:]
        want = _worker_module().expected(workers, rounds, shared.id, [v.id for v in own])  # type: ignore[attr-defined]
        after = attachments(d)
        assert {k: v for k, v in after.items() if k in want} == want
        assert {k: v for k, v in after.items() if k not in want} == before
        entry = d.exports.get(d.dataset_of(shared))
        assert entry is not None and entry.clients == tuple(f"192.0.2.{w + 1}" for w in range(workers))
        leftovers = d.host.run(["ls", "-a", str(Path(d.options.exports_file).parent)]).text.split()  # type: ignore[union-attr]
        assert not [n for n in leftovers if n.endswith(".tmp")]
    finally:
        for v in made:
            d.terminate_connection(v, None)
            d.delete_volume(v)


def test_two_attachments_of_one_host_through_the_cli(
    lab: Lab, node1: ZfsNfsDriver, lab_settings: Settings
) -> None:
    """``volume attach --attachment`` from two processes at once, for the same client: detaching one
    keeps the grant, detaching the other revokes it; a loopback client is refused."""
    name = f"att-{uuid.uuid4().hex[:8]}"
    env, cli = env_of(lab_settings), [str(Path(sys.executable).parent / "zfs-backend"), "volume"]
    db = lab_settings.home / "volumes.db"
    client = lab.node("node3").address
    svc = VolumeService(lab_settings)
    try:
        rec = svc.create_volume(name, 1, "node1")
        ds = f"tank/volumes/volume-{rec.id}"

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*cli, *args], env=env, capture_output=True, text=True, timeout=300, check=False
            )

        procs = [
            subprocess.Popen(
                [*cli, "attach", name, "--client", client, "--attachment", f"vm-{i}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in (1, 2)
        ]
        for p in procs:
            assert p.wait(300) == 0, p.stderr.read() if p.stderr else ""
        assert attachments(node1)[ds] == [("vm-1", client), ("vm-2", client)]
        before = attachments(node1)
        bad = run("attach", name, "--client", "127.0.0.1")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "loopback" in bad.stderr
        assert attachments(node1) == before
        assert run("detach", name, "--attachment", "vm-1").returncode == 0
        entry = node1.exports.get(node1.dataset_of(rec.model()))
        assert entry is not None and entry.clients == (client,)  # vm-2 holds it
        assert svc.get_volume(name).status == "in-use"
        assert run("detach", name, "--attachment", "vm-2").returncode == 0
        assert attachments(node1)[ds] == []
        assert svc.get_volume(name).status == "available"
    finally:
        svc.delete_volume(name)
        svc.close()
        db.unlink(missing_ok=True)


def test_a_planted_symlink_is_refused_and_its_target_untouched(
    node1: ZfsNfsDriver, nodes: dict[str, SSHHost]
) -> None:
    d, host = node1, nodes["node1"]
    v = Volume(id=uuid.uuid4().hex[:12], size=1)
    export = d.create_volume(v)["provider_location"].split(":", 1)[1]

    def passwd() -> tuple[str, str]:
        st = host.run(["stat", "-c", "%u:%g %a %s %i", "/etc/passwd"]).text.strip()
        return st, hashlib.sha256(host.run(["cat", "/etc/passwd"]).stdout).hexdigest()

    target = passwd()
    try:
        # what a client's root can do with secure_file_operations=false (No_Root_Squash)
        host.run(["rm", "-f", f"{export}/volume"])
        host.run(["ln", "-s", "/etc/passwd", f"{export}/volume"])
        with pytest.raises(UnsafeVolumeFile, match=r"refusing to touch .*/volume: it is a symbolic link"):
            d.create_export(None, v)  # chown + chmod
        with pytest.raises(UnsafeVolumeFile, match="symbolic link"):
            d.extend_volume(v, 2)  # truncate
        assert d.zfs.get(d.dataset_of(v), ["zfs_backend:volume_size"])["zfs_backend:volume_size"] == str(
            1 << 30
        )
        assert passwd() == target
        assert host.run(["stat", "-c", "%F", f"{export}/volume"]).text.strip() == "symbolic link"
    finally:
        host.run(["rm", "-f", f"{export}/volume"])
        d.delete_volume(v)
    assert passwd() == target
