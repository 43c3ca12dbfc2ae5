from __future__ import annotations

import pytest

from zfs_backend.errors import InvalidName, UnsupportedFeature, UsageError
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
from zfs_backend.zfs.models import PoolCapacity, RecvSpec, SendSpec
from zfs_backend.zfs.names import DatasetName, parse_any, parse_snapshot

S1 = parse_snapshot("tank/a@s1")
S2 = parse_snapshot("tank/a@s2")
BM = parse_any("tank/a#m1")


@pytest.mark.parametrize("dialect", [OPENZFS_2, ZFS_FUSE_07])
def test_send_argv_full_and_incremental(dialect) -> None:  # type: ignore[no-untyped-def]
    assert SendSpec(S2).argv(dialect) == ["zfs", "send", "tank/a@s2"]
    assert SendSpec(S2, incremental_from=S1).argv(dialect) == ["zfs", "send", "-i", "tank/a@s1", "tank/a@s2"]
    spec = SendSpec(S2, S1, intermediates=True, properties=True, recursive=True, dedup=True)
    assert spec.argv(dialect) == ["zfs", "send", "-R", "-D", "-p", "-I", "tank/a@s1", "tank/a@s2"]
    assert spec.is_incremental and not SendSpec(S2).is_incremental


def test_send_estimate_argv_only_where_supported() -> None:
    spec = SendSpec(S2, S1)
    assert spec.estimate_argv(OPENZFS_2) == ["zfs", "send", "-n", "-v", "-P", "-i", "tank/a@s1", "tank/a@s2"]
    with pytest.raises(UnsupportedFeature):
        spec.estimate_argv(ZFS_FUSE_07)


def test_send_from_bookmark() -> None:
    spec = SendSpec(S2, incremental_from=BM)  # type: ignore[arg-type]
    assert spec.argv(OPENZFS_2) == ["zfs", "send", "-i", "tank/a#m1", "tank/a@s2"]
    with pytest.raises(UnsupportedFeature):
        spec.argv(ZFS_FUSE_07)
    with pytest.raises(UsageError):
        SendSpec(S2, incremental_from=BM, intermediates=True)  # type: ignore[arg-type]


def test_send_spec_needs_validated_names() -> None:
    with pytest.raises(UsageError):
        SendSpec("tank/a@s2")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        SendSpec(S2, incremental_from="-o")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        SendSpec(DatasetName("tank/a"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="need an incremental base"):
        SendSpec(S2, intermediates=True)
    with pytest.raises(UsageError, match="same"):
        SendSpec(S2, incremental_from=S2)


def test_recv_argv_zfs_fuse() -> None:
    t = DatasetName("pool2/a")
    assert RecvSpec(t).argv(ZFS_FUSE_07) == ["zfs", "receive", "pool2/a"]
    assert RecvSpec(t, force=True, verbose=True, dry_run=True).argv(ZFS_FUSE_07) == [
        "zfs",
        "receive",
        "-F",
        "-v",
        "-n",
        "pool2/a",
    ]
    assert RecvSpec(DatasetName("pool2"), strip_first=True).argv(ZFS_FUSE_07) == [
        "zfs",
        "receive",
        "-d",
        "pool2",
    ]
    for spec in (
        RecvSpec(t, resumable=True),
        RecvSpec(t, no_mount=True),
        RecvSpec(t, set_properties={"readonly": "on"}),
        RecvSpec(t, exclude_properties=("mountpoint",)),
    ):
        with pytest.raises(UnsupportedFeature):
            spec.argv(ZFS_FUSE_07)


def test_recv_argv_openzfs() -> None:
    spec = RecvSpec(
        DatasetName("pool2/a"),
        force=True,
        resumable=True,
        no_mount=True,
        set_properties={"readonly": "on", "com.example:src": "n1:tank/a"},
        exclude_properties=("mountpoint",),
    )
    assert spec.argv(OPENZFS_2) == [
        "zfs",
        "receive",
        "-F",
        "-s",
        "-u",
        "-o",
        "readonly=on",
        "-o",
        "com.example:src=n1:tank/a",
        "-x",
        "mountpoint",
        "pool2/a",
    ]


def test_recv_spec_validation() -> None:
    with pytest.raises(UsageError):
        RecvSpec("pool2/a")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        RecvSpec(S1, strip_first=True)
    with pytest.raises(InvalidName):
        RecvSpec(DatasetName("p/a"), set_properties={"Bad": "x"})
    with pytest.raises(InvalidName):
        RecvSpec(DatasetName("p/a"), set_properties={"a:b": "x\ny"})
    spec = RecvSpec(DatasetName("p/a"), set_properties={"a:b": "1"})
    with pytest.raises(TypeError):
        spec.set_properties["a:b"] = "2"  # type: ignore[index]
    assert hash(S1) == hash(parse_snapshot("tank/a@s1"))


def test_pool_capacity_fraction() -> None:
    assert PoolCapacity("p", 1000, 250, 750).fraction_used == 0.25
    assert PoolCapacity("p", 0, 0, 0).fraction_used == 0.0


def test_send_keeps_blocks_as_on_disk_only_where_the_dialect_can() -> None:
    from zfs_backend.errors import UnsupportedFeature
    from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
    from zfs_backend.zfs.models import SendSpec
    from zfs_backend.zfs.names import parse_snapshot

    spec = SendSpec(
        parse_snapshot("tank/fs@b"),
        parse_snapshot("tank/fs@a"),
        large_blocks=True,
        compressed=True,
        embedded=True,
    )
    assert spec.argv(OPENZFS_2) == ["zfs", "send", "-L", "-c", "-e", "-i", "tank/fs@a", "tank/fs@b"]
    # the estimate counts what really flows: the compressed stream
    assert spec.estimate_argv(OPENZFS_2)[:8] == ["zfs", "send", "-n", "-v", "-P", "-L", "-c", "-e"]
    with pytest.raises(UnsupportedFeature, match="-L"):
        spec.argv(ZFS_FUSE_07)
    plain = SendSpec(parse_snapshot("tank/fs@b"))
    assert plain.argv(ZFS_FUSE_07) == ["zfs", "send", "tank/fs@b"]


def test_a_raw_send_is_w_alone_and_only_where_the_dialect_can() -> None:
    from zfs_backend.errors import UnsupportedFeature
    from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
    from zfs_backend.zfs.models import SendSpec
    from zfs_backend.zfs.names import parse_snapshot

    spec = SendSpec(
        parse_snapshot("tank/fs@b"),
        parse_snapshot("tank/fs@a"),
        recursive=True,
        large_blocks=True,
        compressed=True,
        raw=True,
    )
    # -w implies -L -c -e: they are not passed beside it
    assert spec.argv(OPENZFS_2) == ["zfs", "send", "-R", "-w", "-i", "tank/fs@a", "tank/fs@b"]
    assert spec.estimate_argv(OPENZFS_2)[:7] == ["zfs", "send", "-n", "-v", "-P", "-R", "-w"]
    with pytest.raises(UnsupportedFeature, match="-w"):
        SendSpec(parse_snapshot("tank/fs@b"), raw=True).argv(ZFS_FUSE_07)
