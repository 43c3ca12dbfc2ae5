"""Issue 22: a request interrupted before its answer was read (Ctrl-C in ``volume migrate`` while it
follows the activity) drops the connection: the next request (the cancel) gets its own answer on a new
connection, not the interrupted one's (``response 5 to request 6`` before)."""

from __future__ import annotations

import io
from typing import IO

import pytest

from zfs_backend.rpc.client import AgentClient
from zfs_backend.rpc.protocol import decode, encode
from zfs_backend.rpc.transport import Transport


class Agent(io.RawIOBase):
    """Answers every request line with its id; the first read after ``interrupt`` is set raises
    KeyboardInterrupt instead (the answer stays queued, as on a real pipe)."""

    def __init__(self) -> None:
        self.out = b""
        self.interrupt = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        for line in bytes(b).splitlines():
            req = decode(line)
            self.out += encode({"id": req["id"], "result": req["op"]})
        return len(b)

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if self.interrupt:
            self.interrupt = False
            raise KeyboardInterrupt
        line, _, self.out = self.out.partition(b"\n")
        return line + b"\n"


class Pipe(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.opened: list[Agent] = []

    def _open(self) -> tuple[IO[bytes], IO[bytes]]:
        a = Agent()
        self.opened.append(a)
        return a, a  # type: ignore[return-value]


def test_an_interrupted_request_does_not_answer_the_next_one() -> None:
    t = Pipe()
    c = AgentClient(t, "node1")
    assert c.call("ping") == "ping"
    t.opened[-1].interrupt = True
    with pytest.raises(KeyboardInterrupt):
        c.call("wait")
    assert c.call("cancel") == "cancel"
    assert len(t.opened) == 2
