"""The lab's node processes and namespace files (``lab/node.py``), without namespaces."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from zfs_backend.errors import LabError
from zfs_backend.lab import node as N


def test_a_namespace_file_that_cannot_be_removed_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lab down`` found a node's namespace file still busy once (two mounts stacked on it after an
    interrupted ``lab up``): every mount on it is taken off, and a file that still cannot go is a
    ``LabError`` naming it, not an ``OSError`` traceback."""
    layout = SimpleNamespace(ns_dir=tmp_path)
    nodes = SimpleNamespace(name="node1")
    mounts = {tmp_path / "node1.mnt": 2}
    umounts: list[list[str]] = []

    def is_mountpoint(p: Path) -> bool:
        return mounts.get(p, 0) > 0

    def run(argv: list[str], **_kw: object) -> None:
        umounts.append(argv)
        mounts[Path(argv[-1])] -= 1

    monkeypatch.setattr(N, "_is_mountpoint", is_mountpoint)
    monkeypatch.setattr(N.subprocess, "run", run)
    (tmp_path / "node1.mnt").touch()
    (tmp_path / "node1.uts").mkdir()  # cannot be unlinked: stands for the busy file
    with pytest.raises(LabError, match=r"^node1: cannot remove .*node1\.uts: "):
        N.teardown_ns_files(layout, nodes)  # type: ignore[arg-type]
    assert len(umounts) == 2 and not (tmp_path / "node1.mnt").exists()
