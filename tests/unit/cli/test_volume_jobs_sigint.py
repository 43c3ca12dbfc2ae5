"""Ctrl-C in ``volume migrate`` (issue 22's promise: it cancels the migration, exit 130, the volume stays
where it was), whenever it comes. CI caught a Ctrl-C that came after the flow had started the activity but
before the command followed it: the KeyboardInterrupt stopped the flow's engine between tasks, printed
nothing on stdout and left the activity to run. Now Ctrl-C is noted while the flow starts the activity and
cancels it as soon as it is followed; while it is followed, Ctrl-C cancels it as before."""

from __future__ import annotations

import argparse
import signal
from typing import Any

import pytest

from zfs_backend.activity.report import ActivityRecord, Progress
from zfs_backend.cli import volume_jobs_cmd
from zfs_backend.cli.progress import EXIT_CANCELLED, run_in_foreground


class Act:
    id, node, kind = "act-1", "node1", "migrate"

    def __init__(self) -> None:
        self.cancelled = 0
        self.state = "running"

    def cancel(self) -> None:
        self.cancelled += 1
        self.state = "cancelled"

    def wait(self, timeout: float) -> None:
        return None

    def record(self) -> ActivityRecord:
        return ActivityRecord(
            id=self.id, kind=self.kind, node=self.node, state=self.state, status=0, progress=Progress(0, 8)
        )

    def wait_record(self, timeout: float) -> ActivityRecord:
        if self.state == "running":
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while followed
        return self.record()


def test_an_interrupt_before_following_cancels_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    act = Act()
    rc = run_in_foreground(act, label="x", as_json=False, detach=False, interrupted=True)  # type: ignore[arg-type]
    assert rc == EXIT_CANCELLED and act.cancelled == 1
    out = capsys.readouterr().out
    assert "interrupted: cancelling" in out and "cancelled" in out


class _Svc:
    settings = None

    def __enter__(self) -> _Svc:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Run:
    state, error, id = "REVERTED", "cancelled", "flow-1"
    results: dict[str, Any] = {}


def _args() -> argparse.Namespace:
    return argparse.Namespace(name="v1", to="node2", hold_at=None, json=False, detach=False, report_fd=None)


@pytest.mark.parametrize("when", ["before following", "while following"])
def test_ctrl_c_in_volume_migrate_cancels_the_activity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    act = Act()

    def migrate(settings: Any, name: str, to: str, *, follow: Any, **tuning: Any) -> _Run:
        if when == "before following":
            signal.raise_signal(signal.SIGINT)  # the flow is starting the activity: noted, not raised
        follow(act, lambda rec: None)
        return _Run()

    monkeypatch.setattr(volume_jobs_cmd, "VolumeService", lambda settings: _Svc())
    monkeypatch.setattr(volume_jobs_cmd, "load_settings", lambda: None)
    monkeypatch.setattr("zfs_backend.flows.migrate.migrate", migrate)
    before = signal.getsignal(signal.SIGINT)
    assert volume_jobs_cmd._migrate(_args()) == EXIT_CANCELLED
    assert act.cancelled == 1
    assert "cancelled" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before  # the command's handlers are gone afterwards


def test_ctrl_c_before_any_activity_leaves_the_volume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def migrate(settings: Any, name: str, to: str, *, follow: Any, **tuning: Any) -> _Run:
        signal.raise_signal(signal.SIGINT)  # noted; the flow reverts for its own reason
        return _Run()

    monkeypatch.setattr(volume_jobs_cmd, "VolumeService", lambda settings: _Svc())
    monkeypatch.setattr(volume_jobs_cmd, "load_settings", lambda: None)
    monkeypatch.setattr("zfs_backend.flows.migrate.migrate", migrate)
    assert volume_jobs_cmd._migrate(_args()) == EXIT_CANCELLED
    assert "v1 stays where it was" in capsys.readouterr().out
