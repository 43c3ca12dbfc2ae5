"""One node pair's standby calls, batched: what the ``standby-sync`` activities of one (primary, standby)
pair ask the standby's receiving end, sent as one ``recv.expect_many`` / ``recv.commit_many`` per turn.

Every standby-sync of a pair talks to the standby's agent over the **one** session its agent keeps to it
(``agent.peers``), one round trip at a time; with many standbys their ``expect`` and ``commit`` queued
behind each other there, each waiting for the standby's zfs commands (a listing; a hold, a release and a
destroy, each its own txg sync on zfs-fuse) and its durable write. Here the calls of a pair are
group-committed: a call made while another of the same kind is in flight waits, and the next turn
sends everything that waited in one call, which the standby works on side by side and saves in one
transaction (``replication.receiver_standby``). Nothing waits for a window: a lone standby's call goes
at once, and the batches grow with the load.

Each item is still its own activity's (its holder, its grant, its claim checked by the standby as for
the single op) and its answer or error is its own: a failure stays that activity's, which retries at its
next interval while the others commit. A standby's agent that does not know the batched ops (an older
version) gets the single calls, one by one, as before.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..activity.context import PeerCaller
from ..errors import ProtocolError
from ..rpc.protocol import error_from_payload

__all__ = ["Coalescer", "PairCalls", "pair_calls"]

Item = dict[str, Any]


class _Waiting:
    __slots__ = ("answer", "batch", "done", "error", "item")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.batch = 0
        self.done = False
        self.answer: Any = None
        self.error: BaseException | None = None


class Coalescer:
    """Group commit of one kind of call: ``submit(item)`` blocks until the batch carrying the item was sent
    (``send(items)`` → one answer per item: a value, or an exception to raise in that item's caller) and
    returns the item's answer with the size of its batch."""

    def __init__(self, send: Callable[[list[Item]], list[Any]]) -> None:
        self._send = send
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._busy = False
        #: the sizes of the batches sent (for tests and the curious)
        self.sent: list[int] = []

    def submit(self, item: Item) -> tuple[Any, int]:
        me = _Waiting(item)
        with self._cond:
            self._queue.append(me)
            while self._busy and not me.done:
                self._cond.wait()
            if not me.done:  # nobody is sending: this caller sends what waited, its own item among them
                batch, self._queue, self._busy = self._queue, [], True
                self.sent.append(len(batch))
        if not me.done:
            try:
                answers: list[Any] = self._send([w.item for w in batch])
                if len(answers) != len(batch):
                    raise ProtocolError(f"{len(answers)} answers to a batch of {len(batch)}")
            except BaseException as e:  # the whole call failed: every item of it did
                answers = [e] * len(batch)
            with self._cond:
                for w, a in zip(batch, answers, strict=True):
                    if isinstance(a, BaseException):
                        w.error = a
                    else:
                        w.answer = a
                    w.done, w.batch = True, len(batch)
                self._busy = False
                self._cond.notify_all()
        if me.error is not None:
            raise me.error
        return me.answer, me.batch


class PairCalls:
    """The batched ``recv.expect`` / ``recv.commit`` of the standby-syncs of one node pair (one session to
    the standby's agent)."""

    def __init__(self, peer: PeerCaller) -> None:
        self.peer = peer
        self.batched = True  # False once the standby's agent said it knows no batched op
        self.expects = Coalescer(lambda items: self._send("expect", items))
        self.commits = Coalescer(lambda items: self._send("commit", items))

    def expect(self, item: Item) -> int:
        """``item``: ``dataset``, ``holder``, ``sent_guids`` (and ``grant``), as ``recv.expect`` takes
        them; returns the size of the batch that carried it."""
        return self.expects.submit(item)[1]

    def commit(self, item: Item) -> tuple[dict[str, Any], int]:
        """``item``: ``dataset``, ``holder``, ``target_guid``, ``prune_prefix`` (and ``grant``); returns
        the answer and the size of the batch that carried it."""
        answer, batch = self.commits.submit(item)
        return dict(answer), batch

    def _send(self, verb: str, items: list[Item]) -> list[Any]:
        if self.batched and len(items) > 1:
            try:
                answers = self.peer.call(f"recv.{verb}_many", items=items)
            except ProtocolError as e:
                if "unknown op" not in str(e):
                    raise
                self.batched = False  # an older agent: one by one from now on
            else:
                return [_answer(a) for a in answers]
        out: list[Any] = []
        for item in items:
            try:
                out.append(self.peer.call(f"recv.{verb}", **item))
            except Exception as e:  # that item's: the others go on
                out.append(e)
        return out


def _answer(a: Any) -> Any:
    if isinstance(a, dict) and "ok" in a:
        return a["ok"]
    if isinstance(a, dict) and "error" in a:
        return error_from_payload(a["error"])
    return ProtocolError(f"malformed batch answer: {a!r}")


_PAIRS: weakref.WeakKeyDictionary[Any, PairCalls] = weakref.WeakKeyDictionary()
_PAIRS_LOCK = threading.Lock()


def pair_calls(peer: PeerCaller) -> PairCalls:
    """The batched calls over ``peer`` (the session to one standby node's agent: every standby-sync of
    the pair gets the same session from its context, so the same :class:`PairCalls`)."""
    with _PAIRS_LOCK:
        calls = _PAIRS.get(peer)
        if calls is None:
            calls = _PAIRS[peer] = PairCalls(peer)
        return calls
