"""Ctrl-C in ``replicate`` and ``volume replicate`` cancels the replication (exit 130, rolled back), whenever
it comes: while it is followed, and — the race left open before — after the agent answered the start but
before the command followed it, which said "interrupted" and left the activity running."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.cli import replicate_cmd, volume_cmd
from zfs_backend.cli.main import build_parser
from zfs_backend.cli.progress import EXIT_CANCELLED

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_activity import Act, escaped


@pytest.fixture(autouse=True)
def _ctrl_c_escapes() -> Iterator[None]:
    """Outside the command's own handling a Ctrl-C fails the test (``Escaped``), not the test session."""
    before = signal.signal(signal.SIGINT, escaped)
    yield
    assert signal.getsignal(signal.SIGINT) is escaped  # the command's handlers are gone afterwards
    signal.signal(signal.SIGINT, before)


WHEN = ["before following", "while following"]


def _started(act: Act, when: str) -> Act:
    if when == "before following":
        signal.raise_signal(signal.SIGINT)  # the agent has started it, its answer is on its way
    return act


@pytest.mark.parametrize("when", WHEN)
def test_ctrl_c_in_replicate_cancels_the_activity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    act = Act()
    monkeypatch.setattr(replicate_cmd, "snapshot_replicate", lambda *a, **kw: _started(act, when))
    args = build_parser("replicate").parse_args(["replicate", "node1:p/f@s", "node2:p/f"])
    assert replicate_cmd.cmd_replicate(args) == EXIT_CANCELLED
    assert act.cancelled == 1
    assert "cancelled" in capsys.readouterr().out


class _Svc:
    def __init__(self, act: Act, when: str) -> None:
        self.act, self.when = act, when

    def replicate(self, vol: str, snap: str, to: str, full: bool) -> Act:
        return _started(self.act, self.when)


@pytest.mark.parametrize("when", WHEN)
def test_ctrl_c_in_volume_replicate_cancels_the_activity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    act = Act()

    @contextlib.contextmanager
    def service() -> Iterator[_Svc]:
        yield _Svc(act, when)

    monkeypatch.setattr(volume_cmd, "_service", service)
    args = argparse.Namespace(snapshot="v1@s1", to="node2", full=False, json=False, detach=False)
    assert volume_cmd._replicate(args) == EXIT_CANCELLED
    assert act.cancelled == 1
    assert "cancelled" in capsys.readouterr().out


def test_a_detached_replicate_returns_its_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    act = Act()
    seen: dict[str, Any] = {}
    monkeypatch.setattr(replicate_cmd, "snapshot_replicate", lambda *a, **kw: seen.update(kw) or act)
    args = build_parser("replicate").parse_args(["replicate", "node1:p/f@s", "node2:p/f", "--detach"])
    assert replicate_cmd.cmd_replicate(args) == 0
    assert capsys.readouterr().out == "act-1\n" and act.cancelled == 0 and seen["settings"] is not None
