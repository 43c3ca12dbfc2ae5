"""Raw sends of encrypted datasets (replication.raw, ``replicate --raw``): refused with one line, before
the destination is asked anything, where the source cannot send raw or the dataset is not encrypted;
refused where the destination cannot receive raw; otherwise ``-w`` alone, carried by the request's
params, the plan's stream and a parallel tree's streams."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.activity.core import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore
from zfs_backend.cli.main import main
from zfs_backend.errors import UnsupportedFeature, UsageError
from zfs_backend.kinds.replicate import Replicate
from zfs_backend.replication.plan import incremental_path
from zfs_backend.replication.raw import check_raw_source, raw_flags
from zfs_backend.replication.remote import DestinationTree
from zfs_backend.replication.request import Request
from zfs_backend.replication.tree_plan import job_specs, tree_jobs
from zfs_backend.zfs.dialect import OPENZFS_2, ZFS_FUSE_07
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import DatasetName, parse_dataset, parse_snapshot


class SourceZfs:
    """The source's ZFS as the raw check reads it: a dialect and the ``encryption`` property."""

    def __init__(self, dialect: Any = OPENZFS_2, encryption: str = "aes-256-gcm") -> None:
        self.dialect, self.encryption = dialect, encryption
        self.asked: list[tuple[str, list[str]]] = []

    def get(self, name: DatasetName, props: list[str]) -> dict[str, str]:
        self.asked.append((str(name), props))
        return {"encryption": self.encryption}


FS = parse_dataset("tank/secret")


def test_only_an_encrypted_dataset_of_a_source_that_can_send_raw() -> None:
    assert check_raw_source(SourceZfs(), FS, "node1") == "aes-256-gcm"  # type: ignore[arg-type]
    for plain in ("off", "-", ""):
        with pytest.raises(UsageError, match=r"^--raw is for encrypted datasets: node1:tank/secret is not"):
            check_raw_source(SourceZfs(encryption=plain), FS, "node1")  # type: ignore[arg-type]
    fuse = SourceZfs(dialect=ZFS_FUSE_07)
    with pytest.raises(UnsupportedFeature, match=r"node1 \(zfs-fuse\) cannot send raw"):
        check_raw_source(fuse, FS, "node1")  # type: ignore[arg-type]
    assert fuse.asked == []  # the dialect decides first: no property zfs-fuse does not know


def test_the_destination_must_receive_raw_and_the_stream_is_w_alone() -> None:
    assert raw_flags({"send_raw": True}, "node2") == {
        "raw": True,
        "large_blocks": False,
        "compressed": False,
        "embedded": False,
    }
    with pytest.raises(UnsupportedFeature, match="node2 cannot receive a raw"):
        raw_flags({"send_compressed": True}, "node2")
    tree = DestinationTree.from_dict({"node": "node2", "dialect": {"send_raw": True}})
    assert tree.stream["send_raw"] is True  # begin's report carries it


PARAMS = {
    "snapshot": "tank/secret@s2",
    "source_node": "node1",
    "destination_node": "node2",
    "destination": "tank/secret",
}


def test_the_request_carries_raw_only_when_asked() -> None:
    req = Request.from_params({**PARAMS, "raw": True})
    assert req.raw and req.to_params()["raw"] is True
    plain = Request.from_params(PARAMS)
    assert not plain.raw and "raw" not in plain.to_params()  # an older agent reads the same params
    with pytest.raises(UsageError, match="'raw' must be true or false"):
        Request.from_params({**PARAMS, "raw": "yes"})


def snap(name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=guid, createtxg=txg, used=0, referenced=1, creation=0)


class Refused(Exception):
    pass


def test_a_plain_dataset_is_refused_before_the_destination_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    class Receiver:
        def begin(self, *a: Any, **kw: Any) -> None:
            asked.append("begin")
            raise Refused

    monkeypatch.setattr(Replicate, "receiver", property(lambda self: Receiver()))
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    params = {**PARAMS, "raw": True}
    act = Replicate(ActivityRecord(id="act-raw", kind="replicate", node="node1", params=params), ctx)
    act._src = SourceZfs(encryption="off")  # type: ignore[assignment]
    with pytest.raises(UsageError, match="not encrypted"):
        act.plan()
    assert asked == []
    act._src = SourceZfs()  # type: ignore[assignment]
    monkeypatch.setattr(Replicate, "_source_tree", lambda self: {"": []})
    with pytest.raises(Refused):
        act.plan()  # encrypted: on to the destination
    assert asked == ["begin"] and act.kind_state["encryption"] == "aes-256-gcm"
    store.close()


def test_the_planned_streams_are_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    params = {**PARAMS, "raw": True}
    act = Replicate(ActivityRecord(id="act-raw", kind="replicate", node="node1", params=params), ctx)
    act.kind_state["stream_flags"] = raw_flags({"send_raw": True}, "node2")
    src = [snap("tank/secret@s1", 1, 1), snap("tank/secret@s2", 2, 2)]
    plan = incremental_path(src, [src[0]], "s2")
    spec = act._send_spec(plan)  # type: ignore[arg-type]
    assert spec.argv(OPENZFS_2) == ["zfs", "send", "-w", "-i", "tank/secret@s1", "tank/secret@s2"]
    jobs = tree_jobs({"": src, "c": [replace(s, guid=s.guid + 10) for s in src]}, {}, "s2")
    for job in jobs:  # a parallel tree's streams: the same flags
        send, _recv = job_specs(
            job,
            "tank/secret",
            properties=False,
            resumable=True,
            read_only=True,
            flags=act.kind_state["stream_flags"],
        )
        assert "-w" in send.argv(OPENZFS_2) and "-c" not in send.argv(OPENZFS_2)
    store.close()


def test_the_command_line_takes_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(*a: Any, **kw: Any) -> None:
        seen.update(kw)
        raise UsageError("stop here")

    monkeypatch.setattr("zfs_backend.cli.replicate_cmd.snapshot_replicate", fake)
    assert main(["replicate", "node1:tank/secret@s2", "node2:tank/secret", "--raw"]) == 2
    assert seen["raw"] is True
