"""Channel I/O for :meth:`SSHHost.run <zfs_backend.hosts.ssh.SSHHost.run>`: drain, feed, remote pid.

:func:`pump` drains stdout or stderr of a paramiko channel into a list, :func:`feed` sends the
input then EOF; each runs in its own thread. :data:`PID_WRAPPER` prefixes a command so it reports
its pid on stderr first (``exec`` keeps the pid), which :func:`split_pid` takes off again: a
timed-out command can then be SIGKILLed, since sshd does not kill a command whose channel closes
and refuses the SSH "signal" request for root logins.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import paramiko

__all__ = ["PID_WRAPPER", "feed", "pump", "remaining", "split_pid"]

_READ_CHUNK = 1 << 20
_PID_TAG = b"zfs-backend-pid:"
PID_WRAPPER = ("sh", "-c", 'echo "zfs-backend-pid:$$" >&2 && exec "$@"', "sh")


def remaining(deadline: float | None) -> float | None:
    """Seconds left until the ``time.monotonic()`` ``deadline`` (never negative); None: no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def pump(recv: Callable[[int], bytes], sink: list[bytes]) -> None:
    try:
        while True:
            data = recv(_READ_CHUNK)
            if not data:
                return
            sink.append(data)
    except (OSError, EOFError, paramiko.SSHException):
        return


def feed(chan: paramiko.Channel, data: bytes | None) -> None:
    try:
        if data:
            chan.sendall(data)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        return  # the command closed its stdin early (e.g. `head`), or the channel is gone


def split_pid(err: list[bytes]) -> tuple[int | None, bytes]:
    """Split the wrapper's ``zfs-backend-pid:N`` line off the stderr collected so far."""
    data = b"".join(err)
    if not data.startswith(_PID_TAG):
        return None, data
    line, sep, rest = data.partition(b"\n")
    if not sep:
        return None, b""  # the pid line has not fully arrived
    digits = line[len(_PID_TAG) :]
    return (int(digits) if digits.isdigit() else None), rest
