"""The standby calls of one node pair, batched (kinds.standby_pair): calls made while one is in flight go
together in the next turn, each answer (or error) goes to its own caller, a lone call is the single op,
and a standby's agent that knows no batched op gets the single calls."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from polling import until

from zfs_backend.errors import AlreadyRunning, ProtocolError, StreamFailed
from zfs_backend.kinds.standby_pair import Coalescer, PairCalls, pair_calls
from zfs_backend.rpc.protocol import error_payload


def test_calls_made_while_one_is_in_flight_go_in_one_batch() -> None:
    gate = threading.Event()
    sent: list[list[int]] = []

    def send(items: list[dict[str, Any]]) -> list[Any]:
        sent.append([i["n"] for i in items])
        if len(sent) == 1:
            gate.wait(30)  # the first call is in flight while the others arrive
        return [i["n"] * 10 for i in items]

    c = Coalescer(send)
    answers: dict[int, Any] = {}

    def call(n: int) -> None:
        answers[n] = c.submit({"n": n})

    first = threading.Thread(target=call, args=(0,))
    first.start()
    until("the first call in flight", lambda: len(sent) == 1, 30, interval=0.01)
    rest = [threading.Thread(target=call, args=(n,)) for n in (1, 2, 3)]
    for t in rest:
        t.start()
    until("three calls waiting", lambda: len(c._queue) == 3, 30, interval=0.01)
    gate.set()
    for t in [first, *rest]:
        t.join(30)
    assert sent[0] == [0] and sorted(sent[1]) == [1, 2, 3] and len(sent) == 2
    assert answers == {0: (0, 1), 1: (10, 3), 2: (20, 3), 3: (30, 3)}
    assert c.sent == [1, 3]


def test_an_error_is_its_own_items_and_a_failed_call_fails_all_of_its_items() -> None:
    c = Coalescer(lambda items: [StreamFailed("no") if i["n"] == 1 else i["n"] for i in items])
    assert c.submit({"n": 2}) == (2, 1)
    with pytest.raises(StreamFailed):
        c.submit({"n": 1})

    def broken(items: list[dict[str, Any]]) -> list[Any]:
        raise ConnectionError("the session died")

    c = Coalescer(broken)
    with pytest.raises(ConnectionError):
        c.submit({"n": 1})
    c = Coalescer(lambda items: [])  # a short answer is nobody's
    with pytest.raises(ProtocolError):
        c.submit({"n": 1})


class _Peer:
    def __init__(self, batched: bool = True) -> None:
        self.batched = batched
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append((op, args))
        if op.endswith("_many"):
            if not self.batched:
                raise ProtocolError(f"unknown op {op}")
            return [
                {"error": error_payload(AlreadyRunning("x does not hold it"))}
                if i["dataset"] == "tank/bad"
                else {"ok": {"verified": True, "dataset": i["dataset"]}}
                for i in args["items"]
            ]
        if args["dataset"] == "tank/bad":
            raise AlreadyRunning("x does not hold it")
        return {"verified": True, "dataset": args["dataset"]}


def _items(*names: str) -> list[dict[str, Any]]:
    return [{"dataset": n, "holder": f"act-{n[-1]}", "target_guid": 1, "prune_prefix": "p-"} for n in names]


def test_a_batch_is_one_call_with_each_items_answer() -> None:
    peer = _Peer()
    calls = PairCalls(peer)
    out = calls._send("commit", _items("tank/a", "tank/bad", "tank/c"))
    assert [op for op, _ in peer.calls] == ["recv.commit_many"]
    assert out[0] == {"verified": True, "dataset": "tank/a"} and out[2]["dataset"] == "tank/c"
    assert isinstance(out[1], AlreadyRunning)
    # a lone call is the single op, as before
    assert calls.commit(_items("tank/a")[0]) == ({"verified": True, "dataset": "tank/a"}, 1)
    assert peer.calls[-1][0] == "recv.commit" and peer.calls[-1][1]["target_guid"] == 1


def test_an_agent_without_batched_ops_gets_single_calls() -> None:
    peer = _Peer(batched=False)
    calls = PairCalls(peer)
    out = calls._send("expect", _items("tank/a", "tank/bad"))
    assert [op for op, _ in peer.calls] == ["recv.expect_many", "recv.expect", "recv.expect"]
    assert out[0]["dataset"] == "tank/a" and isinstance(out[1], AlreadyRunning)
    calls._send("expect", _items("tank/a", "tank/c"))
    assert [op for op, _ in peer.calls[3:]] == ["recv.expect", "recv.expect"]  # not asked again


def test_one_pair_one_batcher() -> None:
    a, b = _Peer(), _Peer()
    assert pair_calls(a) is pair_calls(a) and pair_calls(a) is not pair_calls(b)
