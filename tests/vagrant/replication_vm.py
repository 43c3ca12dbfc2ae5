"""Helpers of the Vagrant tier's replication tests (``test_replication_openzfs*.py``; beside them:
``--import-mode=importlib``): start a replication through the agents under the controller's grants, make
data and snapshots on a VM, read a dataset's listing (names, GUIDs) and file checksums, wait for bytes.
Their fixtures (``settings``, ``agents``, ``names``) are in conftest.py."""

from __future__ import annotations

import time
import uuid
from typing import Any

from zfs_backend.activity.core import BackendActivity
from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.replication import snapshot_replicate
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

T = 600.0  # seconds for any one step on an emulated VM
MiB = 1 << 20
STREAM_PROCS = r"zfs (send|recv|receive)( |$)"


def new_name(names: list[str]) -> str:
    n = f"tank/r{uuid.uuid4().hex[:8]}"
    names.append(n)
    return n


def replicate(settings: Settings, agents: dict[str, Any], src: str, dst: str, **kw: Any) -> BackendActivity:
    from zfs_backend.rpc.connect import connect_node

    def node_for(name: str) -> Any:
        if name not in agents:
            agents[name] = connect_node(name, settings)
        return agents[name]

    extra = {"backoff_s": 1.0, **kw.pop("extra_params", {})}
    wrap = kw.pop("wrap", None)
    return snapshot_replicate(
        src,
        None,
        dst,
        settings=settings,
        extra_params=extra,
        node_for=(lambda n: wrap(node_for(n))) if wrap else node_for,
        **kw,
    )


def write(host: SSHHost, ds: str, file: str, mib: int) -> None:
    z = Zfs(host, timeout=T)
    if not z.exists(parse_dataset(ds)):
        z.create(parse_dataset(ds), props={"compression": "off"})
    mnt = z.mountpoint(parse_dataset(ds))
    host.run(
        ["dd", "if=/dev/urandom", f"of={mnt}/{file}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"],
        timeout=T,
    )


def snapshot(host: SSHHost, ds: str, snap: str, recursive: bool = False) -> None:
    Zfs(host, timeout=T).snapshot(parse_snapshot(f"{ds}@{snap}"), recursive=recursive)


def checksums(host: SSHHost, ds: str) -> dict[str, str]:
    """SHA-256 of every file of ``ds``. A replica is received unmounted (``recv -u``) and read-only: it is
    mounted here to read it (read-only, so reading changes nothing the next incremental would see)."""
    z = Zfs(host, timeout=T)
    if not z.exists(parse_dataset(ds)):
        return {}
    if z.get(parse_dataset(ds), ["mounted"])["mounted"] != "yes":
        assert z.get(parse_dataset(ds), ["readonly"])["readonly"] == "on", f"{ds}: writable, unmounted"
        host.run(["zfs", "mount", ds], timeout=T)
    mnt = z.mountpoint(parse_dataset(ds))
    script = 'cd "$1" && find . -xdev -type f | sort | xargs -r sha256sum'  # this dataset's files only
    out = host.run(["sh", "-c", script, "sh", str(mnt)], timeout=T).text
    return {line.split()[1]: line.split()[0] for line in out.splitlines() if line}


def listing(host: SSHHost, ds: str) -> list[tuple[str, int]] | None:
    z = Zfs(host, timeout=T)
    if not z.exists(parse_dataset(ds)):
        return None
    return [(s.snap, s.guid) for s in z.list_snapshots(parse_dataset(ds))]


def assert_success(act: BackendActivity, timeout: float = T) -> None:
    assert act.wait(timeout) == "succeeded", act.record().error
    n, m = act.progress
    assert n == m > 0, (n, m)  # m starts from send -nvP's estimate, which is not byte-exact here
    assert act.status == 0


def wait_for_bytes(act: BackendActivity, at_least: int, timeout: float = T) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n, _m = act.progress
        if n >= at_least:
            return n
        assert act.state in ("pending", "running"), (act.state, act.record().error)
        time.sleep(0.5)
    raise AssertionError(f"no {at_least} bytes moved in {timeout} s: {act.record()}")


def stream_processes(host: SSHHost) -> str:
    res = host.run(["pgrep", "-a", "-f", STREAM_PROCS], timeout=T, check=False)
    return res.text.strip()
