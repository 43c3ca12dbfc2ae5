"""The OpenSSH client, as this project runs it: strict options, and connections kept for reuse.

:func:`openssh_options` is the one place the client options are written (strict host keys against one
known_hosts file, one identity, batch mode, keepalives, the cipher). :class:`ControlConnection` keeps a
ControlMaster to a node alive between commands (``ControlPersist``), so that a command line, a status
query or a small replication does not pay an SSH handshake (~0.25 s here) each time, and forwards the
node agent's unix socket over it to a private local socket: a request then costs one round trip, with
no process started on the node. Nothing here imports paramiko.

The local side lives in a private directory (0700, owned by the user; sockets 0600 via
``StreamLocalBindMask``). Concurrent callers serialise the start of a master with a ``flock`` per node.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import shlex
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ForwardRefused, HostUnreachable, UsageError
from ..private import private_dir
from .base import check_argv

__all__ = [
    "MAX_CONTROL_DIR",
    "OPENSSH_KEX",
    "ControlConnection",
    "OpenSSHTarget",
    "control_dir_ready",
    "master_ident",
    "openssh_options",
    "stop_masters",
]

OPENSSH_KEX = "curve25519-sha256,curve25519-sha256@libssh.org"
# sun_path holds 108 bytes with the NUL; ssh binds dir + "/" + name (16) + ".<16 random>" first
MAX_CONTROL_DIR = 107 - 1 - 16 - 17


@dataclass(frozen=True)
class OpenSSHTarget:
    """A node as OpenSSH reaches it. Names and addresses must be validated by the caller."""

    name: str
    address: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    cipher: str
    keepalive: int = 5
    connect_timeout: float = 10.0
    ssh_config: str = "/dev/null"

    @property
    def ident(self) -> str:
        return master_ident(self.user, self.address, self.port)


def openssh_options(t: OpenSSHTarget) -> list[str]:
    """The client options (everything before ``-l user address``)."""
    return [
        "-F", t.ssh_config,
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={t.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",
        "-o", "IdentitiesOnly=yes",
        "-i", str(t.key_file),
        "-p", str(t.port),
        "-o", f"Ciphers={t.cipher}",
        "-o", f"ServerAliveInterval={t.keepalive}",
        "-o", "ServerAliveCountMax=3",
        "-o", f"KexAlgorithms={OPENSSH_KEX}",
        "-o", f"ConnectTimeout={max(1, math.ceil(t.connect_timeout))}",
    ]  # fmt: skip


def control_dir_ready(d: Path, what: str = "control dir") -> Path:
    """The private directory of masters and forwarded sockets: created 0700 (with its missing parents)
    when missing; one that exists must be ours with mode 0700, and is refused, never chmodded, when not."""
    if len(os.fsencode(d)) > MAX_CONTROL_DIR:
        raise UsageError(f"{what} {d} is too long for a unix socket path (at most {MAX_CONTROL_DIR} bytes)")
    private_dir(d)
    st = d.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise HostUnreachable(f"{what} {d} is not a directory owned by us")
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise HostUnreachable(f"{what} {d} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700")
    return d


class ControlConnection:
    """A ControlMaster (socket ``control_dir/ident``) to a node, kept ``persist`` seconds after its last
    use. ``options``: the client options (without ControlMaster/ControlPath); ``dest``: how ssh names
    the node (``-l user address``, or a name the user's ssh config knows)."""

    def __init__(
        self,
        *,
        name: str,
        options: Sequence[str],
        dest: Sequence[str],
        control_dir: Path,
        ident: str,
        persist: int = 600,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.options = list(options)
        self.dest = list(dest)
        self.control_dir = control_dir
        self.ident = ident
        self.persist = int(persist)
        self.connect_timeout = connect_timeout

    @classmethod
    def to(cls, target: OpenSSHTarget, control_dir: Path, persist: int = 600) -> ControlConnection:
        """A master to ``target`` with this project's strict options (:func:`openssh_options`)."""
        return cls(
            name=target.name,
            options=openssh_options(target),
            dest=["-l", target.user, target.address],
            control_dir=control_dir,
            ident=target.ident,
            persist=persist,
            connect_timeout=target.connect_timeout,
        )

    @property
    def control_path(self) -> Path:
        return self.control_dir / self.ident

    def _base(self) -> list[str]:
        return ["ssh", *self.options, "-o", f"ControlPath={self.control_path}"]

    def _dest(self) -> list[str]:
        return list(self.dest)

    def argv(self, remote: Sequence[str]) -> list[str]:
        """``ssh`` running ``remote`` on the node through the master (started on demand by ssh itself
        when missing: ``ControlMaster=auto``)."""
        return [
            *self._base(),
            "-o", "ControlMaster=auto",
            "-o", f"ControlPersist={self.persist}",
            *self._dest(), "--", shlex.join(check_argv(remote)),
        ]  # fmt: skip

    def direct_argv(self, remote: Sequence[str]) -> list[str]:
        """``ssh`` running ``remote`` on its own connection (no master)."""
        return [
            "ssh", *self.options, "-o", "ControlMaster=no", "-o", "ControlPath=none",
            *self._dest(), "--", shlex.join(check_argv(remote)),
        ]  # fmt: skip

    def _ctl(self, op: str, *extra: str, timeout: float = 15.0) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._base(), *extra, "-O", op, *self._dest()],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def alive(self) -> bool:
        return self.control_path.exists() and self._ctl("check").returncode == 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        control_dir_ready(self.control_dir)
        fd = os.open(self.control_dir / f"{self.ident}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ensure_master(self) -> None:
        """A live master, started (once, whoever asks first) when missing. Raises ``HostUnreachable``."""
        with self._locked():
            if self.alive():
                return
            with contextlib.suppress(FileNotFoundError):
                self.control_path.unlink()  # a dead master's socket
            res = subprocess.run(
                [*self._base(), "-o", "ControlMaster=yes", "-o", f"ControlPersist={self.persist}",
                 # for the agent socket it may forward: replace a stale file, create it 0600
                 "-o", "StreamLocalBindUnlink=yes", "-o", "StreamLocalBindMask=0177",
                 "-N", "-f", *self._dest()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                timeout=self.connect_timeout + 15, check=False, start_new_session=True,
            )  # fmt: skip
            if res.returncode != 0:
                why = res.stderr.decode(errors="replace").strip().splitlines()
                raise HostUnreachable(
                    f"{self.name}: ssh: {why[-1] if why else 'exit ' + str(res.returncode)}"
                )

    def forward(self, remote_socket: str) -> Path:
        """Forward the node's unix socket ``remote_socket`` to a private local socket (through the master,
        started if needed); returns the local path. Idempotent."""
        local = self.control_dir / f"{self.ident}.agent"
        self.ensure_master()
        with self._locked():
            res = self._ctl("forward", "-L", f"{local}:{remote_socket}")
        if res.returncode != 0:
            why = res.stderr.decode(errors="replace").strip().splitlines()
            raise ForwardRefused(
                f"{self.name}: cannot forward the agent socket: {why[-1] if why else res.returncode}"
            )
        return local

    def stop(self) -> None:
        if self.control_path.exists():
            self._ctl("exit", timeout=10)


def master_ident(user: str, address: str, port: int = 22) -> str:
    """The name of the master socket for ``user@address:port`` in a control directory."""
    return hashlib.sha256(f"{user}@{address}:{port}".encode()).hexdigest()[:16]


def stop_masters(control_dir: Path, idents: Sequence[str] | None = None) -> int:
    """Ask the masters in ``control_dir`` (only ``idents``, when given) to exit, e.g. when the lab they
    served goes down. Returns how many stopped."""
    stopped = 0
    if not control_dir.is_dir():
        return 0
    for sock in control_dir.iterdir():
        if idents is not None and sock.name not in idents:
            continue
        try:
            if not stat.S_ISSOCK(sock.lstat().st_mode) or sock.suffix:
                continue
        except OSError:
            continue
        res = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "zfs-backend-master"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        stopped += res.returncode == 0
    return stopped
