"""The one paramiko connection an :class:`~zfs_backend.hosts.ssh.SSHHost` reuses for its commands.

:class:`ParamikoConnection` connects lazily, checks the host key against one ``known_hosts`` file
(unknown keys are rejected with :class:`~zfs_backend.errors.HostKeyMismatch`, nothing ever adds one),
uses only the given key (no agent, no default keys), prefers AES-GCM and curve25519, keeps the
transport alive, and reconnects once when a transport turns out dead. Every failure is a typed error
naming the node.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import paramiko

from ..errors import HostKeyMismatch, HostUnreachable

__all__ = ["ParamikoConnection", "error_reason", "known_hosts_name"]

# Preferred by paramiko when available (measured faster with AES-NI); the rest of its list follows.
_PARAMIKO_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# paramiko names curve25519 only by its libssh.org alias (same algorithm as curve25519-sha256).
_PARAMIKO_KEX = ("curve25519-sha256@libssh.org",)


def known_hosts_name(address: str, port: int) -> str:
    """The name a host is looked up by in known_hosts: ``address`` or ``[address]:port``."""
    return address if port == 22 else f"[{address}]:{port}"


def error_reason(e: BaseException) -> str:
    """One line saying why ``e`` happened: an OSError's strerror, else the first line of its text."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _prefer(available: Sequence[str], first: Sequence[str]) -> list[str]:
    head = [x for x in first if x in available]
    return head + [x for x in available if x not in head]


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that raises our typed error, naming the node and the known_hosts file."""

    def __init__(self, conn: ParamikoConnection) -> None:
        self._conn = conn

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        c = self._conn
        raise HostKeyMismatch(
            f"{c.name}: host key of {hostname} ({key.get_name()} {key.fingerprint}) "
            f"is not in known_hosts {c.known_hosts}"
        )


class ParamikoConnection:
    """A lazily made, shared paramiko connection to ``user@address:port`` (names validated by the caller).

    ``connect_count`` counts the connections made so far (for tests and metrics).
    """

    def __init__(
        self,
        name: str,
        address: str,
        *,
        port: int,
        user: str,
        key_file: Path,
        known_hosts: Path,
        connect_timeout: float,
        keepalive: int,
    ) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.user = user
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.connect_count = 0
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None

    def _make_transport(self, sock: Any, **kwargs: Any) -> paramiko.Transport:
        t = paramiko.Transport(sock, disabled_algorithms=kwargs.get("disabled_algorithms"))
        opts = t.get_security_options()
        opts.ciphers = tuple(_prefer(opts.ciphers, _PARAMIKO_CIPHERS))
        opts.kex = tuple(_prefer(opts.kex, _PARAMIKO_KEX))
        return t

    def _connect(self) -> paramiko.SSHClient:
        where = f"{self.address}:{self.port}"
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except OSError as e:
            client.close()
            raise HostKeyMismatch(
                f"{self.name}: cannot read known_hosts {self.known_hosts}: {error_reason(e)}"
            ) from e
        client.set_missing_host_key_policy(_RejectUnknownHost(self))
        ct = self.connect_timeout
        try:
            client.connect(
                self.address,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file),
                timeout=ct,
                banner_timeout=ct,
                auth_timeout=ct,
                channel_timeout=ct,
                allow_agent=False,
                look_for_keys=False,
                transport_factory=self._make_transport,
            )
        except HostKeyMismatch:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyMismatch(
                f"{self.name}: host key of {known_hosts_name(self.address, self.port)} changed: got "
                f"{e.key.get_name()} {e.key.fingerprint}, known_hosts {self.known_hosts} has "
                f"{e.expected_key.fingerprint}"
            ) from e
        except paramiko.AuthenticationException as e:
            client.close()
            raise HostUnreachable(
                f"{self.name}: {where}: authentication as {self.user} with key {self.key_file} "
                f"failed: {error_reason(e)}"
            ) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise HostUnreachable(f"{self.name}: cannot connect to {where}: {error_reason(e)}") from e
        transport = client.get_transport()
        if transport is None:  # pragma: no cover - connect() returned without a transport
            client.close()
            raise HostUnreachable(f"{self.name}: cannot connect to {where}: no transport")
        if self.keepalive > 0:
            transport.set_keepalive(self.keepalive)
        self.connect_count += 1
        return client

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting (or reconnecting a dead one) under the lock."""
        with self._lock:
            client = self._client
            if client is not None:
                t = client.get_transport()
                if t is not None and t.is_active():
                    return t
                client.close()
                self._client = None
            self._client = self._connect()
            t = self._client.get_transport()
            assert t is not None
            return t

    def _drop(self, transport: paramiko.Transport) -> None:
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._client.close()
                self._client = None

    @property
    def transport(self) -> paramiko.Transport | None:
        """The current paramiko transport, if connected (no connection is made)."""
        client = self._client
        return client.get_transport() if client is not None else None

    def open_channel(self) -> paramiko.Channel:
        """A fresh session channel; reconnects once if the transport turns out dead."""
        last: BaseException | None = None
        for _ in range(2):
            transport = self._transport()
            try:
                return transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                last = e
                self._drop(transport)
        assert last is not None
        raise HostUnreachable(
            f"{self.name}: {self.address}:{self.port}: cannot open a session: {error_reason(last)}"
        ) from last

    def close(self) -> None:
        """Close the connection. Idempotent; the next :meth:`open_channel` connects again."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
