"""Issue 22: the migration flow's tasks (``zfs_backend.flows.migrate``) resumed after their controller died:
the start adopts the running twin instead of starting a second activity, the move of a migration whose
switch already happened only makes sure of the destination's export (with the grants the start saved),
and a revert cancels the activity and exports the source again with those grants. On fake drivers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.driver.exports_format import Attachment
from zfs_backend.flows import migrate as mf
from zfs_backend.flows.env import set_env
from zfs_backend.replication.wire import RECEIVER_PROP

ACT = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
DS = "tank/volumes/volume-v1"
VOLUME = {"id": "v1", "size": 1}
ATT = [["att-1", "198.18.0.9"]]


@dataclass
class Driver:
    node: str
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)
    exported: dict[str, tuple[Attachment, ...]] = field(default_factory=dict)

    @property
    def options(self) -> Any:
        return SimpleNamespace(node=self.node, parent="tank/volumes")

    @property
    def zfs(self) -> Any:
        d = self
        return SimpleNamespace(
            exists=lambda ds: str(ds) in d.datasets, get=lambda ds, props: d.datasets[str(ds)]
        )

    @property
    def exports(self) -> Any:
        d = self
        return SimpleNamespace(
            get=lambda ds: (
                SimpleNamespace(attachments=d.exported[str(ds)], clients=("198.18.0.9",))
                if str(ds) in d.exported
                else None
            ),
            remove=lambda ds: d.exported.pop(str(ds), None),
        )

    def dataset_of(self, volume: Any) -> str:
        return DS

    def mountpoint(self, ds: Any) -> str:
        return f"/{ds}"

    def location(self, ds: Any) -> str:
        return f"{self.node}:/{ds}"

    def export(self, ds: Any, clients: Any, attachments: Any) -> None:
        assert str(ds) not in self.exported, "exported twice"
        self.exported[str(ds)] = tuple(attachments)


class Activity:
    def __init__(self, state: str) -> None:
        self.id, self.kind, self.state, self.cancelled = ACT, "migrate", state, 0
        self.params = {"dataset": DS}

    def record(self) -> Any:
        return self

    def cancel(self) -> None:
        self.cancelled += 1
        self.state = "cancelled"

    def wait(self, timeout: float | None = None) -> str:
        return self.state

    def wait_record(self, timeout: float) -> Any:
        return SimpleNamespace(state=self.state, result={}, error="it failed", status=1)


@pytest.fixture
def nodes() -> Iterator[dict[str, Any]]:
    act = Activity("suspended")
    drivers = {"node1": Driver("node1"), "node2": Driver("node2")}
    agent = SimpleNamespace(list=lambda: [act], get=lambda i: act)
    old = set_env(SimpleNamespace(driver=drivers.__getitem__, agent=lambda n: agent))  # type: ignore[arg-type]
    yield {"act": act, **drivers}
    set_env(old)


def test_a_restarted_start_adopts_the_running_twin(nodes: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setattr(mf, "start", lambda *a, **k: pytest.fail("a second migration was started"))
    nodes["node1"].datasets[DS] = {}
    nodes["node1"].exported[DS] = (Attachment(*ATT[0]),)
    got = mf.StartMigration("start").execute(VOLUME, "node1", None, "node2", None, {})
    assert got == {"activity": ACT, "node": "node1", "export": ATT}


def test_a_resumed_move_after_the_switch_only_makes_sure_of_the_export(nodes: dict[str, Any]) -> None:
    nodes["act"].state = "succeeded"
    nodes["node2"].datasets[DS] = {RECEIVER_PROP: ACT}  # the source copy is gone: the switch happened
    mig = {"activity": ACT, "node": "node1", "export": ATT}
    update = mf.MoveVolume("move").execute(VOLUME, "node1", None, "node2", None, mig)
    assert update["provider_location"] == f"node2:/{DS}"
    assert nodes["node2"].exported == {DS: (Attachment(*ATT[0]),)}
    update = mf.MoveVolume("move").execute(VOLUME, "node1", None, "node2", None, mig)  # once more: no twin
    assert nodes["node2"].exported == {DS: (Attachment(*ATT[0]),)}


def test_a_dataset_of_another_migration_is_not_taken_for_a_switch(nodes: dict[str, Any]) -> None:
    nodes["act"].state = "failed"
    nodes["node2"].datasets[DS] = {RECEIVER_PROP: "act-someone-else"}
    mig = {"activity": ACT, "node": "node1", "export": ATT}
    with pytest.raises(mf.MigrationFailed):
        mf.MoveVolume("move").execute(VOLUME, "node1", None, "node2", None, mig)
    assert nodes["node2"].exported == {}


def test_revert_cancels_and_exports_the_source_with_its_saved_grants(nodes: dict[str, Any]) -> None:
    nodes["node1"].datasets[DS] = {}  # unexported at the hold by the controller that died
    mig = {"activity": ACT, "node": "node1", "export": ATT}
    mf.StartMigration("start").revert(VOLUME, "node1", None, result=mig)
    assert nodes["act"].cancelled == 1
    assert nodes["node1"].exported == {DS: (Attachment(*ATT[0]),)}
