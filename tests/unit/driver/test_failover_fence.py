"""A forced failover (Cinder's ``failover_host``) fences the old primary's copies when that node answers,
and reports (never fails on) the ones it cannot reach: the primary may be gone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fake_ganesha_node import FakeNode

from zfs_backend.driver import NodeOptions, Volume, ZfsNfsDriver
from zfs_backend.driver import failover as fo
from zfs_backend.driver.nfs import ExportEntry, GaneshaExports, render_export
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE
from zfs_backend.zfs import ZFS_FUSE_07, Zfs
from zfs_backend.zfs.names import parse_dataset

EXPORTS = "".join(
    render_export(
        ExportEntry(
            parse_dataset(f"tank/volumes/volume-{v}"), 100 + n, f"/tank/volumes/volume-{v}", ("198.18.0.1",)
        ),
        (3, 4),
    )
    for n, v in enumerate(("v1", "v2"))
)


class OldPrimary(FakeNode):
    """node1 after the failover: its exports and datasets; whether it answers at all; what was set."""

    def __init__(self, *, answers: bool = True) -> None:
        super().__init__(EXPORTS, ("tank/volumes", "tank/volumes/volume-v1", "tank/volumes/volume-v2"))
        self.answers = answers
        self.set: list[tuple[str, ...]] = []

    def respond(self, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        if not self.answers:
            return 255, "", "ssh: connect to host 198.18.0.11 port 22: No route to host"
        if argv == ("true",):
            return 0, "", ""
        if argv[:2] == ("zfs", "set"):
            self.set.append(argv[2:])
            return 0, "", ""
        return super().respond(argv, stdin)


def _primary(node: OldPrimary | None) -> ZfsNfsDriver:
    d = ZfsNfsDriver(
        NodeOptions(node="node1", export_address="198.18.0.11", replication_devices=("node2",)),
        None if node is None else node.host,
    )
    if node is not None:
        d._zfs = Zfs(node.host, dialect=ZFS_FUSE_07)
        d._exports = GaneshaExports(node.host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE)
    return d


@pytest.fixture
def standby(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The standby side faked: every volume but ``bad`` fails over; returns the volumes failed over."""
    moved: list[str] = []

    class Peer:
        host = None

    def fail_over(_peer: Any, v: Volume) -> dict[str, Any]:
        if v.id == "bad":
            raise fo.ZfsBackendError("node2 holds no replica of volume bad")
        moved.append(v.id)
        return {
            "provider_location": f"198.18.0.12:/tank/volumes/volume-{v.id}",
            "snapshot": SNAP,
            "snapshot_time": 1.0,
            "lost_window_s": 2.0,
        }

    monkeypatch.setattr(fo, "peer_driver", lambda d, node: Peer())
    monkeypatch.setattr(fo, "fail_over", fail_over)
    return moved


SNAP = "snapshot-0778a9f3-b14a-4449-a8ba-2abd23da4feb"  # what a Cinder snapshot is named


def _vols(*ids: str) -> list[Volume]:
    return [Volume(id=i, size=1, replication_status="enabled") for i in ids]


def _by_id(updates: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for u in updates:  # Cinder's column is String(255): MySQL refuses a longer value, and the update with it
        assert len(u["updates"].get("replication_driver_data", "")) <= 255, u
    return {u["volume_id"]: u["updates"] for u in updates}


def test_reachable_old_primary_is_unexported_and_read_only(standby: list[str]) -> None:
    node = OldPrimary()
    active, updates, _ = fo.failover_host(_primary(node), _vols("v1", "v2", "bad"), "node2")
    assert active == "node2" and standby == ["v1", "v2"]
    got = _by_id(updates)
    for vid in ("v1", "v2"):
        assert got[vid]["replication_status"] == "failed-over"
        assert json.loads(got[vid]["replication_driver_data"])["old_primary"] == "fenced"
    assert got["bad"] == {"replication_status": "error", "status": "error"}
    assert "volume-v" not in node.files[DEFAULT_EXPORTS_FILE]  # no client reaches the stale copies
    assert sorted(node.set) == [
        ("readonly=on", "tank/volumes/volume-v1"),
        ("readonly=on", "tank/volumes/volume-v2"),
    ]
    assert node.datasets >= {"tank/volumes/volume-v1", "tank/volumes/volume-v2"}  # nothing destroyed


def test_unreachable_old_primary_fails_over_anyway_and_says_so(standby: list[str]) -> None:
    node = OldPrimary(answers=False)
    _, updates, _ = fo.failover_host(_primary(node), _vols("v1"), "node2")
    data = json.loads(_by_id(updates)["v1"]["replication_driver_data"])
    assert _by_id(updates)["v1"]["replication_status"] == "failed-over"
    assert data["old_primary"] == "not fenced: node1 did not answer"
    assert node.set == []


def test_primary_never_set_up_fails_over(standby: list[str]) -> None:
    """cinder-volume restarted while the primary was gone: its driver was never set up."""
    _, updates, _ = fo.failover_host(_primary(None), _vols("v1"), "node2")
    assert _by_id(updates)["v1"]["replication_status"] == "failed-over"
    assert json.loads(_by_id(updates)["v1"]["replication_driver_data"])["old_primary"] == (
        "not fenced: node1 did not answer"
    )
    assert standby == ["v1"]


# --- the old primary fenced when it comes back (the adapter's stats refresh) ----------------------------


def test_old_primary_fenced_once_it_answers_again() -> None:
    from zfs_backend.driver.return_fence import RETRY_S, ReturnFence
    from zfs_backend.errors import HostUnreachable

    node = OldPrimary(answers=False)
    not_fenced = json.dumps({"snapshot": "s", "old_primary": "not fenced: node1 does not answer (no route)"})
    data = {
        "v1": not_fenced,
        "v2": json.dumps({"snapshot": "s", "old_primary": "fenced"}),  # fenced at the failover: left alone
        "v3": json.dumps({"snapshot": "s"}),  # failed over before this existed: left alone
        "v4": "not json",
    }
    recorded: list[tuple[str, str]] = []
    setups: list[bool] = []

    class Primary(ZfsNfsDriver):
        def do_setup(self, context: Any = None) -> None:
            setups.append(node.answers)
            if not node.answers:
                raise HostUnreachable("node1: No route to host")
            self.host = node.host
            self._zfs = Zfs(node.host, dialect=ZFS_FUSE_07)
            self._exports = GaneshaExports(node.host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE)

    def record(vid: str, text: str) -> None:
        recorded.append((vid, text))
        data[vid] = text

    now = [1000.0]
    fence = ReturnFence(
        lambda: Primary(NodeOptions(node="node1", export_address="198.18.0.11")),
        lambda: list(data.items()),
        record,
        lambda vid: Volume(id=vid, size=1),
        clock=lambda: now[0],
    )
    assert fence.run() == [] and setups == [False]  # still gone
    assert fence.run() == [] and setups == [False]  # not tried again before RETRY_S
    node.answers = True
    now[0] += RETRY_S
    assert fence.run() == ["v1"] and setups == [False, True]
    exports = node.files[DEFAULT_EXPORTS_FILE]
    assert "volume-v1" not in exports and "volume-v2" in exports
    assert node.set == [("readonly=on", "tank/volumes/volume-v1")]
    assert recorded == [("v1", json.dumps({"snapshot": "s", "old_primary": "fenced"}))]
    assert fence.run() == [] and setups == [False, True]  # nothing left to fence: the node is not reached
