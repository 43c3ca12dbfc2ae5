"""The TLS data channel of a replication stream (``--transport tls``): mutual TLS between two nodes'
certificates, for trusted storage networks; the control plane stays on SSH.

One stream, one listener, one connection::

    source (the activity's consumer)                     destination (peer-exec, under the grant)
    tls_send DEST -- ssh DEST "zfs-backend tls-recv zfs receive …"
                                             ─ssh─▶  peer.admit (the grant, as for any receive)
                                                     listen on ADDR:ephemeral, one-time token
                       ◀─ "zfs-backend-tls ADDR PORT TOKEN" on the SSH channel ─
    connect ADDR:PORT, TLS 1.3, node certificate ─▶  accept ONE connection, close the listener;
    server certificate must name DEST                 client certificate must chain to the CA and
    send TOKEN inside TLS                   ─────▶    name the granted peer; TOKEN must match
    relay → TLS (1 MiB reads, sendall)     ═════▶    TLS → 1 MiB pipe → (head check) → zfs receive
    close_notify; wait for ssh's status     ◀─ssh─    the receive's status

Invariants:

* Authority is unchanged: the receive is admitted by ``peer-exec`` exactly as over SSH (the key's
  ``--peer``, a live claim under the controller's grant) **before** a port is opened, and the TLS client
  must be that same peer (its certificate's SAN), holding the token that only that SSH session saw.
* Exactly one connection: the listener is closed as soon as one connection is accepted, whatever it
  then proves; a connection that fails the handshake, names another node or brings a wrong token refuses
  the receive (one line, status 126) before ``zfs receive`` reads a byte. A listener nobody reaches in
  ``ACCEPT_TIMEOUT_S`` refuses too.
* TLS 1.3 only, both ways; each side trusts the CA in its own TLS directory alone (not the system's).
* A stream cut short is never a complete stream: the destination treats an EOF without TLS
  ``close_notify`` and the SSH channel closing before the end as a failure (the pump exits non-zero and
  ``zfs receive`` sees a truncated stream, as it does when ``ssh`` dies today).
* Everything else is the SSH path's: the relay before the channel counts, suspends and rate-limits;
  cancel kills the consumer's process group (this sender and its ``ssh``); restarts build a new channel.

The source's side is :mod:`.tls_send`. Files: ``ca.pem``, ``node.pem``, ``node.key`` in
``$ZFS_BACKEND_TLS_DIR`` (default ``/etc/zfs-backend/tls``), issued by the controller's CA
(:mod:`zfs_backend.hosts.pki`). The listener's address is ``$ZFS_BACKEND_TLS_ADDRESS`` when set, else
the address the SSH session reached (``SSH_CONNECTION``): the storage network the nodes already use.
This module is imported by ``peer-exec`` on every stream: its top imports only ``os``, ``sys`` and
``errors`` (which peer-exec loads anyway).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ChannelRefused

if TYPE_CHECKING:
    import ssl

__all__ = [
    "ACCEPT_TIMEOUT_S",
    "DEFAULT_TLS_DIR",
    "ChannelRefused",
    "Listener",
    "accept",
    "authenticate",
    "check_tls",
    "credentials_missing",
    "listen",
    "parse_tls_recv",
    "pump_to_fd",
    "recv_argv",
    "send_argv",
    "serve",
    "server_context",
    "tls_dir",
    "tls_ready",
]

DEFAULT_TLS_DIR = "/etc/zfs-backend/tls"
MAGIC = "zfs-backend-tls"
CHUNK = 1 << 20
ACCEPT_TIMEOUT_S = 30.0
_TOKEN_HEX = 64
_FILES = ("ca.pem", "node.pem", "node.key")


def tls_dir(env: Mapping[str, str] | None = None) -> str:
    """This node's TLS directory (``$ZFS_BACKEND_TLS_DIR``, default ``/etc/zfs-backend/tls``)."""
    e = os.environ if env is None else env
    return e.get("ZFS_BACKEND_TLS_DIR") or DEFAULT_TLS_DIR


def credentials_missing(directory: str) -> str | None:
    """None when ``directory`` holds a node's three files, else a line saying what is missing."""
    missing = [f for f in _FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        return f"no TLS certificate: {', '.join(missing)} missing in {directory}"
    return None


def tls_ready(env: Mapping[str, str] | None = None) -> bool:
    """Whether this node has its TLS files (the agent's ``ping`` says so to the source)."""
    return credentials_missing(tls_dir(env)) is None


def check_tls(node: str, peer_agent: Callable[[str], Any], destination: str) -> None:
    """Refuse (``UsageError``, one line) before anything starts when this node (``node``) or
    ``destination`` has no TLS certificate: the destination's agent says so in ``ping``."""
    from ..errors import UsageError

    why = credentials_missing(tls_dir())
    if why is not None:
        raise UsageError(f"cannot replicate over tls: {node} has {why} (replicate with --transport ssh)")
    if not peer_agent(destination).call("ping").get("tls"):
        raise UsageError(
            f"cannot replicate over tls: {destination} has no TLS certificate (its agent says so; "
            "`zfs-backend lab up` or the ansible role installs one); replicate with --transport ssh"
        )


def context(directory: str, *, server: bool) -> ssl.SSLContext:
    import ssl

    why = credentials_missing(directory)
    if why is not None:
        raise ChannelRefused(why)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_TICKET
    try:
        ctx.load_verify_locations(cafile=os.path.join(directory, "ca.pem"))
        ctx.load_cert_chain(os.path.join(directory, "node.pem"), os.path.join(directory, "node.key"))
    except (OSError, ssl.SSLError) as e:
        raise ChannelRefused(f"unreadable TLS files in {directory}: {e}") from None
    if not server:
        ctx.check_hostname = True
    return ctx


def keepalive(sock: Any) -> None:
    """TCP keepalives: a cut link ends the stream in ~20 s instead of hanging."""
    import socket

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


def _san_names(cert: Mapping[str, Any] | None) -> list[str]:
    return [str(v) for k, v in (cert or {}).get("subjectAltName", ()) if k == "DNS"]


# -- the source's argv and the destination's remote command ------------------------------------------


def recv_argv(receive_argv: Sequence[str]) -> list[str]:
    """The remote command that has the destination's ``peer-exec`` take the stream over TLS."""
    return ["zfs-backend", "tls-recv", *receive_argv]


def parse_tls_recv(words: Sequence[str]) -> list[str] | None:
    """``zfs-backend tls-recv REST…`` → ``REST``; None when ``words`` is not that shape."""
    if len(words) < 3 or os.path.basename(words[0]) != "zfs-backend" or words[1] != "tls-recv":
        return None
    return list(words[2:])


def send_argv(node: str, ssh_argv: Sequence[str]) -> list[str]:
    """The consumer on the source: ``ssh_argv`` (to ``node``'s ``tls-recv``) started, then the stream
    on this process's stdin sent to ``node`` over TLS."""
    return [sys.executable, "-m", "zfs_backend.replication.tls_send", node, "--", *ssh_argv]


# -- the destination (inside peer-exec) ---------------------------------------------------------------


def _listen_address(env: Mapping[str, str]) -> str:
    import ipaddress

    value = env.get("ZFS_BACKEND_TLS_ADDRESS") or ""
    if not value:
        parts = env.get("SSH_CONNECTION", "").split()
        value = parts[2] if len(parts) == 4 else ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ChannelRefused(f"no address to listen on for TLS ({ascii(value)[:60]})") from None


def _accept_one(listener: Any, watch_fd: int, timeout: float) -> Any:
    """The one connection ``listener`` takes; refused when ``watch_fd`` (the SSH channel) ends or
    nobody connects within ``timeout``. The listener is closed either way."""
    import select

    try:
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(watch_fd, select.POLLIN | select.POLLHUP)
        for fd, _ in poller.poll(int(timeout * 1000)):
            if fd == listener.fileno():
                conn, _ = listener.accept()
                return conn
        for fd, _ in poller.poll(0):
            if fd == watch_fd:
                raise ChannelRefused("the source's SSH session ended before it connected")
        raise ChannelRefused(f"no TLS connection within {timeout:g} s")
    finally:
        listener.close()


def authenticate(conn: Any, ctx: ssl.SSLContext, peer: str, token: str, timeout: float) -> ssl.SSLSocket:
    """TLS on the accepted ``conn``: the client's certificate chains to the CA (the context's) and names
    ``peer``; then ``token`` inside TLS. Raises ``ChannelRefused`` (the connection closed)."""
    import hmac
    import ssl

    conn.settimeout(timeout)
    try:
        tls = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
    except (ssl.SSLError, OSError) as e:
        conn.close()
        raise ChannelRefused(f"TLS handshake failed: {getattr(e, 'reason', None) or e}") from None
    try:
        names = _san_names(tls.getpeercert())
        if peer not in names:
            raise ChannelRefused(f"the TLS client's certificate names {names or 'nobody'}, not {peer}")
        got = bytearray()
        while len(got) < _TOKEN_HEX + 1:
            chunk = tls.recv(_TOKEN_HEX + 1 - len(got))
            if not chunk:
                break
            got += chunk
        if not hmac.compare_digest(bytes(got), token.encode() + b"\n"):
            raise ChannelRefused("wrong or missing one-time token")
    except (ssl.SSLError, OSError) as e:
        tls.close()
        raise ChannelRefused(f"TLS connection failed: {e}") from None
    except ChannelRefused:
        tls.close()
        raise
    tls.settimeout(None)
    keepalive(tls)
    return tls


class Listener:
    """A one-shot listener: its socket, where it listens and the one-time token it expects."""

    def __init__(self, sock: Any, address: str, port: int, token: str) -> None:
        self.sock, self.address, self.port, self.token = sock, address, port, token

    @property
    def offer(self) -> str:
        """The line the source reads on the SSH channel."""
        return f"{MAGIC} {self.address} {self.port} {self.token}\n"


def listen(env: Mapping[str, str]) -> Listener:
    """A listener on this node's storage address (``_listen_address``), an ephemeral port, a new token."""
    import socket

    address = _listen_address(env)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((address, 0))
        sock.listen(1)
    except OSError as e:
        sock.close()
        raise ChannelRefused(f"cannot listen on {address}: {e.strerror or e}") from None
    return Listener(sock, address, sock.getsockname()[1], os.urandom(_TOKEN_HEX // 2).hex())


def accept(
    listener: Listener, ctx: ssl.SSLContext, peer: str, watch_fd: int, timeout: float = ACCEPT_TIMEOUT_S
) -> ssl.SSLSocket:
    """The one connection ``listener`` takes (then it is closed), authenticated: the client's
    certificate names ``peer`` and it sends the token. Raises ``ChannelRefused``."""
    conn = _accept_one(listener.sock, watch_fd, timeout)
    return authenticate(conn, ctx, peer, listener.token, timeout)


def server_context(env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The listener's TLS context: this node's certificate, the CA alone trusted, TLS 1.3 only."""
    return context(tls_dir(env), server=True)


def serve(peer: str, env: Mapping[str, str], *, timeout: float = ACCEPT_TIMEOUT_S) -> int:
    """In ``peer-exec``, once the receive is admitted: open the one-shot listener, tell the source where
    (on stdout, the SSH channel), authenticate the one connection, then make fd 0 the stream: a child
    pumps TLS into a 1 MiB pipe that becomes this process's stdin. Returns the pump's pid (its status:
    0 after ``close_notify``, 1 on a cut stream). Raises ``ChannelRefused``."""
    ctx = server_context(env)
    listener = listen(env)
    os.write(1, listener.offer.encode())
    return _start_pump(accept(listener, ctx, peer, 0, timeout))


def _start_pump(tls: ssl.SSLSocket) -> int:
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, CHUNK)  # F_SETPIPE_SZ
    except OSError:
        pass
    watch = os.dup(0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            code = pump_to_fd(tls, w, watch)
        finally:
            os._exit(code)
    os.close(w)
    os.close(watch)
    tls.close()
    os.dup2(r, 0)
    os.close(r)
    return pid


def pump_to_fd(tls: ssl.SSLSocket, out: int, watch: int | None = None) -> int:
    """Copy the TLS stream into ``out`` until ``close_notify`` (0, answered with ours) or a cut (1: a
    ragged EOF, a reset, ``watch`` — the SSH channel — ending first). Reads fill a 1 MiB buffer before
    each write."""
    import contextlib
    import ssl
    import threading

    done = threading.Event()
    if watch is not None:

        def _watch() -> None:
            while os.read(watch, 4096):
                pass
            if not done.is_set():
                os.write(2, b"zfs-backend tls-recv: the source's SSH session ended mid-stream\n")
                os._exit(1)

        threading.Thread(target=_watch, daemon=True).start()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while True:
            filled = 0
            while filled < CHUNK:
                n = tls.recv_into(view[filled:])
                if n == 0:
                    break
                filled += n
                if not tls.pending() and filled >= CHUNK // 4:
                    break
            part = view[:filled]
            while part:
                part = part[os.write(out, part) :]
            if filled == 0 or n == 0:
                done.set()
                with contextlib.suppress(OSError, ValueError):
                    tls.unwrap()  # our close_notify: the source learns the whole stream arrived
                return 0
    except BrokenPipeError:
        return 1  # the receive gave up: its own status says why
    except (ssl.SSLError, OSError) as e:
        os.write(2, f"zfs-backend tls-recv: the stream was cut: {e}\n".encode())
        return 1
