"""The plan of a recursive tree sent one stream per dataset (replication.tree_plan, pure): a job per
dataset holding the target, each planned by GUID on its own, a new dataset after its parent, a conflict
naming the dataset, and one job's send and receive."""

from __future__ import annotations

import pytest

from zfs_backend.errors import DestinationDiverged, NoCommonBase
from zfs_backend.replication.remote import DestinationDataset
from zfs_backend.replication.tree_plan import job_specs, tree_jobs
from zfs_backend.zfs.models import Snapshot
from zfs_backend.zfs.names import parse_snapshot


def snap(name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(parse_snapshot(name), guid=guid, createtxg=txg, used=0, referenced=1, creation=0)


def src_tree() -> dict[str, list[Snapshot]]:
    tree: dict[str, list[Snapshot]] = {}
    for i, rel in enumerate(["", "a", "a/x", "b"]):
        ds = "tank/t" + (f"/{rel}" if rel else "")
        tree[rel] = [snap(f"{ds}@s1", 100 + i, 10), snap(f"{ds}@s2", 200 + i, 20)]
    tree["late"] = [snap("tank/t/late@s3", 999, 30)]  # made after @s2: not part of the tree's @s2
    return tree


def test_the_tree_plan_by_dataset() -> None:
    src = src_tree()
    dst = {
        "": DestinationDataset([snap("tank/r@s1", 100, 5)]),
        "b": DestinationDataset([snap("tank/r/b@s1", 103, 5), snap("tank/r/b@s2", 203, 6)]),  # done
    }
    jobs = {j.rel: j for j in tree_jobs(src, dst, "s2", intermediates=True)}
    assert sorted(jobs) == ["", "a", "a/x"]  # b holds @s2 already; late has no @s2
    top = jobs[""].plan
    assert top.base is not None and top.base.guid == 100 and top.intermediates and jobs[""].after is None
    assert jobs["a"].full and jobs["a"].after is None  # its parent exists on the destination
    assert jobs["a/x"].full and jobs["a/x"].after == "a"  # new under a new parent: after it
    assert [j.rel for j in tree_jobs(src, dst, "s2")] == ["", "a", "a/x"]  # -i: the same streams


def test_a_new_tree_waits_for_its_top() -> None:
    jobs = tree_jobs(src_tree(), {}, "s2")
    assert [(j.rel, j.after, j.full) for j in jobs] == [
        ("", None, True),
        ("a", "", True),
        ("b", "", True),
        ("a/x", "a", True),
    ]


def test_a_dataset_that_diverged_or_shares_nothing_refuses_the_tree_naming_it() -> None:
    src = src_tree()
    changed = {"": DestinationDataset([snap("tank/r@s1", 100, 5)], changed=True, detail="1 file")}
    with pytest.raises(DestinationDiverged, match=r"^the top: .*1 file"):
        tree_jobs(src, changed, "s2")
    foreign = {
        "": DestinationDataset([snap("tank/r@s1", 100, 5)]),
        "a": DestinationDataset([snap("tank/r/a@z", 7, 5)]),
    }
    with pytest.raises(NoCommonBase, match=r"^a: "):
        tree_jobs(src, foreign, "s2")
    ok = tree_jobs(src, changed, "s2", rollback_destination=True)
    assert ok[0].plan.rollback_to is not None


def test_job_specs() -> None:
    jobs = {j.rel: j for j in tree_jobs(src_tree(), {}, "s2")}
    send, recv = job_specs(jobs[""], "tank/r", properties=True, resumable=True, read_only=True)
    assert str(send.snapshot) == "tank/t@s2" and send.properties and not send.recursive
    assert str(recv.target) == "tank/r" and recv.resumable and dict(recv.set_properties) == {"readonly": "on"}
    send, recv = job_specs(jobs["a/x"], "tank/r", properties=False, resumable=False, read_only=True)
    assert str(send.snapshot) == "tank/t/a/x@s2" and str(recv.target) == "tank/r/a/x"
    assert dict(recv.set_properties) == {}  # a child inherits the top's readonly
