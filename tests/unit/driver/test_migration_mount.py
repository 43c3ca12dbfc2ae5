"""The migration's switch on OpenZFS, where a received copy is unmounted (peer-exec's ``recv -u``): the
destination's copy is mounted before it is exported (the export's volume-file checks open its directory;
on the Vagrant tier's VMs ``volume migrate`` failed "cannot open the volume directory"). On the in-memory
model of a node's datasets."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from zfs_backend.driver.migration import _switch
from zfs_backend.driver.models import Volume
from zfs_backend.replication.wire import RECEIVER_PROP
from zfs_backend.zfs.names import AnyName, SnapshotName, parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs

ACT = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
DS = "tank/volumes/volume-v1"
SNAP = f"migrate-{ACT}-0"


class PropZfs(FakeZfs):
    def get(self, name: Any, props: Any) -> dict[str, str]:
        if isinstance(name, SnapshotName):
            return super().get(name, props)
        return {p: self.get_with_source(name, p)[0] for p in props}

    def get_int(self, name: AnyName, prop: str) -> int | None:
        if prop == "guid" and isinstance(name, SnapshotName):
            return next(s.guid for s in self._get(name.dataset).snapshots if s.name == name)
        return super().get_int(name, prop)


@dataclass
class Driver:
    node: str
    zfs: PropZfs = field(default_factory=PropZfs)
    exported_mounted: list[bool] = field(default_factory=list)

    @property
    def options(self) -> Any:
        return SimpleNamespace(
            node=self.node, thin=True, destroy_deadline=1.0, parent_dataset=parse_dataset("tank/volumes")
        )

    def dataset_of(self, volume: Any) -> Any:
        return parse_dataset(DS)

    def destroy_dataset(self, ds: Any) -> None:
        self.zfs.destroy(ds, recursive=True)

    def export(self, ds: Any, clients: Any = (), attachments: Any = ()) -> None:
        self.exported_mounted.append(self.zfs.is_mounted(ds))

    def location(self, ds: Any) -> str:
        return f"{self.node}:/{ds}"

    @property
    def exports(self) -> Any:
        return SimpleNamespace(remove=lambda ds: None)


def test_the_destinations_unmounted_copy_is_mounted_before_its_export() -> None:
    src, dst = Driver("node1"), Driver("node2")
    src.zfs.make(DS, SNAP, guids=[7])
    dst.zfs.make(DS, SNAP, guids=[7], **{RECEIVER_PROP: (ACT, "local"), "readonly": ("on", "local")})
    dst.zfs.ds[DS].mounted = False  # received with `recv -u`, as on OpenZFS
    sw = SimpleNamespace(
        src=src,
        dst=dst,
        volume=Volume(id="v1", size=1),
        act=SimpleNamespace(id=ACT),
        entry=SimpleNamespace(clients=("198.18.0.1",), attachments=()),
        src_ds=parse_dataset(DS),
    )
    res = {"destination": f"node2:{DS}", "snapshots": [f"{DS}@{SNAP}"], "final_guid": 7, "quiesced_at": 1.0}
    rec = SimpleNamespace(state="succeeded", result=res, error=None)
    out = _switch(sw, rec)  # type: ignore[arg-type]
    assert dst.exported_mounted == [True]
    assert ("mount", DS) in dst.zfs.calls
    assert out["provider_location"] == f"node2:/{DS}"
    assert not src.zfs.exists(parse_dataset(DS))
