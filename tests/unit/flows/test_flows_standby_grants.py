"""The hot-standby flows' grants, on fake agents that record every call and a real volume service on fake
drivers: a sync starts under the standby's grant (increment, prune, no expiry); a twin adopted or a start
reverted leaves no grant behind; stopping a sync for a failover revokes its grant on the old standby;
``standby remove`` (the CLI's ``standby remove``) revokes the relationship's, best effort."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import load_settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import AgentUnavailable
from zfs_backend.flows.env import set_env
from zfs_backend.flows.standby import standby_remove
from zfs_backend.flows.standby_tasks import StartSync, StopSync
from zfs_backend.replication.wire import RECEIVER_PROP

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_agent_nodes import GRANT, FakeNodes, FakeZfs, fake_driver

VID = "0e4bd1a2-95f7-4c1e-9d49-3f8f2a1c7b01"
DS = f"tank/volumes/volume-{VID}"
BASE = "zfs_backend-standby-1000"


class Env:
    """What the flows' tasks reach (``flows.env``): the service, a driver and an agent per node."""

    def __init__(self, home: Path) -> None:
        self.settings = load_settings({"ZFS_BACKEND_HOME": str(home)})
        self.zfs = {n: FakeZfs() for n in ("node1", "node2")}
        self.drivers = {n: fake_driver(n, z) for n, z in self.zfs.items()}
        self.svc = VolumeService(self.settings, driver_for=self.drivers.__getitem__)
        self.nodes = FakeNodes("node1", "node2")
        now = time.time()
        with self.svc.transaction() as db:
            db.execute(
                "INSERT INTO volumes VALUES (?, 'vol1', 'node1', 1, 'in-use', NULL, NULL, NULL, ?, ?)",
                (VID, now, now),
            )

    def service(self) -> VolumeService:
        return self.svc

    def driver(self, node: str) -> Any:
        return self.drivers[node]

    def agent(self, node: str) -> Any:
        return self.nodes(node)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    old = set_env(e)  # type: ignore[arg-type]
    yield e
    set_env(old)


def _sync(node: str = "node1", to: str = "node2") -> str:
    return StartSync("start-sync").execute("vol1", node, to, BASE, 5.0, 0.0)


def test_a_sync_starts_under_the_standbys_grant(fake: Env) -> None:
    act = _sync()
    assert fake.nodes.ops() == [("node2", "grant.add"), ("node1", "start")]
    [(_, asked)] = fake.nodes.args("grant.add")
    assert asked == {
        "peer": "node1",
        "allow": ["increment", "prune"],
        "dataset": DS,
        "volume": None,
        "recursive": False,
        "ttl_s": 0.0,
    }
    assert fake.nodes["node1"].get(act).params["grant"] == GRANT.format(1)


def test_the_reverse_sync_is_granted_by_the_old_primary(fake: Env) -> None:
    _sync("node2", "node1")  # a failover's reverse-sync: node2 now writes into node1
    assert fake.nodes.ops() == [("node1", "grant.add"), ("node2", "start")]
    assert fake.nodes.args("grant.add")[0][1]["peer"] == "node2"


def test_an_adopted_twin_leaves_no_second_grant(fake: Env) -> None:
    first = _sync()
    from zfs_backend.errors import AlreadyRunning

    fake.nodes["node1"].start_error = AlreadyRunning("a sync of this dataset runs")
    assert _sync() == first
    assert list(fake.nodes.live) == [GRANT.format(1)]  # the twin's own; the second one revoked


def test_a_refused_grant_starts_no_sync(fake: Env) -> None:
    fake.nodes["node2"].grant_error = AgentUnavailable("node2: no answer")
    with pytest.raises(AgentUnavailable, match=r"^node2: no grant for node1"):
        _sync()
    assert fake.nodes.ops() == [("node2", "grant.add")]


def test_revert_cancels_the_sync_and_revokes_its_grant(fake: Env) -> None:
    act = _sync()
    StartSync("start-sync").revert("vol1", "node1", "node2", BASE, act)
    assert fake.nodes["node1"].get(act).state == "cancelled"
    assert fake.nodes.args("grant.revoke") == [("node2", {"grant": None, "dataset": DS, "peer": "node1"})]
    assert fake.nodes.live == {}


def test_stopping_a_sync_for_a_failover_revokes_its_grant_on_the_old_standby(fake: Env) -> None:
    act = _sync()
    StopSync("stop-sync").execute("node1", "node2", DS, act)
    assert fake.nodes["node1"].get(act).state == "cancelled"
    assert fake.nodes.args("grant.revoke") == [("node2", {"grant": None, "dataset": DS, "peer": "node1"})]
    assert fake.nodes.live == {}


def test_a_standby_that_does_not_answer_never_fails_the_failover(
    fake: Env, caplog: pytest.LogCaptureFixture
) -> None:
    act = _sync()
    fake.nodes["node2"].revoke_error = AgentUnavailable("node2: no answer")
    StopSync("stop-sync").execute("node1", "node2", DS, act)  # no exception
    assert "not revoked" in caplog.text


SEED_MARK = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"  # the seed's mark, recorded by ReplicaMark


def _relationship(fake: Env, standby: str, **fields: Any) -> None:
    fake.svc.set_replication("vol1", "enabled", standby_node=standby, **{"activity_id": None, **fields})


def test_standby_remove_revokes_the_relationships_grants(fake: Env) -> None:
    act = _sync()
    _relationship(fake, "node2", activity_id=act, detail={"replica_mark": SEED_MARK})
    fake.zfs["node2"].snaps[DS] = []
    fake.zfs["node2"].props[(DS, RECEIVER_PROP)] = SEED_MARK
    out = standby_remove("vol1")
    assert out["revoked"] == 1 and out["destroyed"] == f"node2:{DS}"
    assert fake.nodes.args("grant.revoke") == [("node2", {"grant": None, "dataset": DS, "peer": "node1"})]
    assert fake.nodes.live == {} and fake.svc.replication("vol1") is None


def test_standby_remove_after_a_controlled_failover_revokes_on_the_old_primary(fake: Env) -> None:
    fake.svc.relocate("vol1", "node2", None)  # the volume moved to node2; node1 is its standby now
    act = _sync("node2", "node1")
    _relationship(fake, "node1", activity_id=act, detail={"forced": False})
    fake.zfs["node1"].snaps[DS] = []
    standby_remove("vol1")
    assert fake.nodes.args("grant.revoke") == [("node1", {"grant": None, "dataset": DS, "peer": "node2"})]
    assert fake.nodes.live == {}


def test_standby_remove_with_the_standbys_agent_down_still_removes(
    fake: Env, caplog: pytest.LogCaptureFixture
) -> None:
    _relationship(fake, "node2", detail={"replica_mark": SEED_MARK})
    fake.zfs["node2"].snaps[DS] = []
    fake.zfs["node2"].props[(DS, RECEIVER_PROP)] = SEED_MARK
    fake.nodes.unreachable.add("node2")
    out = standby_remove("vol1")
    assert out["revoked"] is None and out["destroyed"] == f"node2:{DS}"
    assert f"node2: the grants for {DS} from node1 not revoked" in caplog.text
