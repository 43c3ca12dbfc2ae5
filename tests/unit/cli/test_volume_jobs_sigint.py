"""Ctrl-C in ``volume migrate`` (issue 22's promise: it cancels the migration, exit 130, the volume stays
where it was), whenever it comes. CI caught a Ctrl-C that came after the flow had started the activity but
before the command followed it: the KeyboardInterrupt stopped the flow's engine between tasks, printed
nothing on stdout and left the activity to run. Now Ctrl-C is noted while the flow starts the activity and
cancels it as soon as it is followed; while it is followed, Ctrl-C cancels it as before (``cli.sigint``).
``volume backup`` and ``volume restore`` likewise (a backup's record kept no activity id either)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.cli import volume_jobs_cmd
from zfs_backend.cli.progress import EXIT_CANCELLED
from zfs_backend.errors import BackupError

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_activity import Act, escaped


@pytest.fixture(autouse=True)
def _ctrl_c_escapes() -> Any:
    """Outside the command's own handling a Ctrl-C fails the test (``Escaped``), not the test session."""
    before = signal.signal(signal.SIGINT, escaped)
    yield
    assert signal.getsignal(signal.SIGINT) is escaped  # the command's handlers are gone afterwards
    signal.signal(signal.SIGINT, before)


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
    assert volume_jobs_cmd._migrate(_args()) == EXIT_CANCELLED
    assert act.cancelled == 1
    assert "cancelled" in capsys.readouterr().out


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


class _Backup:
    id, backup_node, status = "bk-1", "node3", "error"

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id}


@pytest.mark.parametrize("when", ["before following", "while following"])
@pytest.mark.parametrize("detach", [False, True])
def test_ctrl_c_in_volume_backup_cancels_the_activity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str, detach: bool
) -> None:
    act = Act()
    finished: list[str] = []

    def start_backup(svc: Any, name: str, **kw: Any) -> tuple[_Backup, Act]:
        if when == "before following":
            signal.raise_signal(signal.SIGINT)  # the agent answered the start: noted, not raised
        return _Backup(), act

    def finish_backup(svc: Any, backup_id: str, a: Act) -> _Backup:
        finished.append(a.state)
        return _Backup()

    monkeypatch.setattr(volume_jobs_cmd, "VolumeService", lambda settings: _Svc())
    monkeypatch.setattr(volume_jobs_cmd, "load_settings", lambda: None)
    monkeypatch.setattr(volume_jobs_cmd.jobs, "start_backup", start_backup)
    monkeypatch.setattr(volume_jobs_cmd.jobs, "finish_backup", finish_backup)
    given = {"incremental": False, "backup_node": None, "detach": detach}
    args = argparse.Namespace(**{**vars(_args()), **given})
    rc = volume_jobs_cmd._backup(args)
    if detach and when == "while following":  # detached: nothing followed, nothing to interrupt
        assert rc == 0 and act.cancelled == 0 and capsys.readouterr().out == "bk-1 act-1\n"
        return
    assert rc == EXIT_CANCELLED and act.cancelled == 1
    assert finished == ["cancelled"]  # the record learns how it ended
    assert "cancelled" in capsys.readouterr().out


@pytest.mark.parametrize("when", ["before following", "while following"])
def test_ctrl_c_in_volume_restore_cancels_the_activity(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    act = Act()

    def start_restore(svc: Any, backup: str, **kw: Any) -> tuple[str, Act]:
        if when == "before following":
            signal.raise_signal(signal.SIGINT)
        return "v1-r", act

    def finish_restore(svc: Any, name: str, a: Act) -> None:
        raise BackupError(f"restore {a.id} {a.state}")

    monkeypatch.setattr(volume_jobs_cmd, "VolumeService", lambda settings: _Svc())
    monkeypatch.setattr(volume_jobs_cmd, "load_settings", lambda: None)
    monkeypatch.setattr(volume_jobs_cmd.jobs, "start_restore", start_restore)
    monkeypatch.setattr(volume_jobs_cmd.jobs, "finish_restore", finish_restore)
    args = argparse.Namespace(backup="bk-1", node=None, **_args().__dict__)
    with pytest.raises(BackupError, match="act-1 cancelled"):  # the new volume's record dropped
        volume_jobs_cmd._restore(args)
    assert act.cancelled == 1
