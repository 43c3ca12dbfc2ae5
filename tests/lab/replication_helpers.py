"""Helpers for the replication lab tests: datasets, data, listings, and snapshot_replicate through one
agent session per node for the whole test session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from polling import NotYet, eventually

from zfs_backend.activity.core import BackendActivity
from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.replication import snapshot_replicate
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

MiB = 1 << 20
FAST = {"backoff_s": 0.5}


def new_name(names: list[str]) -> str:
    n = f"tank/r{uuid.uuid4().hex[:8]}"
    names.append(n)
    return n


def write(host: SSHHost, ds: str, file: str, mib: int) -> None:
    z = Zfs(host)
    if not z.exists(parse_dataset(ds)):
        z.create(parse_dataset(ds))
    mnt = z.mountpoint(parse_dataset(ds))
    host.run(
        ["dd", "if=/dev/urandom", f"of={mnt}/{file}", "bs=1M", f"count={mib}", "status=none"], timeout=120
    )


def snapshot(host: SSHHost, ds: str, snap: str) -> None:
    Zfs(host).snapshot(parse_snapshot(f"{ds}@{snap}"))


def checksums(host: SSHHost, ds: str) -> dict[str, str]:
    z = Zfs(host)
    if not z.exists(parse_dataset(ds)):
        return {}
    mnt = z.mountpoint(parse_dataset(ds))
    out = host.run(["sh", "-c", 'cd "$1" && find . -type f | sort | xargs -r sha256sum', "sh", str(mnt)]).text
    return {line.split()[1]: line.split()[0] for line in out.splitlines() if line}


def listing(host: SSHHost, ds: str) -> list[tuple[str, int]] | None:
    z = Zfs(host)
    if not z.exists(parse_dataset(ds)):
        return None
    return [(s.snap, s.guid) for s in z.list_snapshots(parse_dataset(ds))]


def guid(host: SSHHost, snap: str) -> int:
    v = Zfs(host).get_int(parse_snapshot(snap), "guid")
    assert v is not None
    return v


_AGENTS: dict[str, Any] = {}


def _agent(settings: Settings, name: str) -> Any:
    """One agent session per node for the whole module (saves an SSH + rpc start per call)."""
    from zfs_backend.rpc.connect import connect_node

    if name not in _AGENTS:
        _AGENTS[name] = connect_node(name, settings)
    return _AGENTS[name]


def replicate(settings: Settings, src: str, dst: str, **kw: Any) -> BackendActivity:
    extra = {**FAST, **kw.pop("extra_params", {})}
    return snapshot_replicate(
        src, None, dst, settings=settings, extra_params=extra, node_for=lambda n: _agent(settings, n), **kw
    )


def wait_for_bytes(act: BackendActivity, at_least: int, timeout: float = 30) -> int:

    def moved() -> int:
        n, _m = act.progress
        if n >= at_least:
            return n
        assert act.state in ("pending", "running"), (act.state, act.error)
        raise NotYet(f"no {at_least} bytes moved in {timeout} s: {act.record()}")

    return eventually(moved, timeout, interval=0.1, retry=NotYet)


@contextlib.contextmanager
def shaped(lab: Lab, node: str, mib_per_s: float) -> Iterator[None]:
    lab.shape(node, int(mib_per_s * 8 * MiB))
    try:
        yield
    finally:
        lab.shape(node, None)


def assert_success(act: BackendActivity, timeout: float = 120) -> None:
    assert act.wait(timeout) == "succeeded", act.record().error
    n, m = act.progress
    assert n == m > 0
    assert act.status == 0


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``zfs-backend`` command on the test lab's settings."""
    return dict(
        os.environ,
        ZFS_BACKEND_HOME=str(settings.home),
        ZFS_BACKEND_INVENTORY=str(settings.inventory),
        ZFS_BACKEND_LAB_NETWORK=settings.lab_network,
    )


def cli(settings: Settings, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``zfs-backend ARGV`` as a user runs it: its own process, on the test lab's settings; a command that
    does not return within ``timeout`` fails the test (issue 22: ``volume migrate`` never returned)."""
    return subprocess.run(
        [sys.executable, "-m", "zfs_backend.cli.main", *argv],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
