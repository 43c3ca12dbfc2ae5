"""The migrate kind's params (closed, validated), the driver's reading of Cinder's host, metrics from a
manager's activities, and a pipeline of several streams (n adds up, n == m at the end)."""

from __future__ import annotations

import sys

import pytest

from zfs_backend.activity import ActivityContext, ActivityStore, new_activity_id
from zfs_backend.activity.core import register_kind
from zfs_backend.activity.pipeline import Endpoint, PipelineActivity
from zfs_backend.driver.migration import target_node, target_parent
from zfs_backend.errors import InvalidName, UsageError
from zfs_backend.hosts import LocalHost
from zfs_backend.replication.migrate_request import MigrateRequest

GOOD = {
    "dataset": "tank/volumes/volume-a",
    "destination_node": "node2",
    "destination": "tank/volumes/volume-a",
}


def test_migrate_params_closed_and_validated() -> None:
    req = MigrateRequest.from_params(GOOD)
    assert MigrateRequest.from_params(req.to_params()) == req
    both = MigrateRequest.from_params(
        {**GOOD, "hold_at": "catchup+quiesce"}
    )  # an operator's, the controller's
    assert both.hold_at == "catchup+quiesce"
    for bad in (
        {**GOOD, "ssh_config": "/tmp/x"},
        {**GOOD, "hold_at": "never"},
        {**GOOD, "hold_at": "quiesce+catchup"},
        {**GOOD, "catchup_below": -1},
        {**GOOD, "max_rounds": 0},
        {k: v for k, v in GOOD.items() if k != "destination"},
    ):
        with pytest.raises(UsageError):
            MigrateRequest.from_params(bad)
    with pytest.raises(InvalidName):
        MigrateRequest.from_params({**GOOD, "destination": "tank/../x"})
    with pytest.raises(InvalidName):
        MigrateRequest.from_params({**GOOD, "destination_node": "-oProxyCommand=x"})


def test_target_node_from_cinders_host() -> None:
    nodes = {"node1": "198.18.0.11", "node2": "198.18.0.12"}
    host = {"host": "n2@zfs#tank", "capabilities": {"location_info": "ZfsNfsDriver:198.18.0.12:tank/volumes"}}
    assert target_node(host, nodes) == "node2"
    assert target_node({"capabilities": {"location_info": "LVMVolumeDriver:x:y"}}, nodes) is None
    assert target_node({"capabilities": {"location_info": "ZfsNfsDriver:10.0.0.9:tank"}}, nodes) is None
    assert target_node("node1", nodes) == "node1" and target_node("node9", nodes) is None


def test_target_parent_is_the_destination_backends_own() -> None:
    """A Cinder backend's parent dataset is its own option (``tank/cinder-volumes``), not the
    inventory's: the volume lands where the destination backend looks for it."""
    host = {"capabilities": {"location_info": "ZfsNfsDriver:198.18.0.12:tank/cinder-volumes"}}
    assert target_parent(host) == "tank/cinder-volumes"
    assert target_parent({"capabilities": {"location_info": "LVMVolumeDriver:x:y"}}) is None
    assert target_parent("node2") is None


class TwoStreams(PipelineActivity):
    KIND = "test-two-streams"

    def estimate_total(self) -> int:
        return 1000

    def build_producer(self, offset: int) -> Endpoint:
        n = 1000 if not self.kind_state.get("second") else 3000
        return Endpoint(LocalHost(), [sys.executable, "-c", f"import sys; sys.stdout.write('x' * {n})"])

    def build_consumer(self, offset: int) -> Endpoint:
        return Endpoint(LocalHost(), ["cat"])

    def next_stream(self) -> bool:
        if self.kind_state.get("second"):
            return False
        self.kind_state["second"] = True
        self.revise_total(self.streamed + 3000)
        return True


register_kind(TwoStreams.KIND, TwoStreams, replace=True)


def test_several_streams_add_up(tmp_path) -> None:
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="test")
    rec = TwoStreams.new_record(new_activity_id(), {}, ctx)
    act = TwoStreams(rec, ctx)
    act.prepare()
    act.persist_new()
    act.start()
    assert act.wait(60) == "succeeded", act.error
    assert act.progress == (4000, 4000)
    store.close()


def test_metrics_collector_counts_kinds_and_states(tmp_path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from zfs_backend.agent.manager import ActivityManager
    from zfs_backend.agent.metrics import ActivityCollector

    store = ActivityStore(tmp_path / "a.db")
    mgr = ActivityManager(store, node="n1")
    ctx = ActivityContext(store=store, node="n1")
    rec = TwoStreams.new_record(new_activity_id(), {}, ctx)
    act = TwoStreams(rec, ctx)
    act.prepare()
    act.persist_new()
    act.start()
    act.wait(60)
    reg = CollectorRegistry()
    reg.register(ActivityCollector(mgr))  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    assert 'zfs_backend_activities{kind="test-two-streams",state="succeeded"} 1.0' in text
    assert 'zfs_backend_activity_bytes_total{kind="test-two-streams"} 4000.0' in text
    assert 'zfs_backend_agent_up{node="n1"} 1.0' in text
    store.close()
