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
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from ..errors import CommandFailed, CommandTimeout, HostUnreachable, InvalidName
from ..hosts.base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv
from ..hosts.validate import validate_node_name

__all__ = ["CIPHERS", "DEFAULT_CIPHER", "PeerHost", "validate_cipher"]

DEFAULT_CIPHER = "aes128-gcm@openssh.com"
#: the ciphers a request may pick for its stream (all authenticated or CTR modes OpenSSH 9 offers)
CIPHERS = frozenset(
    {
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    }
)
SSH_FAILED = 255  # what ssh exits with when the connection fails (a remote command may too)
# stderr of ssh itself when the connection (not the remote command) failed
_SSH_ERROR = re.compile(
    r"^ssh: |Connection (closed|reset|refused|timed out)|Host key verification failed|Permission denied"
    r"|Timeout, server .* not responding|kex_exchange_identification|Could not resolve hostname"
    r"|No route to host|Broken pipe|port \d+: ",
    re.MULTILINE,
)


_MASTER_LOCK = threading.Lock()
_MASTER_LOCKS: dict[str, threading.Lock] = {}
_MASTER_OK: dict[str, float] = {}  # control path -> when its master was last seen alive
_MASTER_RECHECK_S = 5.0


def validate_cipher(cipher: str) -> str:
    if not isinstance(cipher, str) or cipher not in CIPHERS:
        raise InvalidName(f"invalid ssh cipher {cipher!r}: one of {', '.join(sorted(CIPHERS))}")
    return cipher


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

    def _control_path(self) -> str | None:
        """The ControlMaster socket, when multiplexing is configured and its directory is private."""
        if self.control_dir is None:
            return None
        with contextlib.suppress(OSError):
            os.makedirs(self.control_dir, mode=0o700, exist_ok=True)
        st = os.lstat(self.control_dir) if os.path.isdir(self.control_dir) else None
        if st is None or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        return f"{self.control_dir}/{self.name}"

    def _control_opts(self, multiplex: bool) -> list[str]:
        path = self._control_path() if multiplex else None
        if path is None or not self._ensure_master(path):
            return ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        # Clients only use the master; they never race to become one (that race makes ssh print
        # "ControlSocket … already exists, disabling multiplexing" into the command's stderr).
        return ["-o", "ControlMaster=no", "-o", f"ControlPath={path}"]

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

    def _ensure_master(self, path: str) -> bool:
        """A live ControlMaster at ``path``: checked at most every few seconds, started (once, under a
        per-path lock shared by every activity of this process) when missing. False: go direct."""
        with _MASTER_LOCK:
            lock = _MASTER_LOCKS.setdefault(path, threading.Lock())
        with lock:
            now = time.monotonic()
            if now - _MASTER_OK.get(path, -1e9) < _MASTER_RECHECK_S and os.path.exists(path):
                return True
            base = ["ssh", *self._base_opts(), "-o", f"ControlPath={path}"]
            alive = (
                subprocess.run(
                    [*base, "-O", "check", self.name], capture_output=True, check=False, timeout=10
                ).returncode
                == 0
            )
            if not alive:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a dead master's socket
                started = subprocess.run(
                    [*base, "-o", "ControlMaster=yes", "-o", f"ControlPersist={self.control_persist}",
                     "-N", "-f", self.name],
                    # the daemonised master keeps whatever it was given: never a pipe we wait on
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    check=False, timeout=self.connect_timeout + 5, start_new_session=True,
                ).returncode == 0  # fmt: skip
                if not started:
                    _MASTER_OK.pop(path, None)
                    return False
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
