"""The streams of issue 21 part B between the Vagrant tier's OpenZFS VMs, through the agents under the
controller's grants (helpers: replication_vm.py; fixtures: conftest.py), each where zfs-fuse cannot:

* a resume token whose snapshot the source pruned during the retry's backoff is discarded and the
  increment sent again from the newest common snapshot (``replication/restart.py``): never wedged;
* a compressible dataset sent compressed (``-L -c -e``, both ends OpenZFS): the bytes that flow,
  ``n == m``, fewer than the logical bytes;
* the source's cursor bookmark as the base after the source pruned every snapshot the destination holds;
* a new tree with ``parallel`` 3: one stream per dataset (OpenZFS receives unmounted, ``recv -u``), a
  child after its parent, then its increment the same way; listings and checksums equal;
* ``raw``: an encrypted dataset sent ``-w``, full then incremental: the replica is encrypted and locked
  (its key is nowhere on the destination), and opens with the same key after a failover (the key file
  brought there, ``zfs load-key``, mounted: the checksums equal); a dataset that is not encrypted is
  refused with one line before anything changes.

The VMs are emulated (TCG): small data, generous timeouts, no timing assertions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings
from zfs_backend.errors import UsageError
from zfs_backend.hosts import SSHHost
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from replication_vm import (
    MiB,
    T,
    assert_success,
    checksums,
    listing,
    new_name,
    replicate,
    snapshot,
    stream_processes,
    wait_for_bytes,
    write,
)


def test_a_token_of_a_pruned_snapshot_falls_back_to_the_newest_common(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    """-I @s1..@s3 cut while receiving @s2 (its ``zfs receive`` killed on the destination); the source
    prunes @s2 during the backoff; the restart cannot use the token (its snapshot is gone), discards that
    partial receive (it appeared under the claim) and sends -I @s1..@s3 again: never wedged."""
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 1)
    snapshot(src, ds, "s1")
    assert_success(replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}"))
    write(src, ds, "b", 16)
    snapshot(src, ds, "s2")
    write(src, ds, "c", 1)
    snapshot(src, ds, "s3")
    act = replicate(
        settings,
        agents,
        f"{src.name}:{ds}@s3",
        f"{dst.name}:{ds}",
        intermediates=True,
        bwlimit="1M",
        extra_params={"backoff_s": 30.0},
    )
    try:
        wait_for_bytes(act, 2 * MiB)
        pids = dst.run(["pgrep", "-f", f"zfs (recv|receive) .*{ds}$"], timeout=T, check=False).text.split()
        assert pids, stream_processes(dst)
        dst.run(["kill", "-KILL", *pids], timeout=T)
        zd = Zfs(dst, timeout=T)
        deadline = time.monotonic() + 60
        while zd.resume_token(parse_dataset(ds)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert zd.resume_token(parse_dataset(ds)) is not None  # the cut left a partial receive of @s2
        Zfs(src, timeout=T).destroy(parse_snapshot(f"{ds}@s2"), deadline=60.0)  # pruned before the retry
        assert_success(act)
    finally:
        if act.state not in ("succeeded", "failed", "cancelled"):
            act.cancel()
            act.wait(T)
    result = act.record().result
    assert "not a snapshot this replication sends" in result["resume_refused"]
    assert "newest common snapshot" in result["resume_discarded"]
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s3"]
    assert listing(dst, ds) == listing(src, ds)
    assert checksums(dst, ds) == checksums(src, ds)
    assert Zfs(dst, timeout=T).resume_token(parse_dataset(ds)) is None


def test_a_compressed_dataset_crosses_the_wire_compressed(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    z = Zfs(src, timeout=T)
    z.create(parse_dataset(ds), props={"compression": "lz4"})
    mnt = z.mountpoint(parse_dataset(ds))
    script = 'yes "a compressible line of text, again and again" | head -c 32M > "$1/text"; sync'
    src.run(["sh", "-c", script, "sh", str(mnt)], timeout=T)
    snapshot(src, ds, "s1")
    logical = z.get_int(parse_snapshot(f"{ds}@s1"), "logicalreferenced")
    assert logical is not None and logical >= 32 * MiB
    act = replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}")
    assert_success(act)
    n, m = act.progress
    assert n == m and n < logical // 4, (n, logical)  # -c: the blocks as compressed on disk
    assert checksums(dst, ds) == checksums(src, ds)


def test_the_cursor_bookmark_is_the_base_after_the_source_pruned_its_snapshots(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 1)
    snapshot(src, ds, "s1")
    assert_success(replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}"))
    write(src, ds, "b", 1)
    snapshot(src, ds, "s2")
    act = replicate(settings, agents, f"{src.name}:{ds}@s2", f"{dst.name}:{ds}")
    assert_success(act)
    cursor = act.record().result["cursor"]["cursor"]
    assert cursor.startswith(f"{ds}#zfs_backend_cursor_")
    zs = Zfs(src, timeout=T)
    marks = [b.name.name for b in zs.list_bookmarks(parse_dataset(ds))]
    assert marks == [cursor]  # the first replication's cursor was dropped
    for s in ("s1", "s2"):  # the source prunes every snapshot the destination holds
        zs.destroy(parse_snapshot(f"{ds}@{s}"))
    write(src, ds, "c", 1)
    snapshot(src, ds, "s3")
    act = replicate(settings, agents, f"{src.name}:{ds}@s3", f"{dst.name}:{ds}")
    assert_success(act)
    assert act.record().result["plan"] == f"incremental -i #{cursor.partition('#')[2]} {ds}@s3"
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2", "s3"]
    assert checksums(dst, ds) == checksums(src, ds)


def test_a_new_tree_in_parallel_goes_one_stream_per_dataset(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    """OpenZFS receives unmounted: a tree new to the destination goes one stream per dataset (zfs-fuse
    sends it as one ``send -R``), each new child after its parent; then its increment the same way."""
    src, dst = vm_pair
    top = new_name(names)
    tree = [top, f"{top}/a", f"{top}/b", f"{top}/c", f"{top}/a/x"]
    for ds in tree:
        write(src, ds, "one", 1)
    snapshot(src, top, "s1", recursive=True)
    act = replicate(settings, agents, f"{src.name}:{top}@s1", f"{dst.name}:{top}", recursive=True, parallel=3)
    assert_success(act)
    assert act.record().result["plan"] == "5 stream(s) of the tree, 3 at a time"
    for ds in tree:
        assert listing(dst, ds) == listing(src, ds)
        assert checksums(dst, ds) == checksums(src, ds)
    for ds in tree:
        write(src, ds, "two", 1)
    snapshot(src, top, "s2", recursive=True)
    act = replicate(settings, agents, f"{src.name}:{top}@s2", f"{dst.name}:{top}", recursive=True, parallel=3)
    assert_success(act)
    assert act.record().result["plan"] == "5 stream(s) of the tree, 3 at a time"
    for ds in tree:
        assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2"]
        assert listing(dst, ds) == listing(src, ds)
        assert checksums(dst, ds) == checksums(src, ds)


def test_an_encrypted_dataset_goes_raw_and_its_replica_opens_with_the_key_after_a_failover(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    key = f"/var/tmp/{ds.replace('/', '_')}.key"  # a raw 32-byte key, on the source only
    src.run(["sh", "-c", 'umask 077; head -c 32 /dev/urandom > "$1"', "sh", key], timeout=T)
    zs, zd = Zfs(src, timeout=T), Zfs(dst, timeout=T)
    props = {"encryption": "on", "keyformat": "raw", "keylocation": f"file://{key}", "compression": "off"}
    zs.create(parse_dataset(ds), props=props)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    act = replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}", raw=True)
    assert_success(act)
    got = zd.get(parse_dataset(ds), ["encryption", "keystatus", "mounted"])
    assert got["encryption"] != "off" and got["keystatus"] == "unavailable", got  # no key there
    assert got["mounted"] == "no"
    assert dst.run(["test", "-e", key], timeout=T, check=False).returncode != 0
    write(src, ds, "b", 1)
    snapshot(src, ds, "s2")
    assert_success(replicate(settings, agents, f"{src.name}:{ds}@s2", f"{dst.name}:{ds}", raw=True))
    assert listing(dst, ds) == listing(src, ds)

    # a failover: the key brought to the destination (here through the controller), loaded, mounted
    material = src.run(["base64", "-w0", key], timeout=T).text.strip()
    script = 'umask 077; printf %s "$2" | base64 -d > "$1"'
    dst.run(["sh", "-c", script, "sh", key, material], timeout=T)
    try:
        dst.run(["zfs", "load-key", "-L", f"file://{key}", ds], timeout=T)
        assert zd.get(parse_dataset(ds), ["keystatus"])["keystatus"] == "available"
        assert checksums(dst, ds) == checksums(src, ds)
    finally:
        dst.run(["rm", "-f", key], timeout=T, check=False)
        src.run(["rm", "-f", key], timeout=T, check=False)

    plain = new_name(names)
    write(src, plain, "a", 1)
    snapshot(src, plain, "s1")
    with pytest.raises(UsageError, match="not encrypted"):
        replicate(settings, agents, f"{src.name}:{plain}@s1", f"{dst.name}:{plain}", raw=True)
    assert not zd.exists(parse_dataset(plain))
