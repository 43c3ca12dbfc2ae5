"""Reaching the destination node *from the source node*, with OpenSSH and this node's own SSH setup.

A replication runs on the source node's agent: its consumer is ``ssh DEST zfs receive …`` and its
checks on the destination (listings, rollback, verification) go the same way. :class:`PeerHost` is
that destination as a :class:`~zfs_backend.hosts.base.Host`: it uses the node's own ``~/.ssh/config``
and known_hosts (nothing a request passes), and forces on the command line what must never depend on that
config: ``BatchMode=yes``, ``StrictHostKeyChecking=yes`` (a host key is never added), the cipher,
and keepalives (``ServerAliveInterval``/``CountMax``: a cut link ends the stream in about
``keepalive * count`` seconds instead of hanging).

The remote command is ``shlex.join(argv)`` after :func:`~zfs_backend.hosts.base.check_argv`; the
peer's name is a validated node name, so it can never be taken for an option.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import CommandFailed, CommandTimeout, HostUnreachable, ZfsBackendError
from .base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv
from .ciphers import CIPHERS, DEFAULT_CIPHER, validate_cipher
from .openssh import ControlConnection, control_dir_ready
from .validate import validate_node_name

__all__ = ["CIPHERS", "DEFAULT_CIPHER", "PeerHost", "validate_cipher"]

SSH_FAILED = 255  # what ssh exits with when the connection fails (a remote command may too)
# stderr of ssh itself when the connection (not the remote command) failed
_SSH_ERROR = re.compile(
    r"^ssh: |Connection (closed|reset|refused|timed out)|Host key verification failed|Permission denied"
    r"|Timeout, server .* not responding|kex_exchange_identification|Could not resolve hostname"
    r"|No route to host|Broken pipe|port \d+: ",
    re.MULTILINE,
)


_MASTER_LOCK = threading.Lock()
_MASTER_OK: dict[str, float] = {}  # control path -> when its master was last seen alive
_MASTER_RECHECK_S = 5.0


class PeerHost(Host):
    """Node ``name`` as reached from this node with OpenSSH (see the module doc)."""

    def __init__(
        self,
        name: str,
        *,
        cipher: str = DEFAULT_CIPHER,
        keepalive: int = 5,
        keepalive_count: int = 3,
        connect_timeout: int = 10,
        control_dir: str | None = None,
        control_persist: int = 600,
    ) -> None:
        self.name = validate_node_name(name)
        self.cipher = validate_cipher(cipher)
        self.keepalive = int(keepalive)
        self.keepalive_count = int(keepalive_count)
        self.connect_timeout = int(connect_timeout)
        self.control_dir = control_dir
        self.control_persist = int(control_persist)
        #: whether streams (not only control commands) share the ControlMaster: saves a handshake per
        #: stream; a dedicated connection lets several big streams use several cores
        self.stream_multiplex = False

    def _connection(self) -> ControlConnection | None:
        """The ControlMaster to this peer (one per peer and cipher: a stream over it is ciphered by the
        master), when multiplexing is configured and its directory is private."""
        if self.control_dir is None:
            return None
        try:
            control_dir_ready(Path(self.control_dir))
        except ZfsBackendError:
            return None
        return ControlConnection(
            name=self.name,
            options=self._base_opts(),
            dest=[self.name],
            control_dir=Path(self.control_dir),
            ident=f"{self.name}.{hashlib.sha256(self.cipher.encode()).hexdigest()[:6]}",
            persist=self.control_persist,
            connect_timeout=self.connect_timeout,
        )

    def _control_opts(self, multiplex: bool) -> list[str]:
        conn = self._connection() if multiplex else None
        if conn is None or not self._ensure_master(conn):
            return ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        # Clients only use the master; they never race to become one (that race makes ssh print
        # "ControlSocket … already exists, disabling multiplexing" into the command's stderr).
        return ["-o", "ControlMaster=no", "-o", f"ControlPath={conn.control_path}"]

    def _base_opts(self) -> list[str]:
        return [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", f"Ciphers={self.cipher}",
            "-o", f"ServerAliveInterval={self.keepalive}",
            "-o", f"ServerAliveCountMax={self.keepalive_count}",
            "-o", f"ConnectTimeout={self.connect_timeout}",
        ]  # fmt: skip

    def _ensure_master(self, conn: ControlConnection) -> bool:
        """A live master: trusted for a few seconds after it was last seen alive (no ``ssh -O check``
        before every command), else checked and started if missing, once for every process on this
        node (``ControlConnection`` serialises the start with a lock file). False: go direct."""
        path = str(conn.control_path)
        now = time.monotonic()
        with _MASTER_LOCK:
            if now - _MASTER_OK.get(path, -1e9) < _MASTER_RECHECK_S and os.path.exists(path):
                return True
        try:
            conn.ensure_master()
        except ZfsBackendError:
            with _MASTER_LOCK:
                _MASTER_OK.pop(path, None)
            return False
        with _MASTER_LOCK:
            _MASTER_OK[path] = now
        return True

    def ssh_prefix(self, *, multiplex: bool = False) -> list[str]:
        """``ssh [options] NAME --``: everything before the remote command. ``multiplex``: share a
        ControlMaster connection (control commands); streams always get their own connection."""
        return ["ssh", *self._base_opts(), *self._control_opts(multiplex), self.name, "--"]

    def stream_argv(self, argv: Sequence[str], *, multiplex: bool | None = None) -> list[str]:
        mux = self.stream_multiplex if multiplex is None else multiplex
        return [*self.ssh_prefix(multiplex=mux), shlex.join(check_argv(argv))]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> CommandResult:
        args = check_argv(argv)
        proc = subprocess.Popen(
            self.stream_argv(args, multiplex=True),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(self.name, args, timeout or 0) from None
        res = CommandResult(self.name, args, proc.returncode, out, err)
        if proc.returncode == SSH_FAILED and _SSH_ERROR.search(res.err_text):
            raise HostUnreachable(
                f"{self.name}: ssh failed running `{' '.join(args)}`: {res.err_text.strip()}"
            )
        if check and proc.returncode != 0:
            raise CommandFailed(self.name, args, proc.returncode, res.err_text)
        return res
