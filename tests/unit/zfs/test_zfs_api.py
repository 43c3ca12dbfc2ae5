from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from zfs_backend.errors import (
    DatasetBusy,
    DatasetNotFound,
    InvalidName,
    UnsupportedFeature,
    UsageError,
)
from zfs_backend.hosts.fake import FakeHost
from zfs_backend.zfs import Zfs
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
from zfs_backend.zfs.models import RecvSpec, SendSpec
from zfs_backend.zfs.names import DatasetName, parse_snapshot

Scripted = Callable[..., FakeHost]
A = DatasetName("tank/a")
S1, S2 = parse_snapshot("tank/a@s1"), parse_snapshot("tank/a@s2")
OK = (0, "", "")
BUSY = (1, "", "cannot destroy 'tank/b': dataset is busy")
SNAP_PROPS = "guid,createtxg,used,referenced,creation"

FUSE_SNAPS = """\
tank/a\tguid\t11978300819731444037
tank/a\tcreatetxg\t6
tank/a\tused\t5464064
tank/a\treferenced\t5373952
tank/a\tcreation\t1795638058
tank/a/child\tguid\t42
tank/a/child\tcreatetxg\t8
tank/a/child\tused\t1
tank/a/child\treferenced\t1
tank/a/child\tcreation\t1
tank/a@s2\tguid\t14035989686734234575
tank/a@s2\tcreatetxg\t17
tank/a@s2\tused\t0
tank/a@s2\treferenced\t5373952
tank/a@s2\tcreation\t1795638059
tank/a@s1\tguid\t15693952990513247844
tank/a@s1\tcreatetxg\t12
tank/a@s1\tused\t90112
tank/a@s1\treferenced\t3268608
tank/a@s1\tcreation\t1795638058
tank/a@bad name\tguid\t1
tank/a@bad name\tcreatetxg\t13
tank/a@bad name\tused\t0
tank/a@bad name\treferenced\t0
tank/a@bad name\tcreation\t0
"""


def fuse(scripted_host: Scripted, table: dict) -> tuple[Zfs, FakeHost]:
    host = scripted_host(table)
    return Zfs(host, dialect=ZFS_FUSE_07), host


def test_list_snapshots_zfs_fuse_uses_get_and_sorts_by_createtxg(scripted_host: Scripted) -> None:
    argv = ("zfs", "get", "-Hp", "-d", "1", "-o", "name,property,value", SNAP_PROPS, "tank/a")
    z, host = fuse(scripted_host, {argv: (0, FUSE_SNAPS, "")})
    snaps = z.list_snapshots(A)
    assert [s.name for s in snaps] == [S1, S2]  # child dataset and the space-named snapshot skipped
    assert snaps[0].guid == 15693952990513247844 and snaps[0].createtxg == 12
    assert snaps[0].used == 90112 and snaps[0].referenced == 3268608 and snaps[0].creation == 1795638058
    assert host.calls == [argv]


def test_list_snapshots_openzfs_uses_list_p(scripted_host: Scripted) -> None:
    argv = ("zfs", "list", "-Hp", "-t", "snapshot", "-d", "1", "-o", "name," + SNAP_PROPS, "tank/a")
    out = "tank/a@s2\t2\t20\t0\t5\t100\ntank/a@s1\t1\t10\t4\t3\t99\n"
    host = scripted_host({argv: (0, out, "")})
    snaps = Zfs(host, dialect=OPENZFS_2).list_snapshots(A)
    assert [(s.snap, s.guid, s.createtxg) for s in snaps] == [("s1", 1, 10), ("s2", 2, 20)]


def test_list_snapshots_missing_dataset(scripted_host: Scripted) -> None:
    argv = ("zfs", "get", "-Hp", "-d", "1", "-o", "name,property,value", SNAP_PROPS, "tank/a")
    z, _ = fuse(scripted_host, {argv: (1, "", "cannot open 'tank/a': dataset does not exist")})
    with pytest.raises(DatasetNotFound):
        z.list_snapshots(A)


def test_list_snapshots_of_many_datasets_is_one_command(scripted_host: Scripted) -> None:
    """A batch of standbys (replication.receiver_standby): each dataset's own snapshots from one listing
    (``tank/a``'s child and a dataset whose name begins like another's are not its)."""
    argv = ("zfs", "get", "-Hp", "-d", "1", "-o", "name,property,value", SNAP_PROPS, "tank/a", "tank/a2")
    other = "".join(
        f"tank/a2@s9\t{p}\t{v}\n" for p, v in zip(SNAP_PROPS.split(","), (9, 30, 0, 1, 1), strict=True)
    )
    z, host = fuse(scripted_host, {argv: (0, FUSE_SNAPS + other, "")})
    out = z.list_snapshots_of([A, DatasetName("tank/a2")])
    assert [s.name for s in out[A]] == [S1, S2]
    assert [(s.snap, s.guid) for s in out[DatasetName("tank/a2")]] == [("s9", 9)]
    assert host.calls == [argv]
    assert z.list_snapshots_of([]) == {} and host.calls == [argv]  # nothing asked, nothing run


DS_PROPS = "type,guid,createtxg,used,referenced,available,mountpoint,mounted,origin"


def test_list_datasets_zfs_fuse(scripted_host: Scripted) -> None:
    out = "".join(
        f"{n}\t{p}\t{v}\n"
        for n, t, mp in (
            ("tank", "filesystem", "/tank"),
            ("tank/a", "filesystem", "legacy"),
            ("tank/a@s", "snapshot", "-"),
        )
        for p, v in (
            ("type", t),
            ("guid", "9"),
            ("createtxg", "1"),
            ("used", "10"),
            ("referenced", "5"),
            ("available", "100" if t != "snapshot" else "-"),
            ("mountpoint", mp),
            ("mounted", "yes" if t != "snapshot" else "-"),
            ("origin", "tank/x@s" if n == "tank/a" else "-"),
        )
    )
    argv = ("zfs", "get", "-Hp", "-r", "-o", "name,property,value", DS_PROPS, "tank")
    z, _ = fuse(scripted_host, {argv: (0, out, "")})
    ds = z.list_datasets(DatasetName("tank"))
    assert [str(d.name) for d in ds] == ["tank", "tank/a"]
    assert ds[0].mountpoint == "/tank" and ds[0].mounted is True and ds[0].available == 100
    assert ds[1].mountpoint is None
    assert ds[0].origin is None and str(ds[1].origin) == "tank/x@s"


def test_list_datasets_openzfs_non_recursive(scripted_host: Scripted) -> None:
    argv = ("zfs", "list", "-Hp", "-t", "filesystem,volume", "-o", "name," + DS_PROPS, "tank/a")
    host = scripted_host({argv: (0, "tank/a\tfilesystem\t7\t3\t10\t5\t100\t/tank/a\tno\t-\n", "")})
    (d,) = Zfs(host, dialect=OPENZFS_2).list_datasets(A, recursive=False)
    assert d.guid == 7 and d.mounted is False and d.type == "filesystem"


def test_exists(scripted_host: Scripted) -> None:
    z, _ = fuse(
        scripted_host,
        {
            ("zfs", "get", "-H", "-o", "value", "type", "tank/a@s1"): (0, "snapshot\n", ""),
            ("zfs", "get", "-H", "-o", "value", "type", "tank/a@s2"): (
                1,
                "",
                "cannot open 'x': dataset does not exist",
            ),
        },
    )
    assert z.exists(S1) and not z.exists(S2)
    with pytest.raises(UsageError):
        z.exists("tank/a")  # type: ignore[arg-type]


def test_get_set_create(scripted_host: Scripted) -> None:
    z, host = fuse(
        scripted_host,
        {
            ("zfs", "get", "-Hp", "-o", "property,value", "used,com.example:x", "tank/a"): (
                0,
                "used\t5\ncom.example:x\t-\n",
                "",
            ),
            ("zfs", "set", "com.example:x=a b", "tank/a"): OK,
            ("zfs", "create", "-p", "-o", "compression=lz4", "-o", "a:b=c", "tank/a/b"): OK,
            ("zfs", "get", "-Hp", "-o", "property,value", "mountpoint", "tank/a"): (
                0,
                "mountpoint\tlegacy\n",
                "",
            ),
        },
    )
    assert z.get(A, ["used", "com.example:x"]) == {"used": "5", "com.example:x": "-"}
    z.set(A, "com.example:x", "a b")
    z.create(DatasetName("tank/a/b"), {"compression": "lz4", "a:b": "c"}, parents=True)
    assert z.mountpoint(A) is None
    with pytest.raises(InvalidName):
        z.set(A, "-o", "x")
    with pytest.raises(InvalidName):
        z.set(A, "a:b", "x\ny")
    assert len(host.calls) == 4


def test_destroy_retries_busy_until_success(scripted_host: Scripted, clock) -> None:  # type: ignore[no-untyped-def]
    argv = ("zfs", "destroy", "-r", "tank/b")
    host = scripted_host({argv: [BUSY, BUSY, OK]})
    Zfs(host, dialect=ZFS_FUSE_07, clock=clock, sleep=clock.sleep).destroy(
        DatasetName("tank/b"), recursive=True
    )
    assert host.calls == [argv] * 3
    assert clock.sleeps == [0.05, 0.1]


def test_destroy_gives_up_at_deadline(scripted_host: Scripted, clock) -> None:  # type: ignore[no-untyped-def]
    host = scripted_host({("zfs", "destroy", "tank/b"): BUSY})
    z = Zfs(host, dialect=ZFS_FUSE_07, clock=clock, sleep=clock.sleep)
    with pytest.raises(DatasetBusy):
        z.destroy(DatasetName("tank/b"), deadline=3.0)
    assert sum(clock.sleeps) == pytest.approx(3.0)
    assert max(clock.sleeps) <= 1.0
    assert len(host.calls) == len(clock.sleeps) + 1


def test_destroy_missing(scripted_host: Scripted) -> None:
    z, _ = fuse(
        scripted_host,
        {("zfs", "destroy", "tank/a@s1"): (1, "", "cannot open 'tank/a@s1': dataset does not exist")},
    )
    z.destroy(S1, missing_ok=True)
    with pytest.raises(DatasetNotFound):
        z.destroy(S1)


def test_verbs_argv(scripted_host: Scripted) -> None:
    table = {
        ("zfs", "snapshot", "-r", "tank/a@s1"): OK,
        ("zfs", "rollback", "-r", "tank/a@s1"): OK,
        ("zfs", "clone", "-o", "readonly=on", "tank/a@s1", "tank/c"): OK,
        ("zfs", "promote", "tank/c"): OK,
        ("zfs", "rename", "-p", "tank/c", "tank/x/c"): OK,
        ("zfs", "rename", "tank/a@s1", "tank/a@s0"): OK,
        ("zfs", "unmount", "-f", "tank/a"): OK,
        ("zfs", "mount", "tank/a"): OK,
        ("zfs", "destroy", "-R", "tank/a@s1"): OK,
        ("zfs", "destroy", "-d", "tank/a@s1"): OK,
    }
    z, host = fuse(scripted_host, table)
    z.snapshot(S1, recursive=True)
    z.rollback(S1, destroy_newer=True)
    z.clone(S1, DatasetName("tank/c"), {"readonly": "on"})
    z.promote(DatasetName("tank/c"))
    z.rename(DatasetName("tank/c"), DatasetName("tank/x/c"), parents=True)
    z.rename(S1, parse_snapshot("tank/a@s0"))
    z.unmount(A, force=True)
    z.mount(A)
    z.destroy(S1, dependents=True)
    z.destroy(S1, defer=True)
    assert [c for c in host.calls] == list(table)
    with pytest.raises(UsageError):
        z.rename(S1, parse_snapshot("tank/b@s1"))
    with pytest.raises(UsageError):
        z.rename(S1, A)
    with pytest.raises(UsageError):
        z.snapshot(A)  # type: ignore[arg-type]


def test_holds_gated_by_dialect(scripted_host: Scripted) -> None:
    z, host = fuse(scripted_host, {})
    with pytest.raises(UnsupportedFeature):  # zfs-fuse cannot list holds...
        z.holds(S1)
    z = Zfs(host, dialect=replace(ZFS_FUSE_07, user_holds=False))
    for call in (lambda: z.hold(S1, "t"), lambda: z.release(S1, "t")):
        with pytest.raises(UnsupportedFeature):
            call()
    assert host.calls == []
    # ...but it takes and releases them (user_holds)
    host = scripted_host(
        {("zfs", "hold", "zb:1", "tank/a@s1"): OK, ("zfs", "release", "zb:1", "tank/a@s1"): OK}
    )
    z = Zfs(host, dialect=ZFS_FUSE_07)
    z.hold(S1, "zb:1")
    z.release(S1, "zb:1")
    host = scripted_host(
        {
            ("zfs", "holds", "-H", "tank/a@s1"): (
                0,
                "tank/a@s1\tzb:2\tWed Nov 25 2026\ntank/a@s1\tzb:1\tx\n",
                "",
            ),
            ("zfs", "hold", "zb:1", "tank/a@s1"): OK,
            ("zfs", "release", "-r", "zb:1", "tank/a@s1"): OK,
        }
    )
    z = Zfs(host, dialect=OPENZFS_2)
    assert z.holds(S1) == ["zb:1", "zb:2"]
    z.hold(S1, "zb:1")
    z.release(S1, "zb:1", recursive=True)
    with pytest.raises(InvalidName):
        z.hold(S1, "-r")


def test_pool_capacity_both_dialects(scripted_host: Scripted) -> None:
    z, _ = fuse(
        scripted_host,
        {
            ("zpool", "list", "-H", "-o", "name,size,allocated,free", "tank"): (
                0,
                "tank\t1016M\t604K\t1015M\n",
                "",
            )
        },
    )
    cap = z.pool_capacity("tank")
    assert (cap.size, cap.allocated, cap.free, cap.exact) == (1016 << 20, 604 << 10, 1015 << 20, False)
    host = scripted_host(
        {("zpool", "list", "-Hp", "-o", "name,size,allocated,free", "tank"): (0, "tank\t1000\t10\t990\n", "")}
    )
    cap = Zfs(host, dialect=OPENZFS_2).pool_capacity("tank")
    assert (cap.size, cap.allocated, cap.free, cap.exact) == (1000, 10, 990, True)
    with pytest.raises(InvalidName):
        z.pool_capacity("tank/a")


def test_send_recv_builders_follow_dialect(scripted_host: Scripted) -> None:
    z, host = fuse(scripted_host, {})
    assert z.send_argv(SendSpec(S2, S1)) == ["zfs", "send", "-i", "tank/a@s1", "tank/a@s2"]
    assert z.recv_argv(RecvSpec(DatasetName("p2/a"), force=True)) == ["zfs", "receive", "-F", "p2/a"]
    with pytest.raises(UnsupportedFeature):
        z.recv_argv(RecvSpec(DatasetName("p2/a"), resumable=True))
    with pytest.raises(UnsupportedFeature):
        z.resume_send_argv("1-abc-def")
    assert z.resume_token(DatasetName("p2/a")) is None
    assert z.estimate_send_size(SendSpec(S2, S1)) is None
    assert host.calls == []


def test_resume_openzfs(scripted_host: Scripted) -> None:
    host = scripted_host(
        {
            ("zfs", "get", "-Hp", "-o", "property,value", "receive_resume_token", "p2/a"): (
                0,
                "receive_resume_token\t1-e604ea4bf-e0-789c63\n",
                "",
            ),
            ("zfs", "receive", "-A", "p2/a"): OK,
        }
    )
    z = Zfs(host, dialect=OPENZFS_2)
    tok = z.resume_token(DatasetName("p2/a"))
    assert tok == "1-e604ea4bf-e0-789c63"
    assert z.resume_send_argv(tok) == ["zfs", "send", "-t", tok]
    with pytest.raises(InvalidName):
        z.resume_send_argv("1-abc; rm -rf /")
    z.abort_resumable_receive(DatasetName("p2/a"))


def test_estimate_send_size_openzfs(scripted_host: Scripted) -> None:
    argv = ("zfs", "send", "-n", "-v", "-P", "-i", "tank/a@s1", "tank/a@s2")
    host = scripted_host({argv: (0, "incremental\ts1\ttank/a@s2\t2101232\nsize\t2101232\n", "")})
    assert Zfs(host, dialect=OPENZFS_2).estimate_send_size(SendSpec(S2, S1)) == 2101232


def test_estimate_from_space_zfs_fuse(scripted_host: Scripted) -> None:
    argv = ("zfs", "get", "-Hp", "-d", "1", "-o", "name,property,value", SNAP_PROPS, "tank/a")
    z, _ = fuse(scripted_host, {argv: (0, FUSE_SNAPS, "")})
    # ref(s2) - ref(s1) + used(s1) = 5373952 - 3268608 + 90112
    expect = 5373952 - 3268608 + 90112
    got = z.estimate_send_size_from_space(SendSpec(S2, S1))
    assert expect <= got <= expect * 1.003
    assert z.estimate_send_size_from_space(SendSpec(S1)) >= 3268608


def test_dialect_probed_lazily_once(scripted_host: Scripted, fuse_table: dict) -> None:
    argv = ("zfs", "destroy", "tank/b")
    host = scripted_host({**fuse_table, argv: OK})
    z = Zfs(host)
    z.destroy(DatasetName("tank/b"))
    assert host.calls == [argv]  # destroy needs no dialect
    assert z.dialect == ZFS_FUSE_07
    n = len(host.calls)
    assert z.dialect is z.dialect and len(host.calls) == n


def test_bookmark_listings_are_validated() -> None:
    from zfs_backend.zfs.listing import read_bookmarks
    from zfs_backend.zfs.names import parse_dataset

    fs = parse_dataset("tank/fs")
    text = (
        "tank/fs#b\t12\t20\ntank/fs#a\t11\t10\ntank/fs#bad name\t1\t1\n"
        "tank/other#x\t5\t5\ntank/fs#c\tnan\t3\n"
    )
    marks = read_bookmarks(text, fs, host="node1")
    assert [(b.mark, b.guid, b.createtxg) for b in marks] == [("a", 11, 10), ("b", 12, 20)]


def test_bookmarks_are_made_and_listed_only_where_the_dialect_has_them(scripted_host: Scripted) -> None:
    from zfs_backend.errors import UnsupportedFeature
    from zfs_backend.zfs.names import BookmarkName, parse_dataset, parse_snapshot

    fs, snap = parse_dataset("tank/fs"), parse_snapshot("tank/fs@s")
    mark = BookmarkName(fs, "m")
    make = ("zfs", "bookmark", "tank/fs@s", "tank/fs#m")
    lst = ("zfs", "list", "-Hp", "-t", "bookmark", "-d", "1", "-o", "name,guid,createtxg", "tank/fs")
    host = scripted_host({make: OK, lst: (0, "tank/fs#m\t7\t3\n", "")})
    z = Zfs(host, dialect=OPENZFS_2)
    z.bookmark(snap, mark)
    assert [(b.mark, b.guid) for b in z.list_bookmarks(fs)] == [("m", 7)]
    assert host.calls == [make, lst]
    fuse = scripted_host({})
    zf = Zfs(fuse, dialect=ZFS_FUSE_07)
    with pytest.raises(UnsupportedFeature):
        zf.bookmark(snap, mark)
    assert zf.list_bookmarks(fs) == [] and fuse.calls == []  # nothing asked of zfs-fuse


def test_held_snapshots_reads_userrefs_on_both_dialects(scripted_host: Scripted) -> None:
    """``userrefs`` is readable where the tags are not (zfs-fuse): snapshots without holds and names the
    project does not accept are left out; the root is validated before any command."""
    listing = "tank/a@s1\t2\ntank/a@s2\t0\ntank/a@bad name\t1\ntank/b@s\t1\n"
    for dialect in (ZFS_FUSE_07, OPENZFS_2):
        host = scripted_host(
            {
                ("zfs", "list", "-H", "-t", "snapshot", "-o", "name,userrefs"): (0, listing, ""),
                ("zfs", "list", "-H", "-t", "snapshot", "-o", "name,userrefs", "-r", "tank/a"): (
                    0,
                    "tank/a@s1\t2\n",
                    "",
                ),
            }
        )
        z = Zfs(host, dialect=dialect)
        assert [(str(s), n) for s, n in z.held_snapshots()] == [("tank/a@s1", 2), ("tank/b@s", 1)]
        assert [(str(s), n) for s, n in z.held_snapshots(A)] == [("tank/a@s1", 2)]
        with pytest.raises(UsageError):
            z.held_snapshots("tank/a")  # type: ignore[arg-type]
