"""Peer sessions on a real agent (a subprocess on a unix socket in tmp_path), reached as sshd reaches it
for a peer node's key: ``peer-exec --peer NODE``. The session's identity is the forced command's (the
bridge's own ``peer.hello``, before a byte of the peer's); a session without it, or with a second one,
is refused; the grant ops are the controller's socket's only."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from zfs_backend.errors import NotGranted, ProtocolError
from zfs_backend.rpc import AgentClient, CommandTransport, Node

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from test_agent_daemon import Agent

A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"


@pytest.fixture
def agent(tmp_path: Path):
    a = Agent(tmp_path)
    a.env["ZFS_BACKEND_REPLICA_ROOTS"] = "tank"
    a.start()
    yield a
    a.stop()


def _lines(sock_path: Path, *lines: bytes) -> list[dict]:
    """Send raw lines on a fresh connection; the answers until the agent hangs up."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock_path))
    s.sendall(b"".join(lines))
    s.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return [json.loads(x) for x in data.splitlines() if x.strip()]


def test_a_peer_session_must_begin_with_its_hello(agent: Agent) -> None:
    peer_sock = agent.sock.with_name("peer.sock")
    out = _lines(peer_sock, b'{"id":1,"op":"ping","args":{}}\n', b'{"id":2,"op":"ping","args":{}}\n')
    assert len(out) == 1 and "must begin with peer.hello" in out[0]["error"]["message"]  # and hung up
    out = _lines(peer_sock, b'{"id":1,"op":"peer.hello","args":{"peer":"Bad Name"}}\n')
    assert len(out) == 1 and "invalid node name" in out[0]["error"]["message"]
    hello = b'{"id":1,"op":"peer.hello","args":{"peer":"node2"}}\n'
    out = _lines(
        peer_sock, hello, b'{"id":2,"op":"ping","args":{}}\n', hello, b'{"id":4,"op":"ping","args":{}}\n'
    )
    assert out[0]["result"] == {"peer": "node2"} and out[1]["result"]["agent"] == "zfs-backend"
    assert "second peer.hello" in out[2]["error"]["message"] and len(out) == 3  # hung up
    # the controller's socket has no hello: it is not a peer session
    ctl = _lines(agent.sock, hello)
    assert "unknown op 'peer.hello'" in ctl[0]["error"]["message"]


def test_a_peer_cannot_forge_another_identity(agent: Agent) -> None:
    """Whatever the peer writes first, the bridge's hello came before it: a hello of its own is a second."""
    r = subprocess.run(
        agent.peer_exec_argv("node2"),
        input=b'{"id":1,"op":"peer.hello","args":{"peer":"node3"}}\n{"id":2,"op":"recv.status","args":{}}\n',
        capture_output=True,
        timeout=60,
    )
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 1 and "second peer.hello" in out[0]["error"]["message"]


def test_grants_are_made_on_the_controllers_socket_and_checked_on_the_peers(agent: Agent) -> None:
    ctl = Node.local(socket_path=agent.sock)
    peer2 = Node(AgentClient(CommandTransport(agent.peer_exec_argv("node2"))), "node1")
    peer3 = Node(AgentClient(CommandTransport(agent.peer_exec_argv("node3"))), "node1")
    with pytest.raises(NotGranted, match="replica roots"):
        ctl.client.call("grant.add", peer="node2", dataset="tank", allow=["create"])
    g = ctl.client.call("grant.add", peer="node2", dataset="tank/r1", allow=["create"])["grant"]
    assert [x["grant"] for x in ctl.client.call("grant.list")] == [g]
    begin = {"dataset": "tank/r1", "holder": A, "source": "node2:tank/src", "grant": g}
    with pytest.raises(NotGranted, match="holds no grant"):
        peer3.client.call("recv.begin", **begin)  # node2's grant, presented by node3
    with pytest.raises(NotGranted, match="no grant was presented"):
        peer2.client.call("recv.begin", **{**begin, "grant": None})
    assert ctl.client.call("grant.revoke", grant=g) == {"revoked": 1}
    with pytest.raises(NotGranted):
        peer2.client.call("recv.begin", **begin)
    for n in (ctl, peer2, peer3):
        n.close()


def test_peer_exec_refuses_a_receive_nobody_granted_and_a_key_naming_no_peer(agent: Agent) -> None:
    r = subprocess.run(
        agent.peer_exec_argv("node2", "zfs receive tank/victim"), input=b"", capture_output=True, timeout=60
    )
    assert r.returncode == 126 and r.stdout == b""
    assert r.stderr.decode().count("\n") == 1 and "holds no granted claim" in r.stderr.decode()
    argv = agent.peer_exec_argv("node2")[:-2]  # an old forced command: peer-exec alone
    r = subprocess.run(argv, input=b"", capture_output=True, timeout=60)
    assert r.returncode == 126 and "names no peer" in r.stderr.decode()
    r = subprocess.run(
        agent.peer_exec_argv("node2", "zfs-backend backup-read v1 b1"),
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 126 and "no backup grant" in r.stderr.decode()


def test_protocol_error_type_is_kept() -> None:
    assert issubclass(NotGranted, Exception) and not issubclass(NotGranted, ProtocolError)
