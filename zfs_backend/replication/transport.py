"""Reaching the destination node *from the source node*, with OpenSSH and this node's own SSH setup.

A replication runs on the source node's agent: its consumer is ``ssh DEST zfs receive …`` and its
checks on the destination (listings, rollback, verification) go the same way. :class:`PeerHost` is
that destination as a :class:`~zfs_backend.hosts.base.Host`: it uses the node's ``~/.ssh/config``
(or ``ssh_config``) and known_hosts, and forces on the command line what must never depend on that
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
from collections.abc import Sequence

from ..errors import CommandFailed, CommandTimeout, HostUnreachable, InvalidName
from ..hosts.base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv
from ..hosts.ssh import validate_node_name

__all__ = ["DEFAULT_CIPHER", "PeerHost", "validate_cipher"]

DEFAULT_CIPHER = "aes128-gcm@openssh.com"
_CIPHER_RE = re.compile(r"[A-Za-z0-9@.+-]+(?:,[A-Za-z0-9@.+-]+)*")
SSH_FAILED = 255  # what ssh exits with when the connection fails (a remote command may too)
# stderr of ssh itself when the connection (not the remote command) failed
_SSH_ERROR = re.compile(
    r"^ssh: |Connection (closed|reset|refused|timed out)|Host key verification failed|Permission denied"
    r"|Timeout, server .* not responding|kex_exchange_identification|Could not resolve hostname"
    r"|No route to host|Broken pipe|port \d+: ",
    re.MULTILINE,
)


def validate_cipher(cipher: str) -> str:
    if not isinstance(cipher, str) or not _CIPHER_RE.fullmatch(cipher):
        raise InvalidName(f"invalid ssh cipher {cipher!r}")
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
        ssh_config: str | None = None,
        control_dir: str | None = None,
        control_persist: int = 30,
    ) -> None:
        self.name = validate_node_name(name)
        self.cipher = validate_cipher(cipher)
        self.keepalive = int(keepalive)
        self.keepalive_count = int(keepalive_count)
        self.connect_timeout = int(connect_timeout)
        if ssh_config is not None and (not isinstance(ssh_config, str) or not os.path.isabs(ssh_config)):
            raise InvalidName(f"ssh_config must be an absolute path, not {ssh_config!r}")
        self.ssh_config = ssh_config
        self.control_dir = control_dir
        self.control_persist = int(control_persist)

    def _control_opts(self, multiplex: bool) -> list[str]:
        if not multiplex or self.control_dir is None:
            return ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        with contextlib.suppress(OSError):
            os.makedirs(self.control_dir, mode=0o700, exist_ok=True)
        st = os.lstat(self.control_dir) if os.path.isdir(self.control_dir) else None
        if st is None or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        return [
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self.control_dir}/%C",
            "-o", f"ControlPersist={self.control_persist}",
        ]  # fmt: skip

    def ssh_prefix(self, *, multiplex: bool = False) -> list[str]:
        """``ssh [options] NAME --``: everything before the remote command. ``multiplex``: share a
        ControlMaster connection (control commands); streams always get their own connection."""
        argv = ["ssh"]
        if self.ssh_config is not None:
            argv += ["-F", self.ssh_config]
        argv += [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", f"Ciphers={self.cipher}",
            "-o", f"ServerAliveInterval={self.keepalive}",
            "-o", f"ServerAliveCountMax={self.keepalive_count}",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            *self._control_opts(multiplex),
            self.name,
            "--",
        ]  # fmt: skip
        return argv

    def stream_argv(self, argv: Sequence[str], *, multiplex: bool = False) -> list[str]:
        return [*self.ssh_prefix(multiplex=multiplex), shlex.join(check_argv(argv))]

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
