"""The base of activities hosted in this process (``LocalActivity``) and the kind registry.

``LocalActivity`` implements the contract, ``BackendActivity`` (in ``handle``; re-exported here), the
one interface shared by a local activity and a remote handle (``zfs_backend.rpc.client.RemoteActivity``)::

    id, kind, node, progress -> (n, m), self_restarting, state, status, error
    suspend(), resume(), cancel(), resources(), record(), to_dict(), wait(timeout)

Rules every implementation keeps:

* every state change is persisted (``ActivityStore.transition``) before it is reported;
* ``progress`` is the last *persisted* progress, so a crash never makes ``n`` go backwards;
* an illegal move raises ``InvalidTransition`` and changes nothing.

A kind is a ``LocalActivity`` subclass (usually of ``PipelineActivity``) registered with
``register_kind(kind, factory)``; ``factory(record, ctx)`` builds the object both for a new activity
and to carry a stored, non-terminal one on after an agent restart.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..errors import UsageError
from ..hosts.base import Host
from ..hosts.local import LocalHost
from .handle import BackendActivity
from .report import ActivityRecord, Progress, Resources
from .states import FAILED, TERMINAL
from .store import ActivityStore

__all__ = [
    "ActivityContext",
    "BackendActivity",
    "KindFactory",
    "LocalActivity",
    "PeerCaller",
    "kind_factory",
    "register_kind",
    "registered_kinds",
]

LOCAL_HOST_NAMES = frozenset({"", "local", "localhost"})


def _default_host_for(name: str) -> Host:
    if name in LOCAL_HOST_NAMES or name == socket.gethostname():
        return LocalHost(name or None)
    raise UsageError(f"unknown host {name!r}: this agent has no way to reach it")


class PeerCaller(Protocol):
    """A session to a peer node's agent (its peer socket): ``call(op, **args)`` returns the result or
    raises the typed error the peer raised."""

    def call(self, op: str, **args: Any) -> Any: ...


def _no_peers(name: str) -> PeerCaller:
    raise UsageError(f"node {name!r}: this host has no way to reach peer agents")


@dataclass
class ActivityContext:
    """What a kind needs from whoever hosts it: the store, the node's name, a way to reach hosts."""

    store: ActivityStore
    node: str = field(default_factory=socket.gethostname)
    host_for: Callable[[str], Host] = _default_host_for
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("zfs_backend.activity"))
    #: True when the host carries non-terminal activities on after a restart (the agent)
    self_restarting: bool = False
    #: sessions to peer nodes' agents (the agent provides them; none elsewhere)
    peer: Callable[[str], PeerCaller] | None = None

    def peer_agent(self, name: str) -> PeerCaller:
        return (self.peer or _no_peers)(name)

    def host(self, name: str | None) -> Host:
        if not name or name == self.node:
            return LocalHost(self.node)
        return self.host_for(name)


KindFactory = Callable[[ActivityRecord, ActivityContext], "LocalActivity"]
_KINDS: dict[str, KindFactory] = {}
_KINDS_LOCK = threading.Lock()


def register_kind(kind: str, factory: KindFactory, *, replace: bool = False) -> None:
    """Make ``kind`` startable and restartable: ``factory(record, ctx)`` returns the activity."""
    with _KINDS_LOCK:
        if kind in _KINDS and not replace and _KINDS[kind] is not factory:
            raise ValueError(f"activity kind {kind!r} is already registered")
        _KINDS[kind] = factory


def kind_factory(kind: str) -> KindFactory:
    with _KINDS_LOCK:
        try:
            return _KINDS[kind]
        except KeyError:
            known = ", ".join(sorted(_KINDS)) or "none"
            raise UsageError(f"unknown activity kind {kind!r} (known: {known})") from None


def registered_kinds() -> list[str]:
    with _KINDS_LOCK:
        return sorted(_KINDS)


class LocalActivity(BackendActivity):
    """An activity hosted in this process, persisted in an ``ActivityStore``.

    Subclasses implement ``_run()`` (the worker thread's body) and the control verbs. State moves go
    through ``_transition``, which persists first and then updates the in-memory copy and wakes
    waiters. ``start()`` launches the worker; ``detach()`` stops it for a host shutdown, leaving the
    record non-terminal for the next start to carry on.
    """

    KIND: ClassVar[str] = ""
    UNIT: ClassVar[str] = "bytes"

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        self.ctx = ctx
        self._record = record
        self._cond = threading.Condition(threading.RLock())
        self._thread: threading.Thread | None = None

    @classmethod
    def new_record(cls, activity_id: str, params: dict[str, Any], ctx: ActivityContext) -> ActivityRecord:
        return ActivityRecord(
            id=activity_id,
            kind=cls.KIND,
            node=ctx.node,
            self_restarting=ctx.self_restarting,
            created_at=time.time(),
            params=params,
            progress=Progress(unit=cls.UNIT),
        )

    # -- contract ---------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._record.id

    @property
    def kind(self) -> str:
        return self._record.kind

    @property
    def node(self) -> str:
        return self._record.node

    @property
    def progress(self) -> tuple[int, int]:
        return self._record.progress.pair

    @property
    def self_restarting(self) -> bool:
        return self._record.self_restarting

    @property
    def state(self) -> str:
        return self._record.state

    @property
    def status(self) -> int | None:
        return self._record.status

    @property
    def error(self) -> str | None:
        return self._record.error

    @property
    def params(self) -> dict[str, Any]:
        return self._record.params

    def record(self) -> ActivityRecord:
        return self._record

    def resources(self) -> Resources:
        return self._record.resources

    def wait(self, timeout: float | None = None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._record.state not in TERMINAL:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(0.5 if left is None else min(left, 0.5))
            return self._record.state

    # -- hosting ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Before the record is stored: the work a refusal must come from (e.g. planning). Raising here
        stores nothing. Default: nothing."""

    def persist_new(self) -> ActivityRecord:
        """Insert this (new) activity's record in the store and adopt the stored form."""
        with self._cond:
            self._record = self.ctx.store.insert(self._record)
            return self._record

    def start(self) -> None:
        """Start (or carry on) the work in a worker thread. Idempotent."""
        with self._cond:
            if self._thread is not None or self._record.state in TERMINAL:
                return
            self._thread = threading.Thread(target=self._run_guarded, name=f"activity-{self.id}", daemon=True)
            self._thread.start()

    def detach(self, timeout: float = 10.0) -> None:
        """Stop working without changing the persisted state (host shutdown)."""

    def join(self, timeout: float | None = None) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout)

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as e:  # the last line of defence: one activity never takes others down
            self.ctx.log.exception("activity %s crashed", self.id)
            self._fail_quietly(f"internal error: {type(e).__name__}: {e}")

    @abstractmethod
    def _run(self) -> None: ...

    # -- persistence helpers ----------------------------------------------------------------------
    def _transition(
        self,
        new: str,
        *,
        verb: str | None = None,
        status: int | None = None,
        error: str | None = None,
        only_from: str | None = None,
        final_resources: Callable[[float], Resources | None] | None = None,
    ) -> ActivityRecord:
        """Persist and report a move to ``new``. ``only_from``: do nothing (return the current record)
        unless the activity is still in that state, checked under the same lock as the move: the
        worker's own moves must never override a verb a caller applied meanwhile (e.g. a suspend
        while the worker was planning). ``final_resources``: see ``ActivityStore.transition``."""
        with self._cond:
            if only_from is not None and self._record.state != only_from:
                return self._record
            rec = self.ctx.store.transition(
                self.id, new, verb=verb, status=status, error=error, final_resources=final_resources
            )
            self._record = rec
            self._cond.notify_all()
        self.ctx.log.info(
            "activity transition", extra={"activity": self.id, "state": new, "status": status, "error": error}
        )
        return rec

    def _refresh(self) -> ActivityRecord:
        with self._cond:
            self._record = self.ctx.store.get(self.id)
            self._cond.notify_all()
            return self._record

    def _fail_quietly(self, error: str, status: int = 1) -> None:
        try:
            self._transition(FAILED, status=status, error=error)
        except Exception:
            self.ctx.log.exception("activity %s: could not record failure", self.id)
