"""The jobboard's password: a file, private, read with checks.

A conductor runs as root the flows it claims, with the parameters stored in the job; whoever can write
to the jobboard can make it run them. So the Redis of the jobboard requires a password (``requirepass``,
see :mod:`.redis_server`) and every client reads it from a file (``Settings.jobboard_password_file``,
default ``$ZFS_BACKEND_HOME/jobboard/password``, where ``zfs-backend jobboard up`` writes it):

* created by :func:`ensure_password`, mode 0600 in a 0700 directory (:mod:`zfs_backend.private`), a random
  token; kept across restarts of the server, so clients keep working;
* read by :func:`read_password` only when it is a regular file (not a symlink), the caller's own, and
  neither readable nor writable by group or others; anything else is a ``ConfigError`` naming the file.
  The password is one word of printable ASCII (it goes into redis.conf and an AUTH command).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path

from ..errors import ConfigError
from ..private import private_file

__all__ = ["ensure_password", "read_password"]

_WORD = re.compile(r"[!-~]{8,512}")  # printable ASCII, no space, no quote issues for redis.conf
_MAX = 4096


def read_password(path: str | os.PathLike[str]) -> str:
    """The password in ``path``, after the checks of the module doc."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(
            f"no jobboard password file {p}: `zfs-backend jobboard up` writes one; elsewhere set "
            "ZFS_BACKEND_JOBBOARD_PASSWORD_FILE to a 0600 file holding the Redis password"
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink, refused by O_NOFOLLOW
            raise ConfigError(f"jobboard password file {p} is not a regular file: refused") from None
        raise ConfigError(f"cannot read the jobboard password file {p}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"jobboard password file {p} is not a regular file: refused")
        if st.st_uid != os.geteuid():
            raise ConfigError(
                f"jobboard password file {p} belongs to uid {st.st_uid}, not to this user "
                f"(uid {os.geteuid()}): refused"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"jobboard password file {p} is readable or writable by group or others (mode "
                f"{mode:o}): refused; `chmod 600` it (and change the password: others may have read it)"
            )
        raw = os.read(fd, _MAX + 1)
    finally:
        os.close(fd)
    text = raw.decode("ascii", errors="replace").strip()
    if not text:
        raise ConfigError(f"jobboard password file {p} is empty")
    if len(raw) > _MAX or not _WORD.fullmatch(text):
        raise ConfigError(
            f"jobboard password file {p}: expected one word of 8-512 printable ASCII characters"
        )
    return text


def ensure_password(path: str | os.PathLike[str]) -> str:
    """The password in ``path``; a new random one written there (0600, directory 0700) when missing."""
    p = Path(path)
    if os.path.lexists(p):
        return read_password(p)
    private_file(p)
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
    finally:
        os.close(fd)
    return read_password(p)
