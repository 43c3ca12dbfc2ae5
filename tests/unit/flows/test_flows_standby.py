"""Removing a standby relationship destroys its replica only when it is provably this relationship's
(the mark its seed left, recorded by :class:`ReplicaMark`); on the in-memory model of a node's datasets."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.flows.env import set_env
from zfs_backend.flows.standby import standby_remove
from zfs_backend.flows.standby_tasks import ReplicaMark
from zfs_backend.replication.wire import RECEIVER_PROP, SOURCE_PROP
from zfs_backend.zfs.names import parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs

SEED = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
OTHER = "act-01M8PC6J46SJJSD1CGAQ7Y88PY"


class NodeZfs(FakeZfs):
    def get(self, name: Any, props: Any) -> dict[str, str]:
        return {"userrefs": "0"}


@dataclass
class Rel:
    detail: dict[str, Any]
    standby_node: str = "node2"
    replication_status: str = "enabled"
    activity_id: str | None = None


@dataclass
class Vol:
    name: str = "vol1"
    node: str = "node1"

    def model(self) -> Any:
        return self


@dataclass
class Driver:
    zfs: NodeZfs
    removed: list[str] = field(default_factory=list)

    def dataset_of(self, model: Any) -> Any:
        return parse_dataset("tank/vol1")

    @property
    def exports(self) -> Any:
        d = self

        class Exports:
            def remove(self, ds: Any) -> None:
                d.removed.append(str(ds))

        return Exports()


class Service:
    def __init__(self, rel: Rel | None) -> None:
        self.rel, self.dropped, self.recorded = rel, False, None

    def replication(self, volume: str) -> Rel | None:
        return self.rel

    def get_volume(self, volume: str) -> Vol:
        return Vol()

    def drop_replication(self, volume: str) -> None:
        self.dropped = True


class Env:
    def __init__(self, rel: Rel | None) -> None:
        self.svc = Service(rel)
        self.drivers = {"node1": Driver(NodeZfs()), "node2": Driver(NodeZfs())}
        self.drivers["node1"].zfs.make("tank/vol1", "zfs_backend-standby-1", guids=[11])

    def service(self) -> Service:
        return self.svc

    def driver(self, node: str) -> Driver:
        return self.drivers[node]

    def agent(self, node: str) -> Any:  # standby_remove revokes the grants there (test_flows_standby_grants)
        return type("A", (), {"revoke_grant": lambda self, *a, **k: 0})()


@pytest.fixture
def env_of() -> Any:
    olds: list[Any] = []

    def make(rel: Rel | None) -> Env:
        e = Env(rel)
        olds.append(set_env(e))  # type: ignore[arg-type]
        return e

    yield make
    if olds:
        set_env(olds[0])


def _replica(e: Env, mark: str | None, source: str = "node1:tank/vol1") -> NodeZfs:
    z = e.drivers["node2"].zfs
    props: dict[str, tuple[str, str]] = {SOURCE_PROP: (source, "local")}
    if mark is not None:
        props[RECEIVER_PROP] = (mark, "local")
    z.make("tank/vol1", "zfs_backend-standby-1", guids=[11], **props)
    return z


def test_the_relationships_own_replica_is_destroyed(env_of: Any) -> None:
    e = env_of(Rel({"replica_mark": SEED}))
    _replica(e, SEED)
    out = standby_remove("vol1")
    assert out["destroyed"] == "node2:tank/vol1" and "tank/vol1" not in e.drivers["node2"].zfs.ds
    assert e.svc.dropped


@pytest.mark.parametrize(
    ("recorded", "mark", "why"),
    [
        (SEED, OTHER, f"it carries the mark {OTHER}"),  # another relationship's replica
        (None, SEED, "the relationship's is unknown"),  # a record from before marks were recorded
        (SEED, None, "it carries no mark"),  # someone's dataset by that name
    ],
)
def test_anything_else_is_left_and_said_so(
    env_of: Any, recorded: str | None, mark: str | None, why: str
) -> None:
    e = env_of(Rel({"replica_mark": recorded} if recorded else {}))
    z = _replica(e, mark)
    out = standby_remove("vol1")
    assert out["destroyed"] is None and "left alone" in out["left"] and why in out["left"]
    assert "tank/vol1" in z.ds and not [c for c in z.calls if c[0] == "destroy"]
    assert e.drivers["node2"].removed == []  # not even unexported
    assert e.svc.dropped  # the relationship itself ends


def test_a_controlled_failovers_old_primary_is_the_volumes_own(env_of: Any) -> None:
    e = env_of(Rel({"forced": False}))
    _replica(e, None)
    assert standby_remove("vol1")["destroyed"] == "node2:tank/vol1"


def _mark(e: Env) -> str | None:
    return ReplicaMark("m").execute("vol1", "node1", "node2", "node1:tank/vol1@zfs_backend-standby-1")


def test_the_mark_is_recorded_only_for_a_replica_of_this_volume_holding_the_seed(env_of: Any) -> None:
    e = env_of(None)
    _replica(e, SEED)
    assert _mark(e) == SEED
    _replica(e, SEED, source="node3:tank/elsewhere")  # another volume's replica
    assert _mark(e) is None
    _replica(e, None)
    assert _mark(e) is None
    z = _replica(e, SEED)
    z.ds["tank/vol1"].snapshots[0] = replace(z.ds["tank/vol1"].snapshots[0], guid=99)  # not the seed
    assert _mark(e) is None
    z = _replica(e, SEED)
    z.ds["tank/vol1"].snapshots.insert(0, replace(z.ds["tank/vol1"].snapshots[0], guid=5, createtxg=1))
    assert _mark(e) is None  # an older replica the seed only incremented: not provably this one's


# --- the create flow's reverts: each destroys only the snapshot it made ---------------------------------


class Act:
    def __init__(self, newest: str) -> None:
        self.state, self.cancelled, self.newest = "running", False, newest

    def cancel(self) -> None:
        self.state, self.cancelled = "cancelled", True

    def record(self) -> Any:
        return type("R", (), {"result": {"newest": {"snapshot": self.newest}}})()


def test_a_seed_snapshots_revert_destroys_only_the_snapshot_it_made(env_of: Any) -> None:
    from zfs_backend.flows.standby_tasks import SeedSnapshot

    e = env_of(None)
    z = e.drivers["node1"].zfs
    z.add_snapshot("tank/vol1", "zfs_backend-standby-2", 12)
    SeedSnapshot("s").revert(
        "vol1", "node1", ("node1:tank/vol1@zfs_backend-standby-2", "zfs_backend-standby-2")
    )
    assert z.guids("tank/vol1") == [11]
    SeedSnapshot("s").revert("vol1", "node1", None)  # failed before it made one: nothing
    assert z.guids("tank/vol1") == [11]


@pytest.mark.parametrize(
    ("newest", "left"),
    [
        ("zfs_backend-standby-2", [11]),  # the sync's own last snapshot goes
        ("zfs_backend-standby-1", [11, 12]),  # the base the task was given stays (its maker undoes it)
        ("users", [11, 12]),  # not a standby snapshot: never
    ],
)
def test_a_syncs_revert_cancels_it_and_destroys_only_its_own_last_snapshot(
    env_of: Any, newest: str, left: list[int]
) -> None:
    from zfs_backend.flows.standby_tasks import StartSync

    e = env_of(None)
    z = e.drivers["node1"].zfs
    z.add_snapshot("tank/vol1", newest if newest != "zfs_backend-standby-1" else "other", 12)
    act = Act(newest)
    e.agent = lambda node: type("A", (), {"get": lambda self, i: act})()
    StartSync("s").revert("vol1", "node1", "node2", "zfs_backend-standby-1", "act-01M8PC6J46SJJSD1CGAQ7Y88PX")
    assert act.cancelled and z.guids("tank/vol1") == left
