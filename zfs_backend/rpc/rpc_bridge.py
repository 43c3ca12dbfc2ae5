"""``zfs-backend rpc``: bridge stdin/stdout to the local agent's unix socket.

Run on a node over SSH (``ssh NODE zfs-backend rpc``), it gives the controller one persistent byte
stream per node, over which the client sends many line-delimited requests (a status query is one
round trip). Bytes are copied both ways unchanged; when stdin reaches EOF the bridge half-closes the
socket and exits once the agent has answered everything. If the agent is not running, the bridge
answers each request line with an ``AgentUnavailable`` error (so the client gets one clear line),
and exits 7 at EOF.

``hello`` (``peer-exec --peer NODE`` bridging a peer node to the peer socket): before a single byte of
the client's is copied, the bridge writes its own ``peer.hello`` line naming the peer and reads the
agent's answer itself, so the session's identity is the forced command's, never one the peer wrote
(a second hello from the peer is refused by the agent). A refused hello answers every request line
with that refusal, as an absent agent does.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
from typing import TYPE_CHECKING, BinaryIO

from ..errors import AgentUnavailable, ProtocolError
from .protocol import HELLO_OP, decode, encode, response

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Settings

__all__ = ["bridge", "rpc_bridge", "say_hello"]

BUF = 1 << 16


def _answer_unavailable(stdin_fd: int, stdout_fd: int, why: str) -> int:
    err = AgentUnavailable(why)
    pending = b""
    while True:
        data = os.read(stdin_fd, BUF)
        if not data:
            return err.exit_code
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            req_id = None
            with contextlib.suppress(Exception):
                req_id = decode(line).get("id")
            if line.strip():
                _write_all(stdout_fd, encode(response(req_id, error=err)))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def say_hello(sock: socket.socket, peer: str) -> bytes:
    """Open a peer session on ``sock``: write ``peer.hello`` and read the agent's answer. Returns what
    the agent sent after that answer (nothing, normally). Raises ``AgentUnavailable`` if refused."""
    sock.sendall(encode({"id": 0, "op": HELLO_OP, "args": {"peer": peer}}))
    buf = b""
    while b"\n" not in buf:
        data = sock.recv(BUF)
        if not data:
            raise AgentUnavailable("the agent closed the peer session at its hello")
        buf += data
    line, rest = buf.split(b"\n", 1)
    answer = decode(line)
    if "error" in answer:
        err = answer.get("error") or {}
        raise AgentUnavailable(
            f"peer session refused: {err.get('message', err) if isinstance(err, dict) else err}"
        )
    return rest


def bridge(stdin: BinaryIO, stdout: BinaryIO, socket_path: Path | str, *, hello: str | None = None) -> int:
    """Copy ``stdin`` → agent socket and agent socket → ``stdout`` until both directions end; with
    ``hello``, open a peer session for that peer first (see the module doc)."""
    in_fd, out_fd = stdin.fileno(), stdout.fileno()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
        early = say_hello(sock, hello) if hello is not None else b""
    except (OSError, AgentUnavailable, ProtocolError) as e:
        sock.close()
        why = f"no agent at {socket_path}: {e.strerror or e}" if isinstance(e, OSError) else str(e)
        return _answer_unavailable(in_fd, out_fd, why)
    if early:
        _write_all(out_fd, early)
    s_fd = sock.fileno()
    reading_stdin = True
    try:
        while True:
            rlist = [s_fd] + ([in_fd] if reading_stdin else [])
            ready, _, _ = select.select(rlist, [], [])
            if in_fd in ready:
                data = os.read(in_fd, BUF)
                if data:
                    sock.sendall(data)
                else:
                    reading_stdin = False
                    sock.shutdown(socket.SHUT_WR)
            if s_fd in ready:
                data = sock.recv(BUF)
                if not data:
                    return 0
                _write_all(out_fd, data)
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        sock.close()


def rpc_bridge(settings: Settings, *, peer: bool = False) -> int:
    """Entry point for ``zfs-backend rpc``: bridge this process's stdin/stdout to the agent (its peer
    socket with ``peer``)."""
    return bridge(
        sys.stdin.buffer, sys.stdout.buffer, settings.peer_socket if peer else settings.agent_socket
    )
