"""cinderlab.procs.run_tool: a setup tool run to its end, its failure one LabError naming it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zfs_backend.cinderlab import procs
from zfs_backend.errors import LabError


def test_run_tool_passes_quietly() -> None:
    procs.run_tool("true", [sys.executable, "-c", "print('ok')"], env={}, timeout=30)


def test_run_tool_failure_names_the_tool_its_status_and_its_output() -> None:
    argv = [sys.executable, "-c", "import sys; print('no schema', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(LabError, match=r"^keystone-manage db_sync failed \(3\): no schema$"):
        procs.run_tool("keystone-manage db_sync", argv, env={}, timeout=30)


def test_run_tool_files_are_private(tmp_path: Path) -> None:
    out = tmp_path / "f"
    procs.run_tool("touch", [sys.executable, "-c", f"open({str(out)!r}, 'w').close()"], env={}, timeout=30)
    assert out.stat().st_mode & 0o077 == 0
