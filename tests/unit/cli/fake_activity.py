"""An activity a command follows, faked for the Ctrl-C tests (``cli.sigint``): it runs until cancelled,
and while it is followed (``wait_record``) it sends the process a SIGINT, as a user's Ctrl-C."""

from __future__ import annotations

import signal

from zfs_backend.activity.report import ActivityRecord, Progress


class Act:
    id, node, kind = "act-1", "node1", "replicate"

    def __init__(self) -> None:
        self.cancelled = 0
        self.state = "running"

    def cancel(self) -> None:
        self.cancelled += 1
        self.state = "cancelled"

    def wait(self, timeout: float | None) -> str:
        return self.state

    def record(self) -> ActivityRecord:
        return ActivityRecord(
            id=self.id, kind=self.kind, node=self.node, state=self.state, status=0, progress=Progress(0, 8)
        )

    def wait_record(self, timeout: float) -> ActivityRecord:
        if self.state == "running":
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while followed
        return self.record()


class Escaped(Exception):
    """A Ctrl-C that reached the test's own handler: the command let it through where it should not."""


def escaped(signum: int, frame: object) -> None:
    raise Escaped("Ctrl-C raised outside the command's handling")
