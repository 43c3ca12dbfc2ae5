"""The TLS data channel (``replication.tls_channel`` / ``tls_send``) on loopback with real certificates:
the one connection a listener takes must carry a certificate of the CA naming the granted peer and the
listener's one-time token; everything else is refused and nothing is received. Also the stream itself
(bytes equal, ``close_notify`` vs a cut) and what ``peer-exec`` lets through."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.agent.peer_exec import Refused, parse_request
from zfs_backend.errors import UsageError
from zfs_backend.hosts import pki
from zfs_backend.replication import tls_channel as T
from zfs_backend.replication import tls_send as S
from zfs_backend.replication.request import Request

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """TLS directories: node1..node3 of the CA, and a node1 of another CA."""
    root = tmp_path_factory.mktemp("tls")
    out = {}
    for node in ("node1", "node2", "node3"):
        pki.write_node_files(root / node, pki.issue_node(root / "ca", node))
        out[node] = str(root / node)
    pki.write_node_files(root / "rogue", pki.issue_node(root / "other-ca", "node1"))
    out["rogue"] = str(root / "rogue")
    return out


class Server:
    """node2's listener for peer node1, accepting in a thread; ``result`` is the socket or the refusal."""

    def __init__(self, dirs: dict[str, str], *, peer: str = "node1", serve_as: str = "node2") -> None:
        self.env = {"ZFS_BACKEND_TLS_DIR": dirs[serve_as], "ZFS_BACKEND_TLS_ADDRESS": "127.0.0.1"}
        self.listener = T.listen(self.env)
        self.watch_r, self.watch_w = os.pipe()
        self.result: Any = None
        ctx = T.server_context(self.env)

        def run() -> None:
            try:
                self.result = T.accept(self.listener, ctx, peer, self.watch_r, timeout=10)
            except T.ChannelRefused as e:
                self.result = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(15)
        os.close(self.watch_r)
        os.close(self.watch_w)
        return self.result

    def refused(self) -> str:
        res = self.join()
        assert isinstance(res, T.ChannelRefused), res
        # exactly one connection: the listener is gone
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", self.listener.port), timeout=2).close()
        return str(res)


def _client(dirs: dict[str, str], srv: Server, who: str = "node1", token: str | None = None) -> Any:
    try:
        return S.connect("node2", "127.0.0.1", srv.listener.port, token or srv.listener.token, dirs[who])
    except T.ChannelRefused as e:
        return e


def _send_and_receive(tls_out: ssl.SSLSocket, tls_in: ssl.SSLSocket, data: bytes) -> tuple[int, bytes]:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    got = bytearray()
    status: list[int] = []

    def receive() -> None:
        status.append(T.pump_to_fd(tls_in, dst_w))
        os.close(dst_w)

    def drain() -> None:
        while chunk := os.read(dst_r, 1 << 16):
            got.extend(chunk)

    threads = [threading.Thread(target=receive), threading.Thread(target=drain)]
    for t in threads:
        t.start()

    def feed() -> None:
        os.write(src_w, data)
        os.close(src_w)

    feeder = threading.Thread(target=feed)
    feeder.start()
    S.pump_from_fd(src_r, tls_out)
    tls_out.close()
    for t in [feeder, *threads]:
        t.join(30)
    os.close(src_r)
    os.close(dst_r)
    return status[0], bytes(got)


def test_a_stream_crosses_whole_between_the_granted_nodes(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    client = _client(dirs, srv)
    server = srv.join()
    assert isinstance(server, ssl.SSLSocket), server
    assert server.version() == "TLSv1.3"
    data = os.urandom(3 << 20) + b"tail"
    status, got = _send_and_receive(client, server, data)
    assert status == 0
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_a_cut_stream_is_not_a_complete_one(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    client = _client(dirs, srv)
    server = srv.join()
    client.sendall(b"x" * 100_000)
    client.shutdown(socket.SHUT_RDWR)  # no close_notify: a cut link, a killed sender
    client.close()
    r, w = os.pipe()
    try:
        assert T.pump_to_fd(server, w) == 1
    finally:
        os.close(w)
        os.close(r)


def test_a_client_without_a_certificate_is_refused(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(dirs["node1"], "ca.pem"))
    with socket.create_connection(("127.0.0.1", srv.listener.port)) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="node2") as tls:
                tls.sendall(srv.listener.token.encode() + b"\n")
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
    assert "handshake failed" in srv.refused()


def test_a_certificate_of_another_ca_is_refused(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    res = _client(dirs, srv, "rogue")
    assert isinstance(res, T.ChannelRefused)  # its CA does not know node2's either
    assert "handshake failed" in srv.refused()


def test_another_nodes_certificate_is_refused(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    client = _client(dirs, srv, "node3")
    assert "names ['node3'], not node1" in srv.refused()
    if isinstance(client, ssl.SSLSocket):
        client.close()


@pytest.mark.parametrize("case", ["wrong", "reused"])
def test_a_wrong_or_reused_token_is_refused(dirs: dict[str, str], case: str) -> None:
    if case == "reused":  # the token of an earlier listener, whose stream went through
        first = Server(dirs)
        old = first.listener.token
        c = _client(dirs, first)
        first.join().close()
        c.close()
    else:
        old = "0" * 64
    srv = Server(dirs)
    client = _client(dirs, srv, token=old)
    assert "token" in srv.refused()
    if isinstance(client, ssl.SSLSocket):
        client.close()


def test_a_second_connection_is_refused(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    client = _client(dirs, srv)
    assert isinstance(srv.join(), ssl.SSLSocket)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.listener.port), timeout=2).close()
    client.close()


def test_the_source_refuses_a_server_that_is_not_the_destination(dirs: dict[str, str]) -> None:
    srv = Server(dirs, serve_as="node3")  # node3 answers where node2 was expected
    res = _client(dirs, srv)
    assert isinstance(res, T.ChannelRefused)
    assert "node2" in str(res)
    srv.join()


def test_the_ssh_session_ending_before_a_connection_refuses(dirs: dict[str, str]) -> None:
    srv = Server(dirs)
    os.close(srv.watch_w)
    srv.thread.join(15)
    assert "SSH session ended" in str(srv.result)
    os.close(srv.watch_r)


def test_a_node_without_files_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(T.ChannelRefused, match=r"no TLS certificate: ca\.pem, node\.pem, node\.key missing"):
        T.server_context({"ZFS_BACKEND_TLS_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    "line",
    [b"", b"zfs-backend-tls 127.0.0.1 0 " + b"a" * 64, b"zfs-backend-tls x 1 " + b"a" * 64, b"hello\n",
     b"zfs-backend-tls 127.0.0.1 9 " + b"A" * 64],
)  # fmt: skip
def test_a_malformed_offer_is_refused(line: bytes) -> None:
    with pytest.raises(T.ChannelRefused):
        S.parse_offer(line)


def test_peer_exec_takes_a_receive_over_tls_and_nothing_more() -> None:
    assert parse_request("zfs-backend tls-recv zfs receive -s tank/a") == (
        "zfs@tls",
        ["receive", "-s", "tank/a"],
    )
    with pytest.raises(Refused, match="-F"):
        parse_request("zfs-backend tls-recv zfs receive -F tank/a")
    with pytest.raises(Refused):
        parse_request("zfs-backend tls-recv zfs destroy tank/a")


def test_the_request_takes_the_transport() -> None:
    base = {
        "snapshot": "tank/a@s1",
        "source_node": "node1",
        "destination_node": "node2",
        "destination": "tank/a",
    }
    assert Request.from_params(base).transport == "ssh"
    req = Request.from_params({**base, "transport": "tls"})
    assert req.transport == "tls" and req.to_params()["transport"] == "tls"
    assert "transport" not in Request.from_params(base).to_params()  # old agents take it
    with pytest.raises(UsageError, match="transport must be one of ssh, tls"):
        Request.from_params({**base, "transport": "udp"})
    with pytest.raises(UsageError, match="compress"):
        Request.from_params({**base, "transport": "tls", "compress": "zstd"})


class _Agent:
    def __init__(self, tls: bool) -> None:
        self.tls = tls

    def call(self, op: str) -> dict[str, Any]:
        assert op == "ping"
        return {"tls": self.tls}


def test_a_node_without_a_certificate_refuses_the_start_in_one_line(
    dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZFS_BACKEND_TLS_DIR", str(tmp_path))  # the source has none
    with pytest.raises(UsageError, match="node1 has no TLS certificate"):
        T.check_tls("node1", lambda n: _Agent(True), "node2")
    monkeypatch.setenv("ZFS_BACKEND_TLS_DIR", dirs["node1"])
    with pytest.raises(UsageError, match="node2 has no TLS certificate"):
        T.check_tls("node1", lambda n: _Agent(False), "node2")
    T.check_tls("node1", lambda n: _Agent(True), "node2")


def test_every_stream_of_a_tls_replication_goes_through_the_channel() -> None:
    from collections.abc import Sequence
    from types import SimpleNamespace

    from zfs_backend.hosts.local import LocalHost
    from zfs_backend.replication.restart import RestartOps

    class Peer(LocalHost):
        stream_multiplex = False

        def stream_argv(self, argv: Sequence[str], *, multiplex: bool | None = None) -> list[str]:
            return ["ssh", "node2", "--", *argv]

    ops = RestartOps()
    ops._local, ops._peer = LocalHost("node1"), Peer("node2")  # type: ignore[assignment]
    recv = ["zfs", "receive", "-s", "tank/r"]
    ops.request = SimpleNamespace(compress=None, transport="tls", destination_node="node2")  # type: ignore[assignment]
    end = ops._recv_endpoint(recv)
    assert end.host is ops._local
    i = end.argv.index("zfs_backend.replication.tls_send")
    assert end.argv[i + 1 :] == ["node2", "--", "ssh", "node2", "--", "zfs-backend", "tls-recv", *recv]
