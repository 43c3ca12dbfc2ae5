from __future__ import annotations

import pytest

from zfs_backend.zfs.parse import (
    ParseError,
    parse_get,
    parse_human_size,
    parse_int,
    parse_send_estimate,
    parse_table,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("512", 512),
        ("604K", 604 * 1024),
        ("1016M", 1016 * 1024**2),
        ("9.02M", round(9.02 * 1024**2)),
        ("31.7M", round(31.7 * 1024**2)),
        ("1.5G", round(1.5 * 1024**3)),
        ("2T", 2 * 1024**4),
        ("1P", 1024**5),
        ("4.60E", round(4.60 * 1024**6)),
        ("100B", 100),
        (" 1K ", 1024),
        ("-", None),
        ("none", None),
    ],
)
def test_human_sizes(text: str, value: int | None) -> None:
    assert parse_human_size(text) == value


@pytest.mark.parametrize("bad", ["abc", "1.2.3M", "12Q", "M", "-5", "9" * 400, "17E", "1Z"])
def test_human_size_garbage(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_human_size(bad)


def test_parse_int_exact_and_fallback() -> None:
    assert parse_int("11978300819731444037") == 11978300819731444037
    assert parse_int("-") is None
    assert parse_int("1K") == 1024


FUSE_GET = """\
zprobe/a\tguid\t11978300819731444037
zprobe/a\tcreatetxg\t6
zprobe/a\tused\t5464064
zprobe/a@s1\tguid\t15693952990513247844
zprobe/a@s1\tcreatetxg\t12
zprobe/a@s1\tcreation\t1795638058
zprobe/a\tcom.example:note\ttab-free value with spaces
"""


def test_parse_get_groups_by_name() -> None:
    got = parse_get(FUSE_GET)
    assert list(got) == ["zprobe/a", "zprobe/a@s1"]
    assert got["zprobe/a"]["guid"] == "11978300819731444037"
    assert got["zprobe/a"]["com.example:note"] == "tab-free value with spaces"
    assert got["zprobe/a@s1"]["creation"] == "1795638058"


def test_parse_get_rejects_non_triples() -> None:
    with pytest.raises(ParseError):
        parse_get("zprobe/a guid 1\n")


def test_parse_table() -> None:
    assert parse_table("zprobe\t504M\t9.02M\t495M\n\n", 4) == [["zprobe", "504M", "9.02M", "495M"]]
    with pytest.raises(ParseError):
        parse_table("a\tb\n", 3)


def test_send_estimate_takes_last_size_line() -> None:
    out = "incremental\ts1\tp/a@s2\t1234\nsize\t1234\n"
    assert parse_send_estimate(out) == 1234
    assert parse_send_estimate("full\tp/a@s1\t100\nfull\tp/b@s1\t50\nsize\t150\n") == 150
    assert parse_send_estimate("nothing useful") is None
