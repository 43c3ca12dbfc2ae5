"""The size estimate (exact vs space-accounting fallback) and the "modified" heuristic."""

from __future__ import annotations

from zfs_backend.hosts.fake import FakeHost
from zfs_backend.replication.estimate import (
    MODIFIED_SLACK_BYTES,
    destination_modified,
    estimate_send,
    needed_space,
)
from zfs_backend.zfs import OPENZFS_2, ZFS_FUSE_07, SendSpec, Zfs
from zfs_backend.zfs.models import Dataset, Snapshot
from zfs_backend.zfs.names import parse_dataset, parse_snapshot

MiB = 1 << 20


def _snap(name: str, txg: int, used: int, ref: int) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=txg, createtxg=txg, used=used, referenced=ref, creation=0)


def _head(ref: int) -> Dataset:
    return Dataset(parse_dataset("tank/fs"), "filesystem", 1, 1, ref, ref, 1 << 30)


def test_exact_where_send_nvp_exists() -> None:
    host = FakeHost(lambda argv, _in: (0, "full\ttank/fs@a\t123\nsize\t4567890\n", ""))
    est = estimate_send(Zfs(host, dialect=OPENZFS_2), SendSpec(parse_snapshot("tank/fs@a")))
    assert est.exact and est.bytes == 4567890 and est.method == "send -nvP"
    assert host.calls[0][:5] == ("zfs", "send", "-n", "-v", "-P")


def test_fallback_on_zfs_fuse_from_space_accounting() -> None:
    table = "tank/fs@a\tguid\t1\ntank/fs@a\tcreatetxg\t10\ntank/fs@a\tused\t0\ntank/fs@a\treferenced\t%d\n"
    table += "tank/fs@a\tcreation\t0\ntank/fs@b\tguid\t2\ntank/fs@b\tcreatetxg\t20\ntank/fs@b\tused\t0\n"
    table += "tank/fs@b\treferenced\t%d\ntank/fs@b\tcreation\t0\n"
    out = table % (32 * MiB, 36 * MiB)
    host = FakeHost(lambda argv, _in: (0, out, ""))
    z = Zfs(host, dialect=ZFS_FUSE_07)
    full = estimate_send(z, SendSpec(parse_snapshot("tank/fs@b")))
    assert not full.exact and full.method == "space accounting"
    assert 36 * MiB <= full.bytes <= 36 * MiB * 1.003
    inc = estimate_send(z, SendSpec(parse_snapshot("tank/fs@b"), parse_snapshot("tank/fs@a")))
    assert 4 * MiB <= inc.bytes <= 4 * MiB * 1.003
    assert not any("-n" in c for c in host.calls)


def test_needed_space_has_a_margin() -> None:
    assert needed_space(100 * MiB) > 100 * MiB


def test_destination_modified_heuristic() -> None:
    snaps = [_snap("tank/fs@a", 1, 0, 32 * MiB), _snap("tank/fs@b", 2, 80 << 10, 36 * MiB)]
    assert not destination_modified(_head(36 * MiB), snaps)  # atime noise only
    assert destination_modified(_head(40 * MiB), snaps)  # grew
    snaps[1] = _snap("tank/fs@b", 2, 2 * MiB, 36 * MiB)
    assert destination_modified(_head(36 * MiB), snaps)  # overwritten in place
    assert destination_modified(_head(1), snaps, written=MODIFIED_SLACK_BYTES + 1)
    assert not destination_modified(_head(1), snaps, written=4096)
    assert not destination_modified(_head(1000), [])
