"""An in-memory model of the few zfs verbs the receiver uses, for unit tests without a node.

Datasets hold snapshots (GUIDs, createtxg), properties with their source, a "head" state ("clean",
"noisy" or "changed", which the injected change check reports), and an optional resume token. Every
changing verb is recorded in ``calls`` so a test can say what was (not) touched.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from zfs_backend.errors import DatasetBusy, DatasetNotFound
from zfs_backend.zfs.changes import HeadChanges
from zfs_backend.zfs.dialect import ZFS_FUSE_07, Dialect
from zfs_backend.zfs.models import Dataset, Snapshot
from zfs_backend.zfs.names import AnyName, DatasetName, SnapshotName, parse_dataset

_txg = itertools.count(100)


@dataclass
class FakeDataset:
    snapshots: list[Snapshot] = field(default_factory=list)
    props: dict[str, tuple[str, str]] = field(default_factory=dict)  # prop -> (value, source)
    head: str = "clean"
    token: str | None = None
    available: int = 1 << 30
    mounted: bool = True
    busy: bool = False  # a file open (an NFS export): unmount refuses


class FakeHostName:
    name = "node2"


class FakeZfs:
    def __init__(self, dialect: Dialect = ZFS_FUSE_07) -> None:
        self.dialect = dialect
        self.host = FakeHostName()
        self.ds: dict[str, FakeDataset] = {"tank": FakeDataset()}
        self.calls: list[tuple[Any, ...]] = []
        self.held: dict[str, set[str]] = {}  # snapshot -> hold tags

    # -- building a state
    def make(self, name: str, *snaps: str, guids: list[int] | None = None, **props: tuple[str, str]) -> None:
        d = FakeDataset(props=dict(props))
        for i, s in enumerate(snaps):
            g = guids[i] if guids else abs(hash((name, s))) % 10**12
            d.snapshots.append(
                Snapshot(SnapshotName(parse_dataset(name), s), g, next(_txg), 0, 1 << 20, 1000)
            )
        self.ds[name] = d

    def add_snapshot(self, name: str, snap: str, guid: int) -> None:
        self.ds[name].snapshots.append(
            Snapshot(SnapshotName(parse_dataset(name), snap), guid, next(_txg), 0, 1 << 20, 1000)
        )

    def guids(self, name: str) -> list[int]:
        return [s.guid for s in self.ds[name].snapshots]

    def changing(self) -> list[tuple[Any, ...]]:
        return [
            c
            for c in self.calls
            if (c[0] != "set" or c[2] != "readonly") and c[0] not in ("mount", "unmount")
        ]

    # -- the verbs
    def _get(self, name: AnyName) -> FakeDataset:
        d = self.ds.get(str(name))
        if d is None:
            raise DatasetNotFound(f"node2: dataset {name} does not exist")
        return d

    def exists(self, name: AnyName) -> bool:
        if isinstance(name, SnapshotName):
            return str(name.dataset) in self.ds and any(
                s.name == name for s in self.ds[str(name.dataset)].snapshots
            )
        return str(name) in self.ds

    def list_datasets(self, root: DatasetName | None = None, recursive: bool = True) -> list[Dataset]:
        out = []
        for n, d in sorted(self.ds.items()):
            if root is not None and not (n == str(root) or (recursive and n.startswith(f"{root}/"))):
                continue
            ref = (d.snapshots[-1].referenced if d.snapshots else 0) + (4096 if d.head != "clean" else 0)
            out.append(
                Dataset(parse_dataset(n), "filesystem", 1, 1, ref, ref, d.available, mounted=d.mounted)
            )
        return out

    def list_snapshots(self, dataset: DatasetName) -> list[Snapshot]:
        return list(self._get(dataset).snapshots)

    def list_snapshots_of(self, datasets: list[DatasetName]) -> dict[DatasetName, list[Snapshot]]:
        self.calls.append(("list_snapshots_of", ",".join(map(str, datasets))))
        return {d: list(self._get(d).snapshots) for d in datasets}

    def get_with_source(self, name: AnyName, prop: str) -> tuple[str, str]:
        default = ("off", "default") if prop == "readonly" else ("-", "-")
        return self._get(name).props.get(prop, default)

    def get(self, name: AnyName, props: list[str]) -> dict[str, str]:
        """Raw values, as ``zfs get -Hp``: a snapshot has none set here (``defer_destroy`` off)."""
        if isinstance(name, SnapshotName):
            if not self.exists(name):
                raise DatasetNotFound(f"node2: dataset {name} does not exist")
            return {p: "off" if p == "defer_destroy" else "-" for p in props}
        return {p: self.get_with_source(name, p)[0] for p in props}

    def get_int(self, name: AnyName, prop: str) -> int | None:
        return self._get(name).available if prop == "available" else None

    def set(self, name: AnyName, prop: str, value: str) -> None:
        self.calls.append(("set", str(name), prop, value))
        self._get(name).props[prop] = (value, "local")

    def inherit(self, name: DatasetName, prop: str) -> None:
        self.calls.append(("inherit", str(name), prop))
        self._get(name).props.pop(prop, None)

    def rollback(self, snapshot: SnapshotName, destroy_newer: bool = False) -> None:
        self.calls.append(("rollback", str(snapshot), destroy_newer))
        d = self._get(snapshot.dataset)
        i = next(i for i, s in enumerate(d.snapshots) if s.name == snapshot)
        if i != len(d.snapshots) - 1 and not destroy_newer:
            raise AssertionError("rollback without -r past newer snapshots")
        d.snapshots = d.snapshots[: i + 1]
        d.head = "clean"

    def destroy(
        self,
        name: AnyName,
        recursive: bool = False,
        deadline: float = 10.0,
        *,
        missing_ok: bool = False,
        dependents: bool = False,
    ) -> None:
        self.calls.append(("destroy", str(name), recursive))
        if self.held.get(str(name)):
            raise AssertionError(f"destroying held {name}")
        if isinstance(name, SnapshotName):
            d = self._get(name.dataset)
            d.snapshots = [s for s in d.snapshots if s.name != name]
            return
        for n in [n for n in self.ds if n == str(name) or n.startswith(f"{name}/")]:
            del self.ds[n]

    def hold(self, snapshot: SnapshotName, tag: str, recursive: bool = False) -> None:
        self.calls.append(("hold", str(snapshot), tag))
        self.held.setdefault(str(snapshot), set()).add(tag)

    def release(self, snapshot: SnapshotName, tag: str, recursive: bool = False) -> None:
        self.calls.append(("release", str(snapshot), tag))
        self.held.get(str(snapshot), set()).discard(tag)

    def is_mounted(self, name: DatasetName) -> bool:
        return self._get(name).mounted

    def unmount(self, name: DatasetName, force: bool = False, deadline: float = 0.0) -> None:
        d = self._get(name)
        if d.busy:
            raise DatasetBusy(f"node2: cannot unmount '{name}': Device or resource busy")
        self.calls.append(("unmount", str(name)))
        for n, child in self.ds.items():  # its children's mounts go with it
            if n == str(name) or n.startswith(f"{name}/"):
                child.mounted = False

    def mount(self, name: DatasetName) -> None:
        self.calls.append(("mount", str(name)))
        self._get(name).mounted = True

    def resume_token(self, name: DatasetName) -> str | None:
        return self._get(name).token

    def abort_resumable_receive(self, name: DatasetName) -> None:
        self.calls.append(("receive -A", str(name)))
        self._get(name).token = None


def changes(zfs: Any, dataset: DatasetName, newest: Snapshot) -> HeadChanges:
    head = zfs.ds[str(dataset)].head
    if head == "changed":
        return HeadChanges(True, False, "1 data record(s), 4096 bytes", 4096)
    if head == "noisy":
        return HeadChanges(False, True, "metadata only (atime)")
    return HeadChanges(False, False, "unchanged")


def bytes_since(zfs: Any, dataset: DatasetName, base: Snapshot) -> int:
    return 12345
