"""The base of activities hosted in this process (``LocalActivity``) and the kind registry.

``LocalActivity`` implements the contract, ``BackendActivity`` (in ``handle``; re-exported here), the
one interface shared by a local activity and a remote handle (``zfs_backend.rpc.client.RemoteActivity``)::

    id, kind, node, progress -> (n, m), self_restarting, state, status, error
    suspend(), resume(), cancel(), resources(), record(), to_dict(), wait(timeout)

Rules every implementation keeps:

* every state change is persisted (``ActivityStore.transition``) before it is reported;
* ``progress`` is the last *persisted* progress, so a crash never makes ``n`` go backwards;
* an illegal move raises ``InvalidTransition`` and changes nothing.

The control verbs (``suspend``, ``resume``, ``cancel``, ``detach``) are ``LocalActivity``'s, one
implementation for every kind: each persists its move (and, for ``suspend``, the counters and checkpoint
through the kind's ``_persist``) and acts on the stream in flight (``_relay``, ``_procs``); a kind says
only what else must stop (``_halt``), what a cancel undoes (``rollback``) and how to wake its worker
(``_wake_worker``).

A kind is a ``LocalActivity`` subclass (usually of ``PipelineActivity``) registered with
``register_kind(kind, factory)``; ``factory(record, ctx)`` builds the object both for a new activity
and to carry a stored, non-terminal one on after an agent restart. ``ActivityContext`` gives it the
node's settings and its peers: ``peer_agent`` (a session to a peer's agent) and ``peer_host`` (the
peer as a ``Host`` a stream reaches over SSH).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from ..errors import UsageError
from .context import LOCAL_HOST_NAMES, ActivityContext, PeerCaller, PeerHostFactory
from .handle import BackendActivity
from .procs import kill_process_group
from .relay import Relay
from .report import ActivityRecord, Progress, Resources
from .states import (
    CANCELLED,
    CANCELLING,
    FAILED,
    RUNNING,
    STATUS_CANCELLED,
    STATUS_FAILED,
    SUSPENDED,
    TERMINAL,
)

__all__ = [
    "LOCAL_HOST_NAMES",
    "ActivityContext",
    "BackendActivity",
    "KindFactory",
    "LocalActivity",
    "PeerCaller",
    "PeerHostFactory",
    "kind_factory",
    "register_kind",
    "registered_kinds",
    "status_of",
]


def status_of(e: BaseException) -> int:
    """The status a failure carries: the error's exit code for this project's errors (e.g. 8 for a
    replication conflict), else the generic failure status."""
    code = getattr(e, "exit_code", None)
    return code if isinstance(code, int) and code > 0 else STATUS_FAILED


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

    Subclasses implement ``_run()`` (the worker thread's body); the control verbs are here (see the
    module doc). State moves go through ``_transition``, which persists first and then updates the
    in-memory copy and wakes waiters. ``start()`` launches the worker; ``detach()`` stops it for a host
    shutdown, leaving the record non-terminal for the next start to carry on. The worker publishes the
    stream in flight as ``_relay`` and ``_procs`` (producer first), under ``_cond``.
    """

    KIND: ClassVar[str] = ""
    UNIT: ClassVar[str] = "bytes"
    #: how long ``cancel()`` waits for the worker to finish cancelling (the rollback included)
    cancel_wait_s: float = 30.0
    #: how long a killed process group of the stream in flight gets between SIGTERM and SIGKILL
    kill_grace_s: float = 2.0

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        self.ctx = ctx
        self._record = record
        self._cond = threading.Condition(threading.RLock())
        self._thread: threading.Thread | None = None
        self._relay: Relay | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._abort: str | None = None  # "cancel" | "detach"

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

    # -- control --------------------------------------------------------------------------------
    def suspend(self) -> None:
        """Persisted first; the stream in flight pauses (no byte moves until ``resume``), then the
        counters and the checkpoint as of the pause are persisted too."""
        with self._cond:
            self._transition(SUSPENDED, verb="suspend")
            relay = self._relay
            if relay is not None:
                relay.pause()
        if relay is not None:
            relay.pause(wait=2.0)
        self._persist()
        self._wake_worker()

    def resume(self) -> None:
        with self._cond:
            self._transition(RUNNING, verb="resume")
            if self._relay is not None:
                self._relay.unpause()
        self._wake_worker()

    def cancel(self) -> None:
        """Persisted first (``cancelling``); the stream in flight is killed, the worker rolls back and
        ends ``cancelled`` (or ``failed`` when the rollback fails). Waits up to ``cancel_wait_s``."""
        with self._cond:
            self._transition(CANCELLING, verb="cancel")
            self._abort = "cancel"
            procs = self._halt()
        for p in procs:
            kill_process_group(p.pid, grace_s=self.kill_grace_s)
        self._wake_worker()
        if self._thread is None:  # not hosted (e.g. never started): finish here
            self._finish_cancel()
        self.wait(self.cancel_wait_s)

    def detach(self, timeout: float = 10.0) -> None:
        """Host shutdown: stop the stream tidily (producer first, then let the consumer drain what it
        was given), leave the persisted state non-terminal for the next start to carry on."""
        with self._cond:
            if self._abort is None:
                self._abort = "detach"
            procs = self._halt()
            self._cond.notify_all()
        if procs:
            kill_process_group(procs[0].pid, grace_s=self.kill_grace_s)
        self._wake_worker()
        self.join(timeout)
        for p in procs[1:]:
            kill_process_group(p.pid, grace_s=0.5)

    # -- what a kind adds to the verbs --------------------------------------------------------------
    def _halt(self) -> list[subprocess.Popen[bytes]]:
        """Under ``_cond``, for cancel and detach: stop the relay in flight (and whatever else the kind
        started); return the processes to kill, producer first."""
        if self._relay is not None:
            self._relay.abort()
        return list(self._procs)

    def _wake_worker(self) -> None:
        """After a verb: wake a worker that sleeps on something else than ``_cond``."""

    def _persist(self) -> None:
        """Persist the counters and checkpoint as they are now (a suspend does). Default: nothing."""

    def rollback(self) -> None:
        """After cancel killed the stream: undo the activity's effect (raise: the rollback failed)."""

    def _final_resources(self, finished_at: float) -> Resources | None:
        """What the activity cost, saved with its terminal move. Default: what the record holds."""
        return None

    def _finish_cancel(self) -> None:
        try:
            self.rollback()
        except Exception as e:
            self._fail_if_possible(f"cancelled, but the rollback failed: {e}", STATUS_FAILED)
            return
        with contextlib.suppress(Exception):
            self._transition(
                CANCELLED, status=STATUS_CANCELLED, error="cancelled", final_resources=self._final_resources
            )

    def _fail_if_possible(self, error: str, status: int) -> None:
        with contextlib.suppress(Exception):
            self._transition(FAILED, status=status, error=error, final_resources=self._final_resources)

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

    def _fail_quietly(self, error: str, status: int = STATUS_FAILED) -> None:
        try:
            self._transition(FAILED, status=status, error=error)
        except Exception:
            self.ctx.log.exception("activity %s: could not record failure", self.id)
