"""``recv.drop_partial`` and ``abort`` on a partial resumable receive (replication.receiver_abort), on the
in-memory model of a node: the state is discarded only where it is provably the project's (a stream of
the claim's source, written under the claim or into the source's own marked replica)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.errors import UsageError
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.receiver import SOURCE_PROP, Receiver
from zfs_backend.zfs.api import Zfs
from zfs_backend.zfs.dialect import OPENZFS_2
from zfs_backend.zfs.resume_token import encode_resume_token

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_zfs import FakeZfs, changes

A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
SRC = "node1:tank/fs"


def token(toname: str, toguid: int = 14, fromguid: int = 11) -> str:
    return encode_resume_token({"fromguid": fromguid, "object": 5, "toguid": toguid, "toname": toname})


@pytest.fixture
def zfs() -> FakeZfs:
    return FakeZfs(OPENZFS_2)


@pytest.fixture
def rx(zfs: FakeZfs, tmp_path: Path) -> Receiver:
    return Receiver(cast(Zfs, zfs), ClaimStore(tmp_path / "c.db"), changes=changes)


def begin(rx: Receiver, **kw: Any) -> dict[str, Any]:
    return rx.begin("tank/r", A, SRC, sent_guids=[11, 12, 13, 14], **kw)


def test_a_partial_receive_of_its_source_made_under_the_claim_is_dropped(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "a", guids=[11])
    begin(rx)
    own = token("tank/fs@c", 13, 12)  # -I: cut in @c, which the source pruned since
    zfs.ds["tank/r"].token = own
    assert rx.drop_partial("tank/r", A, {"": own}) == {"dropped": [""], "left": []}
    assert ("receive -A", "tank/r") in zfs.calls and zfs.ds["tank/r"].token is None
    assert zfs.guids("tank/r") == [11]  # committed data untouched


@pytest.mark.parametrize(
    ("mark", "dropped"),
    [
        ((SRC, "local"), True),  # the replica of this very source: a stream of that source is its own
        (("node3:tank/fs", "local"), False),  # another source's replica
        ((SRC, "received"), False),  # a mark that came in a stream proves nothing
        (None, False),  # no mark: a dataset the project did not make
    ],
)
def test_a_partial_receive_found_by_begin_is_dropped_only_in_the_sources_marked_replica(
    rx: Receiver, zfs: FakeZfs, mark: tuple[str, str] | None, dropped: bool
) -> None:
    zfs.make("tank/r", "a", guids=[11], **({SOURCE_PROP: mark} if mark else {}))
    old = token("tank/fs@gone", 77)
    zfs.ds["tank/r"].token = old
    begin(rx)
    out = rx.drop_partial("tank/r", A, {"": old})
    assert (out["dropped"] == [""]) is dropped
    assert (zfs.ds["tank/r"].token is None) is dropped
    if not dropped:
        assert len(out["left"]) == 1 and "zfs receive -A tank/r" in out["left"][0]
        assert "\n" not in out["left"][0]


@pytest.mark.parametrize(
    ("tok", "why"),
    [
        (token("tank/victim@s1", 77), "not of this replication's source tank/fs"),
        ("1-abc-def-00", "invalid receive_resume_token"),
    ],
)
def test_a_partial_receive_of_another_stream_is_left_even_under_the_claim(
    rx: Receiver, zfs: FakeZfs, tok: str, why: str
) -> None:
    zfs.make("tank/r", "a", guids=[11], **{SOURCE_PROP: (SRC, "local")})
    begin(rx)
    zfs.ds["tank/r"].token = tok  # someone's receive outside the project, meanwhile
    out = rx.drop_partial("tank/r", A, {"": tok})
    assert out["dropped"] == [] and why in out["left"][0]
    assert ("receive -A", "tank/r") not in zfs.calls


def test_a_token_that_changed_since_is_left(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "a", guids=[11])
    begin(rx)
    zfs.ds["tank/r"].token = token("tank/fs@d")
    out = rx.drop_partial("tank/r", A, {"": token("tank/fs@c", 13)})
    assert out["dropped"] == [] and "not the one named" in out["left"][0]
    assert zfs.ds["tank/r"].token is not None


def test_a_claim_on_one_dataset_reaches_no_child(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "a", guids=[11])
    zfs.make("tank/r/c", "a", guids=[21])
    begin(rx)
    with pytest.raises(UsageError, match="covers tank/r alone"):
        rx.drop_partial("tank/r", A, {"c": token("tank/fs/c@d")})


def test_abort_keeps_a_partial_receive_it_cannot_prove_its_own(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "a", guids=[11])
    foreign = token("tank/fs@x", 77)
    zfs.ds["tank/r"].token = foreign  # there before the claim, in an unmarked dataset
    begin(rx)
    out = rx.abort("tank/r", A)
    assert zfs.ds["tank/r"].token == foreign and ("receive -A", "tank/r") not in zfs.calls
    assert not out["restored"] and "left alone" in out["left"][0]


def test_abort_drops_its_own_partial_receive(rx: Receiver, zfs: FakeZfs) -> None:
    zfs.make("tank/r", "a", guids=[11])
    begin(rx)
    zfs.ds["tank/r"].token = token("tank/fs@d")
    out = rx.abort("tank/r", A)
    assert zfs.ds["tank/r"].token is None and out["restored"]
