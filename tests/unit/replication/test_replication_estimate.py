"""The size estimate (exact vs space-accounting fallback) and the space a stream needs."""

from __future__ import annotations

from zfs_backend.hosts.fake import FakeHost
from zfs_backend.replication.estimate import (
    estimate_send,
    needed_space,
)
from zfs_backend.zfs import OPENZFS_2, ZFS_FUSE_07, SendSpec, Zfs
from zfs_backend.zfs.names import parse_snapshot

MiB = 1 << 20


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


def test_stream_flags_where_both_ends_have_them() -> None:
    from zfs_backend.replication.upkeep import stream_flags
    from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07

    both = {"send_compressed": True, "send_large_blocks": True, "send_embedded": True}
    assert stream_flags(OPENZFS_2, both) == {"large_blocks": True, "compressed": True, "embedded": True}
    assert not any(stream_flags(ZFS_FUSE_07, both).values())  # the source cannot
    assert not any(stream_flags(OPENZFS_2, {}).values())  # a destination that did not say (zfs-fuse)
    assert stream_flags(OPENZFS_2, {**both, "send_compressed": False})["compressed"] is False
