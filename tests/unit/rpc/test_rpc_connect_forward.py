"""The forwarded agent socket (``rpc.connect.ForwardedTransport``): a node whose sshd will not forward
sockets (``ForwardRefused``) is reached through ``zfs-backend rpc`` instead; any other failure to reach
the node is the agent being unavailable, never a silent fallback. Typed errors, not message text."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import pytest

from zfs_backend.errors import AgentUnavailable, ForwardRefused, HostUnreachable
from zfs_backend.rpc.connect import ForwardedTransport


class _Conn:
    def __init__(self, tmp: Path, failure: Exception) -> None:
        self.control_dir = tmp
        self.ident = "n1"
        self.failure = failure
        self.forwards = 0

    def argv(self, rest: list[str]) -> list[str]:
        return ["ssh", "n1", *rest]

    def forward(self, remote_socket: str) -> Path:
        self.forwards += 1
        raise self.failure


def _transport(tmp_path: Path, failure: Exception) -> tuple[ForwardedTransport, _Conn, list[str]]:
    conn = _Conn(tmp_path, failure)
    t = ForwardedTransport(conn, "/run/zfs-backend/agent.sock", ["zfs-backend", "rpc"], "n1")  # type: ignore[arg-type]
    opened: list[str] = []

    def fallback_open() -> tuple[IO[bytes], IO[bytes]]:
        opened.append("rpc")
        return (None, None)  # type: ignore[return-value]

    t._fallback._open = fallback_open  # type: ignore[method-assign]
    return t, conn, opened


def test_a_node_that_will_not_forward_is_reached_through_rpc(tmp_path: Path) -> None:
    t, conn, opened = _transport(tmp_path, ForwardRefused("n1: cannot forward the agent socket: refused"))
    t._open()
    assert opened == ["rpc"] and conn.forwards == 1
    t._open()  # remembered: no second forward attempt
    assert opened == ["rpc", "rpc"] and conn.forwards == 1


@pytest.mark.parametrize(
    "failure", [HostUnreachable("n1: ssh: Connection refused"), HostUnreachable("forward")]
)
def test_an_unreachable_node_is_an_unavailable_agent_not_a_fallback(tmp_path: Path, failure: Any) -> None:
    t, _conn, opened = _transport(tmp_path, failure)
    with pytest.raises(AgentUnavailable, match="n1"):
        t._open()
    assert opened == []
