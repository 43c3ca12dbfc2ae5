"""A session opened while the far agent is not there yet (a peer node booting: sshd up, its agent a few
seconds later) must not stay broken. The far end's bridge (``zfs-backend rpc``, the peer's forced
command) answers every line of such a session with ``AgentUnavailable`` for as long as it lives; the
client now drops the session on that answer, so the next call opens a new one and reaches the agent.

Found in CI on the Vagrant tier: a replication whose destination VM rebooted retried for minutes
against a session its first retry had opened before the destination's agent was up (``no agent at
/run/zfs-backend/peer.sock``), while a new ``ssh`` to that node reached its agent at once."""

from __future__ import annotations

import socketserver
import sys
import threading
from pathlib import Path

import pytest

from zfs_backend.errors import AgentUnavailable
from zfs_backend.rpc.client import AgentClient
from zfs_backend.rpc.protocol import decode, encode
from zfs_backend.rpc.transport import CommandTransport


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            req = decode(line)
            self.wfile.write(encode({"id": req["id"], "result": req["op"]}))


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.sock"


def bridge_argv(sock: Path) -> list[str]:
    """The real bridge, as the forced command runs it, to ``sock``."""
    code = (
        "import sys; from zfs_backend.rpc.rpc_bridge import bridge; "
        f"sys.exit(bridge(sys.stdin.buffer, sys.stdout.buffer, {str(sock)!r}))"
    )
    return [sys.executable, "-c", code]


def test_a_session_opened_before_the_agent_is_replaced_once_it_is_up(sock_path: Path) -> None:
    client = AgentClient(CommandTransport(bridge_argv(sock_path), name="peer"), node="peer")
    try:
        with pytest.raises(AgentUnavailable, match="no agent at"):
            client.call("recv.status")
        server = socketserver.ThreadingUnixStreamServer(str(sock_path), _Echo)  # the agent comes up
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            assert client.call("recv.status") == "recv.status"  # a new session: the agent answers
            assert client.call("ping") == "ping"  # and it is kept
        finally:
            client.close()  # first: the server's close waits for its sessions to end
            server.shutdown()
            server.server_close()
    finally:
        client.close()


def test_an_agent_that_stays_away_is_still_one_clear_error_per_call(sock_path: Path) -> None:
    client = AgentClient(CommandTransport(bridge_argv(sock_path), name="peer"), node="peer")
    try:
        for _ in range(3):
            with pytest.raises(AgentUnavailable, match=f"no agent at {sock_path}"):
                client.call("ping")
    finally:
        client.close()
