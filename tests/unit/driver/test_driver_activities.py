"""Which activities concern which volumes, and the line Cinder shows (zfs_backend.driver.activities)."""

from __future__ import annotations

from zfs_backend.activity.report import ActivityRecord, Progress
from zfs_backend.driver.activities import activity_line, latest_by_volume, volumes_of

PARENT = "tank/cinder-volumes"
V1 = "0e4bd1a2-95f7-4c1e-9d49-3f8f2a1c7b01"
V2 = "7c1d1b7e-2222-4f0e-8a1b-000000000002"


def rec(aid: str, state: str, created: float, **params: object) -> ActivityRecord:
    return ActivityRecord(
        id=aid,
        kind="replicate",
        node="node1",
        state=state,
        progress=Progress(10, 40),
        created_at=created,
        params=dict(params),
    )


def test_volumes_named_by_parameters() -> None:
    r = rec("act-1", "running", 1.0, snapshot=f"{PARENT}/volume-{V1}@snapshot-s", destination="node2:tank/x")
    assert volumes_of(r, PARENT) == {V1}
    r = rec("act-2", "running", 1.0, datasets=[f"{PARENT}/volume-{V1}", f"node2:{PARENT}/volume-{V2}"])
    assert volumes_of(r, PARENT) == {V1, V2}
    assert volumes_of(rec("act-3", "running", 1.0, snapshot=f"tank/other/volume-{V1}@s"), PARENT) == set()
    assert volumes_of(rec("act-4", "running", 1.0, snapshot=f"{PARENT}/volume-{V1}x/y"), PARENT) == {f"{V1}x"}


def test_the_unfinished_activity_wins_else_the_newest() -> None:
    snap = f"{PARENT}/volume-{V1}@snapshot-s"
    old = rec("act-old", "succeeded", 1.0, snapshot=snap)
    running = rec("act-run", "running", 2.0, snapshot=snap)
    newer_done = rec("act-new", "cancelled", 3.0, snapshot=snap)
    assert latest_by_volume([old, running, newer_done], PARENT)[V1].id == "act-run"
    assert latest_by_volume([old, newer_done], PARENT)[V1].id == "act-new"
    assert latest_by_volume([], PARENT) == {}


def test_activity_line() -> None:
    r = rec("act-1", "running", 1.0)
    assert activity_line(r) == "replicate running 10 of 40 bytes (act-1 on node1)"
    failed = r.with_(state="failed", status=5, error="x" * 300)
    line = activity_line(failed)
    assert line.startswith("replicate failed 10 of 40 bytes (act-1 on node1): xxx") and len(line) == 255
