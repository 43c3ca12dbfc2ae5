from __future__ import annotations

from collections.abc import Callable

import pytest

from zfs_backend.errors import UnsupportedFeature
from zfs_backend.hosts.fake import FakeHost
from zfs_backend.zfs import dialect as dmod
from zfs_backend.zfs.dialect import (
    OPENZFS_2,
    ZFS_FUSE_07,
    command_flags,
    dialect_from_texts,
    parse_usage,
    probe,
)


def test_parse_usage_joins_continuations(canned_text: Callable[[str], str]) -> None:
    canned = canned_text
    u = parse_usage(canned("zfs_fuse_07_zfs_usage.txt"))
    assert u["list"] == [
        "list [-rH][-d max] [-o property[,...]] [-t type[,...]] [-s property] ... "
        "[-S property] ... [filesystem|volume|snapshot] ..."
    ]
    assert len(u["receive"]) == 2
    assert command_flags(u, "send") == frozenset("RDp")
    assert command_flags(u, "receive") == frozenset("vnFd")
    assert "version" not in u


def test_zfs_fuse_texts_give_all_flags_false(canned_text: Callable[[str], str]) -> None:
    canned = canned_text
    d = dialect_from_texts(
        canned("zfs_fuse_07_zfs_usage.txt"),
        canned("zfs_fuse_07_zpool_usage.txt"),
        canned("zfs_fuse_07_get_usage.txt"),
        version_text=None,
        holds_text=canned("zfs_fuse_07_holds.txt"),
        upgrade_text=canned("zfs_fuse_07_upgrade_v.txt"),
    )
    assert d == ZFS_FUSE_07
    assert d.zpl_version == 4  # zfs upgrade -v: filesystem versions 1-4 (no system attributes)
    assert d.name == "zfs-fuse"
    for flag in (
        "resumable_receive",
        "send_estimate",
        "zvols",
        "written_property",
        "holds",
        "parsable_list",
        "zpool_list_parsable",
        "get_type_filter",
        "bookmarks",
        "recv_no_mount",
        "recv_properties",
        "send_compressed",
        "send_large_blocks",
        "send_embedded",
        "send_raw",
    ):
        assert getattr(d, flag) is False, flag


def test_openzfs_texts_give_all_flags_true(canned_text: Callable[[str], str]) -> None:
    canned = canned_text
    d = dialect_from_texts(
        canned("openzfs_2_zfs_usage.txt"),
        canned("openzfs_2_zpool_usage.txt"),
        canned("openzfs_2_get_usage.txt"),
        version_text=canned("openzfs_2_version.txt"),
        holds_text=canned("openzfs_2_holds.txt"),
        upgrade_text=canned("openzfs_2_upgrade_v.txt"),
    )
    assert d.zpl_version == 5
    assert d.name == "openzfs" and d.version == "2.3.2-2~bpo12+2"
    assert d == OPENZFS_2.__class__(**{**OPENZFS_2.__dict__, "version": d.version})
    assert d.send_compressed and d.send_large_blocks and d.send_embedded  # send [-DLPbcehnpsVvw]
    assert d.send_raw  # -w
    assert str(d) == "openzfs 2.3.2-2~bpo12+2"


def test_holds_listed_but_broken_means_no_holds(canned_text: Callable[[str], str]) -> None:
    canned = canned_text
    d = dialect_from_texts(
        canned("openzfs_2_zfs_usage.txt"), "", "", None, "internal error: pyzfs.py not found"
    )
    assert d.holds is False
    assert d.send_estimate is True  # other flags unaffected


def test_zpl_version_from_upgrade_v(canned_text: Callable[[str], str]) -> None:
    """The highest filesystem version ``zfs upgrade -v`` lists; unknown (None) without its table."""
    usage = canned_text("zfs_fuse_07_zfs_usage.txt")
    fuse = canned_text("zfs_fuse_07_upgrade_v.txt")
    assert dialect_from_texts(usage, "", "", None, None, fuse).zpl_version == 4
    assert dialect_from_texts(usage, "", "", None, None, None).zpl_version is None
    assert dialect_from_texts(usage, "", "", None, None, "usage: zfs upgrade [-v]\n").zpl_version is None


def test_probe_runs_help_commands_and_caches_per_host(
    scripted_host: Callable[..., FakeHost], fuse_table: dict
) -> None:
    host = scripted_host(fuse_table)
    d1 = probe(host)
    n = len(host.calls)
    assert d1 == ZFS_FUSE_07
    assert ("zfs", "version") not in host.calls  # not listed in the usage: not run
    assert ("zfs", "upgrade", "-v") in host.calls
    assert probe(host) is d1 and len(host.calls) == n
    probe(host, refresh=True)
    assert len(host.calls) == 2 * n
    dmod.forget(host)


def test_probe_openzfs(scripted_host: Callable[..., FakeHost], openzfs_table: dict) -> None:
    host = scripted_host(openzfs_table)
    d = probe(host)
    assert d.resumable_receive and d.send_estimate and d.zvols and d.holds and d.parsable_list
    assert ("zfs", "version") in host.calls
    assert d.zpl_version == 5


def test_probe_without_zfs_raises(scripted_host: Callable[..., FakeHost]) -> None:
    host = scripted_host({("zfs",): (127, "", "zfs: command not found")})
    with pytest.raises(UnsupportedFeature, match="no usage listing"):
        probe(host)
