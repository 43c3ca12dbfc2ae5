from __future__ import annotations

import math

import pytest

from zfs_backend.errors import UsageError
from zfs_backend.zfs.estimate import MIN_STREAM_BYTES, STREAM_OVERHEAD, estimate_from_snapshots
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_snapshot

MiB = 1 << 20


def snap(name: str, txg: int, used: int, ref: int) -> Snapshot:
    return Snapshot(
        parse_snapshot(f"tank/a@{name}"), guid=txg * 7, createtxg=txg, used=used, referenced=ref, creation=0
    )


# s1: 3 MiB written; s2: +2 MiB appended; s3: 1 MiB of s2's new data overwritten, +1 MiB appended
CHAIN = [
    snap("s3", 30, 0, 6 * MiB),
    snap("s1", 10, 0, 3 * MiB),
    snap("s2", 20, 1 * MiB, 5 * MiB),  # 1 MiB only s2 holds (overwritten before s3)
]


def ov(n: int) -> int:
    return math.ceil(n * STREAM_OVERHEAD)


def test_full_is_referenced() -> None:
    assert estimate_from_snapshots(CHAIN, "s2") == ov(5 * MiB)


def test_incremental_adds_used_of_base() -> None:
    # -i s2 s3: new blocks = 6 - 5 + 1 (blocks of s2 freed before s3) = 2 MiB
    assert estimate_from_snapshots(CHAIN, "s3", "s2") == ov(2 * MiB)
    # -i s1 s3: 6 - 3 + used(s1)=0 -> 3 MiB (the 1 MiB born and freed in between is not sent)
    assert estimate_from_snapshots(CHAIN, "s3", "s1") == ov(3 * MiB)


def test_intermediates_add_used_between() -> None:
    assert estimate_from_snapshots(CHAIN, "s3", "s1", intermediates=True) == ov(4 * MiB)


def test_whole_history_for_replication_stream() -> None:
    assert estimate_from_snapshots(CHAIN, "s3", whole_history=True) == ov(3 * MiB + 4 * MiB)


def test_clamped_at_minimum() -> None:
    chain = [snap("a", 1, 0, 100), snap("b", 2, 0, 50)]  # shrank: delta negative
    assert estimate_from_snapshots(chain, "b", "a") == ov(MIN_STREAM_BYTES)


def test_full_names_select_merged_origin() -> None:
    origin = Snapshot(parse_snapshot("tank/o@base"), 1, 5, 0, 2 * MiB, 0)
    chain = [origin, snap("c1", 8, 0, 3 * MiB)]
    assert estimate_from_snapshots(chain, "c1", "tank/o@base") == ov(1 * MiB)


def test_errors() -> None:
    with pytest.raises(UsageError):
        estimate_from_snapshots(CHAIN, "nope")
    with pytest.raises(UsageError, match="not older"):
        estimate_from_snapshots(CHAIN, "s1", "s3")


class _Space:
    """A SpaceSource stub: tank/a has s1,s2; tank/a/c has only s2 (new child under -R)."""

    def __init__(self) -> None:
        from zfs_backend.zfs.dialect import ZFS_FUSE_07

        self.dialect = ZFS_FUSE_07
        self.chains = {
            "tank/a": [snap("s1", 10, 0, 3 * MiB), snap("s2", 20, 0, 5 * MiB)],
            "tank/a/c": [
                Snapshot(
                    parse_snapshot("tank/a/c@s2"), guid=1, createtxg=20, used=0, referenced=MiB, creation=0
                )
            ],
        }

    def list_datasets(self, root=None, recursive=True):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        from zfs_backend.zfs.names import DatasetName

        return [SimpleNamespace(name=DatasetName(n)) for n in self.chains]

    def list_snapshots(self, dataset):  # type: ignore[no-untyped-def]
        return self.chains[str(dataset)]

    def get_int(self, name, prop):  # type: ignore[no-untyped-def]
        raise AssertionError("no written property on zfs-fuse")


def test_estimate_from_space_recursive_sums_children() -> None:
    from zfs_backend.zfs.estimate import estimate_from_space
    from zfs_backend.zfs.models import SendSpec

    s1, s2 = parse_snapshot("tank/a@s1"), parse_snapshot("tank/a@s2")
    got = estimate_from_space(_Space(), SendSpec(s2, s1, intermediates=True, recursive=True))
    assert got == ov(2 * MiB) + ov(1 * MiB)  # parent incremental + child in full


def test_estimate_from_space_refuses_bookmark_base() -> None:
    from zfs_backend.errors import UnsupportedFeature
    from zfs_backend.zfs.estimate import estimate_from_space
    from zfs_backend.zfs.models import SendSpec
    from zfs_backend.zfs.names import parse_any

    spec = SendSpec(parse_snapshot("tank/a@s2"), incremental_from=parse_any("tank/a#m"))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedFeature):
        estimate_from_space(_Space(), spec)
