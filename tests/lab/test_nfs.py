"""nfs-ganesha in the lab nodes: explicit ports, exports added, granted and removed live by SIGHUP, a real
client (libnfs, and nfs-ls over v3 and v4) in the controller's namespace reading and writing. Which
addresses get in is tested in ``test_nfs_access.py``."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import TypeVar

import pytest
from polling import eventually

from zfs_backend.config import Settings
from zfs_backend.driver.nfs import GaneshaExports
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab, nfs
from zfs_backend.lab.node import tcp_open
from zfs_backend.zfs import Zfs, parse_dataset

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)

T = TypeVar("T")


def test_ganesha_and_rpcbind_run_with_explicit_ports(lab: Lab) -> None:
    for st in lab.status():
        assert st.services[nfs.GANESHA_SERVICE], st
        for port in (nfs.PORTS.nfs, nfs.PORTS.mount, nfs.PORTS.nlm, nfs.PORTS.rpcbind):
            assert tcp_open(st.address, port), f"{st.name}:{port}"


def test_export_added_and_removed_live(lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings) -> None:
    host = nodes["node1"]
    addr = lab.node("node1").address
    z = Zfs(host)
    ds = parse_dataset(f"tank/nfs-{uuid.uuid4().hex[:8]}")
    z.create(ds)
    node_bin = load_inventory(lab_settings.inventory).node("node1").zfs_backend_bin or "zfs-backend"
    ex = GaneshaExports(host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE, (3, 4), node_bin=node_bin)
    try:
        path = z.mountpoint(ds)
        assert path is not None
        host.run(["truncate", "-s", "4M", f"{path}/volume"])  # created server side, as the driver does
        host.run(["chown", "65534:65534", f"{path}/volume"])  # owned by whom a squashed root becomes
        pid_before = ex.server_pid()
        ex.add(ds, path)
        assert ex.grant(ds, lab.layout.controller_address) is not None  # the controller's bridge address
        assert ex.server_pid() == pid_before  # reloaded, not restarted
        data = os.urandom(256 << 10)
        with eventually(lambda: nfs.NfsClient(addr, path)) as c:
            c.pwrite("/volume", 8192, data)
            assert c.pread("/volume", 8192, len(data)) == data
        assert eventually(lambda: nfs.nfs_ls(addr, path, version=4)) == ["volume"]
        on_server = host.run(["dd", f"if={path}/volume", "bs=8192", "skip=1", "count=32", "status=none"])
        assert hashlib.sha256(on_server.stdout).digest() == hashlib.sha256(data).digest()
        assert ex.remove(ds)

        def gone() -> None:
            with pytest.raises(nfs.NfsError):
                nfs.NfsClient(addr, path).close()

        eventually(gone)
    finally:
        ex.remove(ds)
        z.destroy(ds, recursive=True, deadline=30, missing_ok=True)
    assert str(ds) not in ex.entries()
