"""NFS access is granted, not open: a volume's export lets in only the addresses
``initialize_connection`` granted, and ``terminate_connection`` shuts them out again, also on a mount
they made before. Tried with the libnfs client (and nfs-ls over NFSv3 and v4) from two lab addresses:
the controller's (the bridge's ``.1``, this process's namespace) and node3's (a client process in node3's
network namespace, ``nsenter --net``), against a volume on node1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from polling import until

from zfs_backend.config import Settings
from zfs_backend.driver import NodeOptions, Volume, ZfsNfsDriver
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab, nfs
from zfs_backend.lab.netns import netns_path

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)

PROBE = Path(__file__).with_name("nfs_probe.py")


class Client:
    """An NFS client process (``nfs_probe.py``) in this namespace or in a node's network namespace."""

    def __init__(self, server: str, export: str, log: IO[str], netns: str | None = None) -> None:
        argv = [sys.executable, str(PROBE), server, export]
        if netns is not None:
            argv = ["nsenter", f"--net={netns_path(netns)}", "--", *argv]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the NFS probe exited ({self.proc.poll()})"
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def refused(c: Client) -> bool:
    """Neither a mount nor a listing over NFSv3 or NFSv4 gets through."""
    return not any(c.ask(cmd)["ok"] for cmd in ("mount", "ls 3", "ls 4"))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def node1(lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings) -> Iterator[ZfsNfsDriver]:
    spec = load_inventory(lab_settings.inventory).node("node1")
    d = ZfsNfsDriver(
        NodeOptions.from_vars("node1", spec.vars, spec.address), nodes["node1"], settings=lab_settings
    )
    d.do_setup()
    before = set(d.exports.entries())  # what other modules left on the shared lab is theirs
    yield d
    assert set(d.exports.entries()) <= before


def test_only_granted_addresses_get_in(
    lab: Lab, node1: ZfsNfsDriver, nodes: dict[str, SSHHost], tmp_path: Path
) -> None:
    d, host = node1, nodes["node1"]
    controller, node3 = lab.layout.controller_address, lab.node("node3")
    v = Volume(id=uuid.uuid4().hex[:12], size=1)
    location = d.create_volume(v)["provider_location"]
    server, export = location.split(":", 1)
    data = os.urandom(256 << 10)
    host.run(["dd", f"of={export}/volume", "bs=64k", "conv=notrunc", "status=none"], input=data)
    log = (tmp_path / "probes.log").open("w")
    here, there = Client(server, export, log), Client(server, export, log, netns=node3.netns)
    try:
        # exported, granted to nobody: nobody mounts or lists it
        assert d.exports.get(d.options.parent_dataset.child(v.name)) is not None
        for c in (here, there):
            m = c.ask("mount")
            assert not m["ok"] and "MNT3ERR_ACCES" in m["error"], m
            assert refused(c)
        # granted to node3's address: node3 mounts, reads and writes (its root squashed to the file's
        # owner); the controller's address is still refused
        info = d.initialize_connection(v, {"ip": node3.address, "host": "node3"})
        assert info["data"]["export"] == location
        granted = d.exports.get(d.options.parent_dataset.child(v.name))
        assert (
            granted is not None and granted.clients == (node3.address,) and controller not in granted.clients
        )
        until("node3 mounts once granted", lambda: there.ask("mount")["ok"])
        assert there.ask(f"read 0 {len(data)}") == {"ok": True, "sha256": sha(data)}
        patch = os.urandom(4096)
        assert there.ask(f"write 8192 {patch.hex()}") == {"ok": True}
        assert there.ask("ls 4") == {"ok": True, "names": ["volume"]}
        assert refused(here)
        on_server = host.run(["stat", "-c", "%u:%g %a", f"{export}/volume"]).text.split()
        assert on_server == ["65534:65534", "660"]  # the defaults: secure file operations and permissions
        # revoked: the mount node3 holds stops working, a new one is refused
        d.terminate_connection(v, {"ip": node3.address, "host": "node3"})
        until("node3's mount stops reading once revoked", lambda: not there.ask("read 0 4096")["ok"])
        assert not there.ask(f"write 0 {patch.hex()}")["ok"]
        assert refused(there) and refused(here)
        # what the granted client wrote arrived, and nothing after the revoke did
        expect = data[:8192] + patch + data[8192 + len(patch) :]
        res = host.run(["head", "-c", str(len(data)), f"{export}/volume"])
        assert sha(res.stdout) == sha(expect)
    finally:
        for c in (here, there):
            c.close()
        log.close()
        d.delete_volume(v)
