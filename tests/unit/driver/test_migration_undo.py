"""A migration undone (cancel, failure) destroys the destination's copy only when it carries the
activity's mark, and on the source only the snapshots the activity reported making; on the in-memory
model of a node's datasets."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zfs_backend.driver.exports_format import Attachment
from zfs_backend.driver.migration import _undo
from zfs_backend.replication.wire import RECEIVER_PROP
from zfs_backend.zfs.names import parse_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))  # --import-mode=importlib
from fake_zfs import FakeZfs

HOLDER = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
DS = "tank/volumes/volume-v1"


class PropZfs(FakeZfs):
    def get(self, name: Any, props: Any) -> dict[str, str]:
        return {p: self.get_with_source(name, p)[0] for p in props}


@dataclass
class Driver:
    zfs: PropZfs = field(default_factory=PropZfs)
    unexported: list[str] = field(default_factory=list)
    exported: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def dataset_of(self, volume: Any) -> Any:
        return parse_dataset(DS)

    def destroy_dataset(self, ds: Any) -> None:
        self.zfs.destroy(ds, recursive=True)

    def export(self, ds: Any, clients: tuple[str, ...], attachments: tuple[Any, ...] = ()) -> None:
        self.exported.append((str(ds), clients + attachments))

    @property
    def exports(self) -> Any:
        d = self

        class Exports:
            def remove(self, ds: Any) -> None:
                d.unexported.append(str(ds))

        return Exports()


def _drivers(mark: str) -> tuple[Driver, Driver]:
    src, dst = Driver(), Driver()
    src.zfs.make(DS, "users", f"migrate-{HOLDER}-0", guids=[1, 2])
    dst.zfs.make(DS, f"migrate-{HOLDER}-0", guids=[2], **{RECEIVER_PROP: (mark, "local")})
    return src, dst


def test_an_undone_migration_removes_its_own_copy_and_snapshots() -> None:
    src, dst = _drivers(HOLDER)
    res = {"snapshots": [f"{DS}@migrate-{HOLDER}-0"], "readonly_was": "inherit"}
    att = (Attachment("client-198.18.0.1", "198.18.0.1"),)
    _undo(src, dst, Any, HOLDER, res, True, att)  # type: ignore[arg-type]
    assert DS not in dst.zfs.ds and dst.unexported == [DS]
    assert src.zfs.guids(DS) == [1] and src.exported == [(DS, att)]


def test_a_copy_without_the_activitys_mark_is_left() -> None:
    src, dst = _drivers("act-01M8PC6J46SJJSD1CGAQ7Y88PY")  # someone else's dataset by that name
    _undo(src, dst, Any, HOLDER, {"snapshots": []}, False, None)  # type: ignore[arg-type]
    assert DS in dst.zfs.ds and not [c for c in dst.zfs.calls if c[0] == "destroy"]
    assert src.zfs.guids(DS) == [1, 2]  # nothing the activity did not report making
