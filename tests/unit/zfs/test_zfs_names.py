from __future__ import annotations

import pytest

from zfs_backend.errors import InvalidName, UsageError
from zfs_backend.zfs.names import (
    BookmarkName,
    DatasetName,
    NodeDataset,
    SnapshotName,
    parse_any,
    parse_node_qualified,
    parse_snapshot,
    validate_hold_tag,
    validate_node,
    validate_pool,
    validate_property,
    validate_property_value,
)

GOOD = [
    "tank",
    "tank/a",
    "tank/a/b-c_d.e:f",
    "Pool9/x",
    "tank/a@snap-1",
    "tank/a@2024-01-01T00:00",
    "tank/a#mark",
    "a" * 255,
    "tank/" + "b" * 250,
]

HOSTILE = [
    ("", "empty"),
    ("-o", "must not start with '-'"),
    ("-rf", "must not start with '-'"),
    ("tank/a;rm -rf /", "whitespace"),
    ("tank/a;b", "invalid character ';'"),
    ("tank/a b", "whitespace"),
    ("tank/$(id)", "invalid character '$'"),
    ("tank/`id`", "invalid character '`'"),
    ("tank/a\nb", "whitespace or control"),
    ("tank/a\tb", "whitespace or control"),
    ("tank/a\0b", "control"),
    ("tank/\u00e9t\u00e9", "ASCII"),
    ("tank/\u0430", "ASCII"),  # Cyrillic a
    ("a" * 256, "longer than 255"),
    ("tank/a@b@c", "at most one"),
    ("tank/a#b@c", "at most one"),
    ("tank/a@b#c", "at most one"),
    ("tank//a", "empty component"),
    ("tank/a/", "empty component"),
    ("/tank", "empty pool name"),
    ("tank/@s", "empty component"),
    ("tank/a@", "empty snapshot name"),
    ("tank/./a", "'.' or '..'"),
    ("tank/../a", "'.' or '..'"),
    ("tank/a@..", "'.' or '..'"),
    ("tank/a%b", "'%' is reserved"),
    ("1tank/a", "must start with a letter"),
    ("_tank", "must start with a letter"),
    ("mirror/a", "reserved"),
    ("raidz2", "reserved"),
    ("spare", "reserved"),
    ("log", "reserved"),
    ("c0t0d0/a", "look like a disk"),
    ("tank/a*", "invalid character '*'"),
    ("tank/a|b", "invalid character '|'"),
    ("tank/a>b", "invalid character '>'"),
    ("tank/a'b", "invalid character"),
]


@pytest.mark.parametrize("text", GOOD)
def test_good_names_parse_and_round_trip(text: str) -> None:
    assert str(parse_any(text)) == text


@pytest.mark.parametrize(("text", "why"), HOSTILE)
def test_hostile_names_rejected_with_one_line_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidName) as ei:
        parse_any(text)
    msg = str(ei.value)
    assert why in msg
    assert "\n" not in msg and msg.startswith("invalid ")
    assert isinstance(ei.value, UsageError)


def test_message_format_matches_cli_style() -> None:
    with pytest.raises(InvalidName, match=r"^invalid dataset name '-o': must not start with '-'$"):
        DatasetName("-o")


def test_types_and_accessors() -> None:
    s = parse_any("tank/a/b@s1")
    assert isinstance(s, SnapshotName)
    assert s.dataset == DatasetName("tank/a/b")
    assert s.snap == "s1" and s.pool == "tank"
    assert s.dataset.parent == DatasetName("tank/a")
    assert DatasetName("tank").parent is None and DatasetName("tank").is_pool_root
    assert DatasetName("tank/a").child("b") == DatasetName("tank/a/b")
    assert DatasetName("tank/a/b").is_descendant_of(DatasetName("tank/a"))
    assert not DatasetName("tank/ab").is_descendant_of(DatasetName("tank/a"))
    assert isinstance(parse_any("tank/a#m"), BookmarkName)
    assert DatasetName("tank/a").snapshot("x") == parse_snapshot("tank/a@x")


def test_constructors_validate_too() -> None:
    with pytest.raises(InvalidName):
        DatasetName("tank/a@s")
    with pytest.raises(InvalidName):
        SnapshotName(DatasetName("tank"), "a b")
    with pytest.raises(InvalidName):
        SnapshotName("tank", "s")  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        SnapshotName(DatasetName("tank"), "a@b")
    with pytest.raises(InvalidName):
        BookmarkName(DatasetName("tank"), "")
    with pytest.raises(InvalidName, match="longer than 255"):
        SnapshotName(DatasetName("t" * 250), "snapshot")


def test_snapshot_parse_requires_at() -> None:
    with pytest.raises(InvalidName, match="exactly one '@'"):
        parse_snapshot("tank/a")


def test_names_are_frozen_and_hashable() -> None:
    s = parse_snapshot("tank/a@s")
    with pytest.raises(AttributeError):
        s.snap = "x"  # type: ignore[misc]
    assert {s, parse_snapshot("tank/a@s")} == {s}
    assert sorted([DatasetName("tank/b"), DatasetName("tank/a")])[0] == DatasetName("tank/a")


def test_node_qualified() -> None:
    nd = parse_node_qualified("node-1:tank/vol@s2")
    assert nd == NodeDataset("node-1", parse_snapshot("tank/vol@s2"))
    assert str(nd) == "node-1:tank/vol@s2"
    # ':' is legal inside dataset names; the node is what precedes the first ':'
    assert str(parse_node_qualified("n:tank/a:b").name) == "tank/a:b"
    for bad in ["tank/vol", ":tank/a", "Node:tank/a", "-n:tank/a", "n_1:tank/a", "n:", "n:-o", "a b:tank"]:
        with pytest.raises(InvalidName):
            parse_node_qualified(bad)


@pytest.mark.parametrize("good", ["node1", "a", "n-2", "x" * 63])
def test_node_good(good: str) -> None:
    assert validate_node(good) == good


@pytest.mark.parametrize("bad", ["", "-a", "Node", "a_b", "a.b", "x" * 64, "n\n", "n\u00e9"])
def test_node_bad(bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_node(bad)


def test_pool_names() -> None:
    assert validate_pool("tank") == "tank"
    for bad in ["tank/a", "tank@s", "9p", "mirror-0", "draid1", "c1"]:
        with pytest.raises(InvalidName):
            validate_pool(bad)


@pytest.mark.parametrize(
    "good", ["used", "createtxg", "com.example:role", "zb:replica-of", "written@s1", "a:b"]
)
def test_property_good(good: str) -> None:
    assert validate_property(good) == good


@pytest.mark.parametrize(
    "bad", ["", "Used", "foo-bar", "-o", "a b", "1x", "Foo:bar", "x=y", "a,b", "written@", "w@a b"]
)
def test_property_bad(bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_property(bad)


def test_property_values() -> None:
    assert validate_property_value("p", "a b=c,-d") == "a b=c,-d"
    for bad in ["a\nb", "a\tb", "a\0b", "x" * 9000]:
        with pytest.raises(InvalidName):
            validate_property_value("p", bad)


def test_hold_tags() -> None:
    assert validate_hold_tag("zfs_backend:act-1") == "zfs_backend:act-1"
    for bad in ["", "-r", "a b", "a;b"]:
        with pytest.raises(InvalidName):
            validate_hold_tag(bad)
