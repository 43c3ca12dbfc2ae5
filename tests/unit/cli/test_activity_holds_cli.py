"""``activity holds`` draws its table (rich is imported where the table is drawn, since the history
work made ``--json`` answers load no rich: the table form is checked to draw, not to fail)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from zfs_backend.cli import activity_cmd
from zfs_backend.cli.main import main

REPORT: dict[str, Any] = {
    "listing": "records",
    "holds": [
        {
            "snapshot": "tank/v@s1",
            "tag": "zfs_backend:act-1",
            "owner": "act-1",
            "live": True,
            "why": "running",
        },
        {
            "snapshot": "tank/v@s0",
            "tag": "zfs_backend:act-0",
            "owner": "act-0",
            "live": False,
            "why": "failed",
        },
    ],
    "released": [{"snapshot": "tank/v@s0", "tag": "zfs_backend:act-0", "why": "failed"}],
    "unaccounted": [{"snapshot": "tank/w@s", "userrefs": 2, "recorded": 1}],
}


class _Client:
    def holds(self, release_stale: bool = False) -> dict[str, Any]:
        return REPORT


class _Node:
    client = _Client()


@pytest.fixture(autouse=True)
def _fake_node(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def node(args: Any) -> Iterator[_Node]:
        yield _Node()

    monkeypatch.setattr(activity_cmd, "_node", node)
    monkeypatch.setenv("COLUMNS", "200")


def test_holds_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activity", "holds", "--node", "node1"]) == 0
    out = capsys.readouterr().out
    assert "project holds on node1 (records)" in out and "zfs_backend:act-1" in out and "stale" in out
    assert "released zfs_backend:act-0 on tank/v@s0 (failed)" in out
    assert "tank/w@s: 2 holds, 1 of them the project's records know" in out


def test_holds_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activity", "holds", "--node", "node1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == REPORT
