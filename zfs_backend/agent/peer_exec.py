"""``zfs-backend peer-exec``: the forced command of a peer node's key (``command=`` in ``authorized_keys``).

A storage node's own SSH key is written into its peers' ``authorized_keys`` as
``restrict,from="<the peers' addresses>",command="<zfs-backend> peer-exec" <key>``: whatever command
the peer asks for, sshd runs this instead, with the request in ``SSH_ORIGINAL_COMMAND``. It allows
exactly what replication needs, with every name validated, and nothing else:

* ``zfs-backend rpc --peer``: a session to this node's agent on its **peer** socket, which answers only
  the receiving end of replications (``recv.*``) and ``ping``;
* ``zfs receive [-s] [-u] [-o readonly=on] DATASET`` (also spelled ``recv``): the stream of a
  replication. Never ``-F``: a plain receive refuses a destination that changed.

Anything else is refused with one line on stderr and exit status 126. The request is split like a
shell would split plain words (``shlex``), and the allowed command is run with ``execv`` (no shell), so
quoting tricks have nothing to reach. This module imports only what validation needs: it starts in a
few tens of milliseconds, once per SSH session.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from ..zfs.names import parse_dataset

__all__ = ["REFUSED", "main", "parse_request"]

REFUSED = 126
_ZFS_PATHS = ("/usr/sbin/zfs", "/sbin/zfs", "/usr/local/sbin/zfs", "/usr/bin/zfs")
#: properties a receive may set: a new replica is made read-only as it arrives (OpenZFS)
_RECV_PROPERTIES = {"readonly=on"}


class Refused(Exception):
    pass


def _receive_argv(args: Sequence[str]) -> list[str]:
    out = ["receive"]
    rest = list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-s", "-u"):
            out.append(flag)
        elif flag == "-o" and rest and rest[0] in _RECV_PROPERTIES:
            out += ["-o", rest.pop(0)]
        else:
            raise Refused(f"zfs receive option {flag!r} is not allowed")
    if len(rest) != 1:
        raise Refused("zfs receive takes exactly one dataset")
    try:
        target = parse_dataset(rest[0])
    except Exception as e:
        raise Refused(str(e)) from None
    return [*out, str(target)]


def parse_request(command: str | None) -> tuple[str, list[str]]:
    """What to run for ``SSH_ORIGINAL_COMMAND``: ``("rpc-peer", [])`` or ``("zfs", argv)``.
    Raises ``Refused`` naming what is not allowed."""
    if not command:
        raise Refused("an interactive session is not allowed")
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise Refused(f"unreadable command: {e}") from None
    if not words:
        raise Refused("empty command")
    prog = os.path.basename(words[0])
    if prog == "zfs-backend" and words[1:] == ["rpc", "--peer"]:
        return "rpc-peer", []
    if prog == "zfs" and len(words) >= 2 and words[1] in ("receive", "recv"):
        return "zfs", _receive_argv(words[2:])
    raise Refused(f"{' '.join(words[:2])!r} is not allowed for a peer node")


def _zfs() -> str:
    for path in _ZFS_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise Refused("zfs is not installed on this node")


def main(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        what, argv = parse_request(env.get("SSH_ORIGINAL_COMMAND"))
        if what == "zfs":
            zfs = _zfs()
            os.execv(zfs, [zfs, *argv])  # noqa: S606 - a validated argv, no shell
    except Refused as e:
        client = env.get("SSH_CLIENT", "?").split(" ")[0]
        print(f"zfs-backend peer-exec: refused by the peer ({client}): {e}", file=sys.stderr)
        return REFUSED
    from ..config import load_settings
    from .rpc_bridge import bridge

    return bridge(sys.stdin.buffer, sys.stdout.buffer, load_settings().peer_socket)
