import json

import pytest

from zfs_backend.activity.report import ActivityRecord, Progress, Resources

KEYS = {
    "id",
    "kind",
    "node",
    "state",
    "status",
    "error",
    "progress",
    "self_restarting",
    "created_at",
    "started_at",
    "finished_at",
    "resources",
    "params",
    "result",
}


def test_record_json_roundtrip():
    rec = ActivityRecord(
        id="act-1",
        kind="pipeline",
        node="node1",
        state="running",
        progress=Progress(5, 10),
        self_restarting=True,
        created_at=1.5,
        started_at=2.0,
        resources=Resources(elapsed_s=1.0, net_bytes_sent=3, cpu_s=0.5, rate_bps=10.0, eta_s=0.5),
        params={"a": [1, 2]},
    )
    d = rec.to_dict()
    assert set(d) == KEYS
    assert set(d["progress"]) == {"done", "total", "unit"}
    assert set(d["resources"]) == {
        "elapsed_s",
        "net_bytes_sent",
        "net_bytes_received",
        "cpu_s",
        "peak_rss_bytes",
        "rate_bps",
        "eta_s",
    }
    back = ActivityRecord.from_dict(json.loads(json.dumps(d)))
    assert back == rec


def test_progress_invariants_and_view():
    with pytest.raises(ValueError):
        Progress(3, 2)
    assert Progress.view(5, 0, state="running").pair == (0, 0)
    assert Progress.view(5, 0, state="succeeded").pair == (5, 5)
    assert Progress.view(7, 9, state="succeeded").pair == (7, 7)
    assert Progress.view(3, 9, state="running").pair == (3, 9)
