"""The backend-activity contract: ``BackendActivity``, the one handle shared by an activity hosted in
this process (``zfs_backend.activity.core.LocalActivity``) and a remote one
(``zfs_backend.rpc.client.RemoteActivity``).

It lives apart from ``core`` (the store, hosts, the kind registry) so that a client, such as a
command line that starts one replication and follows it, loads the contract and not the machinery
that runs activities: every import here is one the client needs anyway.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .report import ActivityRecord, Resources
from .states import TERMINAL

__all__ = ["BackendActivity"]


class BackendActivity(ABC):
    """A handle on work that runs on a storage node (see ``docs/activity.md``)."""

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def kind(self) -> str: ...

    @property
    @abstractmethod
    def node(self) -> str: ...

    @property
    @abstractmethod
    def progress(self) -> tuple[int, int]:
        """``(n, m)``: n done of m scheduled; ``(0, 0)`` = no anticipated completion. Monotone,
        never ``n > m``, ``n == m`` exactly on success."""

    @property
    @abstractmethod
    def self_restarting(self) -> bool: ...

    @property
    @abstractmethod
    def state(self) -> str: ...

    @property
    @abstractmethod
    def status(self) -> int | None:
        """None until finished; 0 on success; a non-zero code on failure or cancellation."""

    @property
    @abstractmethod
    def error(self) -> str | None: ...

    @abstractmethod
    def suspend(self) -> None:
        """Stop making progress until ``resume()``; bytes already moved are kept."""

    @abstractmethod
    def resume(self) -> None: ...

    @abstractmethod
    def cancel(self) -> None:
        """Abort and roll back (the kind's ``rollback``); ends ``cancelled`` (or ``failed`` when
        the rollback itself failed)."""

    @abstractmethod
    def resources(self) -> Resources: ...

    @abstractmethod
    def record(self) -> ActivityRecord:
        """The whole state as plain data (one consistent snapshot)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> str:
        """Block until terminal or ``timeout`` seconds; return the state then."""

    def wait_record(self, timeout: float) -> ActivityRecord:
        """Block until terminal or ``timeout`` seconds, then return the record: what a progress display
        polls with (it learns of the end at once, not at its next tick)."""
        self.wait(timeout)
        return self.record()

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def __repr__(self) -> str:
        n, m = self.progress
        return f"<{type(self).__name__} {self.id} {self.kind} {self.state} {n}/{m}>"
