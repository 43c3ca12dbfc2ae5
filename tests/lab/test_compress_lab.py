"""``replicate --compress`` and ``standby create --compress`` on the lab, through the CLI: zstd on the
wire, full and incremental, the data arrives whole; a destination (or a source) without zstd refuses
before anything starts, in one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import NotYet, eventually

from zfs_backend.config import Settings
from zfs_backend.flows.env import set_env
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import checksums, cli, new_name, snapshot, write
from standby_helpers import MiB, Writer, cleanup, flow_env, location, new_volume


def _compressible(host: SSHHost, ds: str, file: str, mib: int) -> None:
    mnt = Zfs(host).mountpoint(parse_dataset(ds))
    host.run(
        [
            "sh",
            "-c",
            'yes "replicated with --compress" | head -c "$1" > "$2"',
            "sh",
            str(mib << 20),
            f"{mnt}/{file}",
        ]
    )


@contextlib.contextmanager
def _without_zstd(host: SSHHost) -> Iterator[None]:
    """zstd hidden on this node only (its root is an overlay: the move stays in the node's upper dir)."""
    host.run(["mv", "/usr/bin/zstd", "/usr/bin/zstd.hidden-by-test"])
    try:
        yield
    finally:
        host.run(["mv", "/usr/bin/zstd.hidden-by-test", "/usr/bin/zstd"])


def test_replicate_compressed_full_then_incremental(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str]
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "random", 4)
    _compressible(n1, ds, "text", 16)
    snapshot(n1, ds, "s1")
    r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--compress", "--json")
    assert r.returncode == 0, r.stderr
    assert checksums(n2, ds) == checksums(n1, ds) and len(checksums(n1, ds)) == 2
    _compressible(n1, ds, "more", 8)
    snapshot(n1, ds, "s2")
    r = cli(lab_settings, "replicate", f"node1:{ds}@s2", f"node2:{ds}", "--compress", "--json")
    assert r.returncode == 0, r.stderr
    assert '"compress": "zstd"' in r.stdout
    assert checksums(n2, ds) == checksums(n1, ds) and len(checksums(n1, ds)) == 3


def test_a_node_without_zstd_refuses_before_anything_starts(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str]
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    _compressible(n1, ds, "text", 1) if Zfs(n1).exists(parse_dataset(ds)) else write(n1, ds, "random", 1)
    snapshot(n1, ds, "s1")
    for node, said in (
        (n2, "node2 has no zstd to decompress with"),
        (n1, "zstd is not installed on this node"),
    ):
        with _without_zstd(node):
            r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--compress")
        assert r.returncode == 2 and said in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not Zfs(n2).exists(parse_dataset(ds))  # nothing received
    r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}")  # without: as ever
    assert r.returncode == 0, r.stderr


def test_standby_syncs_compressed_from_the_command_line(lab: Lab, lab_settings: Settings) -> None:
    """``standby create --compress``: every sync's stream is zstd on the wire; the standby receives the
    primary's snapshots (same GUIDs: a receive checks every record), while a writer writes."""
    if not nfs.ganesha_available():
        pytest.skip("nfs-ganesha is not installed (scripts/bootstrap installs it)")
    e = flow_env(lab_settings)
    old = set_env(e)
    vol = new_volume(e, "node1", lab.layout.controller_address)
    w = Writer(lambda: location(e, vol), rate=MiB).start()
    try:
        w.wait_for(MiB)
        r = cli(lab_settings, "standby", "create", vol, "--standby", "node2", "--interval", "1", "--compress")
        assert r.returncode == 0, (r.stdout, r.stderr)
        rel = e.service().replication(vol)
        assert rel is not None and rel.activity_id
        act = e.agent("node1").get(rel.activity_id)
        assert act.record().params.get("compress") == "zstd"

        def synced_thrice() -> None:
            rec = act.record()
            if int(rec.result.get("syncs", 0)) < 3:
                assert act.state == "running", rec
                raise NotYet(str(rec))

        eventually(synced_thrice, 120, interval=0.5, retry=NotYet)
        w.stop()
        act.suspend()  # no sync (nor its pruning of old snapshots) while both sides are listed
        d1, d2 = e.driver("node1"), e.driver("node2")
        ds = d1.dataset_of(e.service().get_volume(vol).model())
        theirs = {s.snap: s.guid for s in d2.zfs.list_snapshots(ds)}
        ours = {s.snap: s.guid for s in d1.zfs.list_snapshots(ds)}
        synced = set(theirs) & set(ours) - {act.record().params["base"]}  # not the (plain) seed's
        assert synced and all(theirs[n] == ours[n] for n in synced), (theirs, ours)
        act.resume()
        r = cli(lab_settings, "standby", "remove", vol, "--json")
        assert r.returncode == 0, (r.stdout, r.stderr)
    finally:
        w.stop()
        cleanup(e, vol, ["node1", "node2"])
        set_env(old)
        e.close()
