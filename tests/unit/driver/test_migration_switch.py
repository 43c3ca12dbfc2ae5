"""Issue 22: the controller's part of a migration (:class:`~zfs_backend.driver.migration.Switch`) acts at
the activity's hold before the quiesce while a caller follows the activity itself (the command line's
progress bar, a detached child's wait): without it ``volume migrate`` waited for ever on an activity
suspended for its controller. On a scripted activity and a recording driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from zfs_backend.cli.progress import wait_quietly
from zfs_backend.driver.migration import MigrationFailed, Switch
from zfs_backend.driver.models import Volume

DS = "tank/volumes/volume-v1"


@dataclass
class Driver:
    unexported: list[str] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)
    options: Any = field(default_factory=lambda: SimpleNamespace(node="node1"))

    def dataset_of(self, volume: Any) -> str:
        return DS

    def export(self, ds: Any, clients: Any, attachments: Any = ()) -> None:
        self.exported.append(str(ds))

    @property
    def exports(self) -> Any:
        d = self

        class Exports:
            def get(self, ds: Any) -> Any:
                return SimpleNamespace(clients=("198.18.0.1",), attachments=())

            def remove(self, ds: Any) -> None:
                d.unexported.append(str(ds))

        return Exports()


class HeldActivity:
    """Runs, then suspends itself before its quiesce and stays there until resumed; then ends ``end``
    (or never, when nobody resumes it: the test would hang, as the command did)."""

    id = "act-1"

    def __init__(self, end: str = "succeeded") -> None:
        self.end, self.resumed, self.calls = end, 0, 0

    def _rec(self) -> Any:
        self.calls += 1
        if self.resumed:
            state, result = self.end, {"phase": "done"}
        elif self.calls < 3:
            state, result = "running", {"phase": "catchup"}
        else:
            state, result = "suspended", {"phase": "quiesce", "held": "quiesce"}
        assert self.calls < 1000, "the activity was never resumed at its hold"
        return SimpleNamespace(state=state, result=result, error=None, status=0)

    def record(self) -> Any:
        return self._rec()

    def wait_record(self, timeout: float | None) -> Any:
        return self._rec()

    def resume(self) -> None:
        self.resumed += 1


def test_following_acts_at_the_hold_once() -> None:
    src, dst, act = Driver(), Driver(), HeldActivity()
    sw = Switch(src, dst, Volume(id="v1", size=1), act)  # type: ignore[arg-type]
    rec = wait_quietly(act, interval=0.0, on_record=sw.at_hold)  # type: ignore[arg-type]
    assert rec.state == "succeeded" and act.resumed == 1 and src.unexported == [DS]


def test_a_failed_migration_exports_the_source_again() -> None:
    src, dst, act = Driver(), Driver(), HeldActivity(end="failed")
    sw = Switch(src, dst, Volume(id="v1", size=1), act)  # type: ignore[arg-type]
    wait_quietly(act, interval=0.0, on_record=sw.at_hold)  # type: ignore[arg-type]
    with pytest.raises(MigrationFailed, match="stays on"):
        sw.finish()
    assert src.unexported == [DS] and src.exported == [DS]
