"""The source's side of the TLS data channel (:mod:`.tls_channel`): the consumer of a replication stream
sent with ``--transport tls``, run by the source's agent as ``python -m zfs_backend.replication.tls_send
DEST -- ssh … DEST "zfs-backend tls-recv zfs receive …"``.

It starts the ``ssh`` (the destination's ``peer-exec`` admits the receive under the grant and opens a
one-shot listener), reads the offer line on ssh's stdout, connects with this node's certificate (the
server's must name ``DEST``: ``check_hostname`` against the SAN), sends the one-time token inside TLS,
then copies its stdin (the activity's relay) into the TLS stream with 1 MiB reads and ``sendall`` of a
memoryview, ends with ``close_notify`` and waits for ssh: the status is the receive's when it failed,
else 1 when the channel failed, else 0. ssh's stdin stays open until the end (its EOF tells the
destination the source is gone). Cancel kills this process group (this process and its ssh).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .tls_channel import ACCEPT_TIMEOUT_S, CHUNK, MAGIC, ChannelRefused, context, keepalive, tls_dir

if TYPE_CHECKING:
    import ssl

__all__ = ["connect", "main", "parse_offer", "pump_from_fd", "send"]

_TOKEN_HEX = 64


def parse_offer(line: bytes) -> tuple[str, int, str]:
    import ipaddress

    words = line.decode("ascii", "replace").split()
    if len(words) != 4 or words[0] != MAGIC:
        raise ChannelRefused(f"the destination offered no TLS channel ({ascii(line)[:80]})")
    try:
        address = str(ipaddress.ip_address(words[1]))
        port = int(words[2])
    except ValueError:
        raise ChannelRefused(f"a malformed TLS offer ({ascii(line)[:80]})") from None
    token = words[3]
    if not 0 < port < 65536 or len(token) != _TOKEN_HEX or any(c not in "0123456789abcdef" for c in token):
        raise ChannelRefused(f"a malformed TLS offer ({ascii(line)[:80]})")
    return address, port, token


def connect(node: str, address: str, port: int, token: str, directory: str) -> ssl.SSLSocket:
    """The client's side: TLS 1.3 to ``address:port`` with this node's certificate; the server's
    certificate must name ``node``; then the token. Raises ``ChannelRefused``."""
    import socket
    import ssl

    ctx = context(directory, server=False)
    try:
        sock = socket.create_connection((address, port), timeout=ACCEPT_TIMEOUT_S)
    except OSError as e:
        raise ChannelRefused(f"cannot reach {node} at {address}:{port}: {e.strerror or e}") from None
    try:
        tls = ctx.wrap_socket(sock, server_hostname=node)
        tls.sendall(token.encode() + b"\n")
    except (ssl.SSLError, OSError) as e:
        sock.close()
        raise ChannelRefused(f"TLS to {node} failed: {getattr(e, 'reason', None) or e}") from None
    tls.settimeout(None)
    keepalive(tls)
    return tls


def pump_from_fd(src: int, tls: ssl.SSLSocket) -> None:
    """Copy ``src`` into the TLS stream (1 MiB reads, ``sendall`` of a memoryview) until EOF, then
    ``close_notify``."""
    import contextlib
    import io

    reader = io.FileIO(src, "rb", closefd=False)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := reader.readinto(buf):
        tls.sendall(view[:n])
    with contextlib.suppress(OSError, ValueError):
        tls.unwrap()


def send(node: str, ssh_argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``ssh_argv`` (the destination's ``tls-recv``), read its offer, stream stdin to it over TLS.
    The status is ssh's (the receive's) when it failed, else 1 when the channel failed, else 0."""
    import subprocess

    proc = subprocess.Popen(list(ssh_argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline(512)
        if not line:  # refused (peer-exec said why on stderr) or ssh failed
            rc = proc.wait()
            return rc or 1
        address, port, token = parse_offer(line)
        tls = connect(node, address, port, token, tls_dir(env))
    except ChannelRefused as e:
        print(f"zfs-backend tls: {node}: {e}", file=sys.stderr)
        proc.kill()
        proc.wait()
        return 1
    try:
        pump_from_fd(0, tls)
        failed = False
    except OSError as e:
        print(f"zfs-backend tls: {node}: the stream was cut: {e}", file=sys.stderr)
        failed = True
    finally:
        tls.close()
    rc = proc.wait()  # ssh's stdin stays open until here: its end would tell the destination to stop
    proc.stdin.close()
    return rc if rc != 0 else int(failed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zfs_backend.replication.tls_send NODE -- SSH_ARGV…``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m zfs_backend.replication.tls_send NODE -- SSH_ARGV...", file=sys.stderr)
        return 2
    return send(args[0], args[2:])


if __name__ == "__main__":
    raise SystemExit(main())
