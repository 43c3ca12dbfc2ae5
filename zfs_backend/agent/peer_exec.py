"""``zfs-backend peer-exec``: the forced command of a peer node's key (``command=`` in ``authorized_keys``).

A storage node's own SSH key is written into its peers' ``authorized_keys`` as
``restrict,from="<the peer's address>",command="<zfs-backend> peer-exec --peer <node>" <key>``: whatever
command the peer asks for, sshd runs this instead, with the request in ``SSH_ORIGINAL_COMMAND``, and
``--peer`` says which node is asking (the key's, never the peer's word). It allows exactly what
replication needs, with every name validated, and nothing else:

* ``zfs-backend rpc --peer``: a **peer session** to this node's agent on its peer socket: the bridge
  writes ``peer.hello`` naming the peer before a byte of the peer's own, and the agent answers only the
  receiving end of replications and backups, under the controller's grants (``replication.authority``);
* ``zfs receive [-s] [-u] [-o readonly=on] DATASET`` (also spelled ``recv``): the stream of a
  replication, only into a dataset the peer holds a granted claim on (``peer.admit`` asked of the agent
  first). Never ``-F``: a plain receive refuses a destination that changed. Never mounted where the
  node's ZFS has ``-u`` (added), and no property in the stream can place a mount: on a ZFS with ``-x``
  (OpenZFS) ``mountpoint``, ``sharenfs`` and ``sharesmb`` are excluded; elsewhere (zfs-fuse) the stream's
  first record is read here and a stream whose properties name any of them is refused, then the bytes
  are handed on to ``zfs receive`` through a 1 MiB pipe with ``os.splice`` (no slower than a pipe);
* ``zfs-backend unpack CODEC zfs receive …``: the same receive, of a stream compressed on the wire
  (``replication.compress``: the codec's fixed argv decompresses stdin first, and the checks above see
  the decompressed stream);
* ``zfs-backend tls-recv zfs receive …``: the same receive, admitted the same way, whose stream arrives
  over the TLS data channel instead of the SSH channel (``replication.tls_channel``: a one-shot listener,
  the client's certificate must name this peer, a one-time token; fd 0 becomes the stream);
* ``zfs-backend backup-write VOLUME BACKUP`` / ``zfs-backend backup-read VOLUME BACKUP`` (a backup node):
  write the stream of a backup this node's agent opened for this peer (a new ``.partial`` file, never over
  an existing one) / read a complete backup's stream of a volume the peer holds a grant for or wrote
  (failing at the end if its SHA-256 does not match). Both ids are validated; the files are only ever
  those of ``kinds.backupstore`` under the node's backup directory.

Without ``--peer NODE`` (an old forced command) everything is refused.

Anything else is refused with one line on stderr and exit status 126. The request is split like a
shell would split plain words (``shlex``), and the allowed command is run with ``execv`` (no shell), so
quoting tricks have nothing to reach. This module imports only what validation needs: it starts in a
few tens of milliseconds, once per SSH session (plus one round trip to the local agent for a stream).
"""

from __future__ import annotations

import os
import re
import shlex
import struct
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import CodecMissing
from ..errors import PeerExecRefused as Refused  # the name the tests and this module use
from ..hosts.validate import validate_node_name
from ..node_sockets import peer_socket_path
from ..replication.compress import parse_unpack, start_unpack
from ..replication.tls_channel import ChannelRefused, parse_tls_recv
from ..zfs.namecheck import check_dataset_name

__all__ = ["REFUSED", "check_stream_head", "main", "parse_request"]

REFUSED = 126
_BACKUP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ZFS_PATHS = ("/usr/sbin/zfs", "/sbin/zfs", "/usr/local/sbin/zfs", "/usr/bin/zfs")
#: properties a receive may set: a new replica is made read-only as it arrives (OpenZFS)
_RECV_PROPERTIES = {"readonly=on"}
#: properties a stream may not carry (they place a mount or an export anywhere on the node)
MOUNT_PROPERTIES = ("mountpoint", "sharenfs", "sharesmb")
_DRR_BEGIN = 0
_BACKUP_MAGIC = 0x2F5BACBAC
_RECORD = 312  # sizeof(dmu_replay_record_t)
_MAX_PAYLOAD = 64 << 20
_PIPE = 1 << 20


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
        target = check_dataset_name(rest[0])
    except Exception as e:
        raise Refused(str(e)) from None
    return [*out, target]


def parse_request(command: str | None) -> tuple[str, list[str]]:
    """What to run for ``SSH_ORIGINAL_COMMAND``: ``("rpc-peer", [])``, ``("zfs", argv)`` or
    ``("backup-write"|"backup-read", [volume, backup])``.
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
    if prog == "zfs-backend" and len(words) == 4 and words[1] in ("backup-write", "backup-read"):
        for w in words[2:]:
            if not _BACKUP_ID.fullmatch(w):
                raise Refused(f"invalid backup or volume id {ascii(w)[:80]}")
        return words[1], words[2:]
    if prog == "zfs" and len(words) >= 2 and words[1] in ("receive", "recv"):
        return "zfs", _receive_argv(words[2:])
    over_tls = parse_tls_recv(words)
    if (
        over_tls is not None
        and len(over_tls) >= 2
        and over_tls[0] == "zfs"
        and over_tls[1] in ("receive", "recv")
    ):
        return "zfs@tls", _receive_argv(over_tls[2:])
    try:
        unpack = parse_unpack(words)
    except ValueError as e:
        raise Refused(str(e)) from None
    if (
        unpack is not None
        and len(unpack[1]) >= 2
        and unpack[1][0] == "zfs"
        and unpack[1][1] in ("receive", "recv")
    ):
        return f"zfs+{unpack[0]}", _receive_argv(unpack[1][2:])
    raise Refused(f"{' '.join(words[:2])!r} is not allowed for a peer node")


def _zfs() -> str:
    for path in _ZFS_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise Refused("zfs is not installed on this node")


def check_stream_head(head: bytes) -> None:
    """Refuse a send stream whose first record (a ``DRR_BEGIN``, and its payload: the properties of a
    ``send -p``/``-R`` compound stream) names a property in ``MOUNT_PROPERTIES``. ``head`` is the first
    record and its whole payload. A name is looked for as bytes anywhere in the payload (XDR or native
    encoding store it plainly): a dataset or snapshot named like one is refused too, on the safe side."""
    if len(head) < 16:
        raise Refused("not a zfs send stream (too short)")
    for order in ("<", ">"):
        drr_type, payload_len = struct.unpack(order + "II", head[:8])
        (magic,) = struct.unpack(order + "Q", head[8:16])
        if magic == _BACKUP_MAGIC:
            break
    else:
        raise Refused("not a zfs send stream (no BEGIN record)")
    if drr_type != _DRR_BEGIN:
        raise Refused("not a zfs send stream (the first record is not BEGIN)")
    payload = head[_RECORD : _RECORD + payload_len]
    for prop in MOUNT_PROPERTIES:
        if prop.encode() in payload:
            raise Refused(f"the stream carries {prop!r} (streams that set mounts or shares are refused)")


def _read_exactly(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_stream_head(fd: int) -> bytes:
    """The first record of the stream on ``fd`` and its payload (what ``check_stream_head`` reads)."""
    head = _read_exactly(fd, _RECORD)
    if len(head) < _RECORD:
        return head
    for order in ("<", ">"):
        (magic,) = struct.unpack(order + "Q", head[8:16])
        if magic == _BACKUP_MAGIC:
            (payload_len,) = struct.unpack(order + "I", head[4:8])
            if payload_len > _MAX_PAYLOAD:
                raise Refused(
                    f"the stream's first record carries {payload_len} bytes (at most {_MAX_PAYLOAD})"
                )
            return head + _read_exactly(fd, payload_len)
    return head


def _ask(peer: str, request: dict[str, Any], socket_path: str) -> dict[str, Any]:
    """``peer.admit`` on this node's agent, in a peer session of ``peer``. Raises ``Refused``."""
    import json
    import socket

    from ..rpc.rpc_bridge import say_hello

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
        rest = say_hello(sock, peer)
        sock.sendall(json.dumps({"id": 1, "op": "peer.admit", "args": request}).encode() + b"\n")
        while b"\n" not in rest:
            data = sock.recv(1 << 16)
            if not data:
                raise Refused("the agent hung up")
            rest += data
        answer = json.loads(rest.split(b"\n", 1)[0])
    except OSError as e:
        raise Refused(f"this node's agent is not reachable: {e.strerror or e}") from None
    except Exception as e:  # AgentUnavailable, a garbled answer
        raise Refused(str(e)) from None
    finally:
        sock.close()
    if "error" in answer:
        err = answer["error"]
        raise Refused(str(err.get("message", err)) if isinstance(err, dict) else str(err))
    result = answer.get("result")
    return result if isinstance(result, dict) else {}


def _receive_argv_for(argv: list[str], admitted: dict[str, Any]) -> tuple[list[str], bool]:
    """The final argv and whether the stream's head must be checked here (no ``-x`` on this ZFS)."""
    flags, target = argv[:-1], argv[-1]
    if admitted.get("recv_no_mount") and "-u" not in flags:
        flags.append("-u")
    if admitted.get("recv_properties"):
        for prop in MOUNT_PROPERTIES:
            flags += ["-x", prop]
        return [*flags, target], False
    return [*flags, target], True


def _relay_receive(zfs: str, argv: list[str], unpacker: int | None = None) -> int:
    """Run ``zfs receive`` on the stream once its first record is checked: the head is written into a
    1 MiB pipe and the rest spliced after it (stdin -> pipe, in the kernel).

    ``zfs receive`` is started first, reading the empty pipe, while the head is read and checked: its
    start-up (tens of milliseconds on zfs-fuse) overlaps the stream's first bytes instead of following
    them. It has read nothing when a refused head kills it, so a refusal leaves no trace on the node.

    ``unpacker``: the pid of the decompressor feeding stdin (``start_unpack``, a stream compressed on the
    wire), killed with the receiver on a refused head, else reaped at the end: the status is the
    receive's when it failed, else the decompressor's."""
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, _PIPE)  # F_SETPIPE_SZ
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.dup2(r, 0)
        os.close(r)
        os.close(w)
        os.execv(zfs, [zfs, *argv])  # noqa: S606 - a validated argv, no shell
    os.close(r)
    try:
        head = read_stream_head(0)
        check_stream_head(head)
    except Refused:
        import signal

        for child in (pid, unpacker):
            if child is not None:
                os.kill(child, signal.SIGKILL)
        os.close(w)
        for child in (pid, unpacker):
            if child is not None:
                os.waitpid(child, 0)
        raise
    try:
        view = memoryview(head)
        while view:
            view = view[os.write(w, view) :]
        try:
            while os.splice(0, w, _PIPE) > 0:
                pass
        except OSError as e:
            if e.errno != 22:  # EINVAL: this stdin cannot be spliced; copy it
                raise
            while chunk := os.read(0, _PIPE):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(w, view) :]
    except BrokenPipeError:
        pass  # zfs receive gave up: its status says why
    finally:
        os.close(w)
    code = _status(pid)
    if unpacker is not None:
        unpacked = _status(unpacker)
        return code if code != 0 else unpacked
    return code


def _status(pid: int) -> int:
    """The exit status of child ``pid`` as a shell gives it (128 + N for a signal N)."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _peer_of(argv: Sequence[str]) -> str:
    if len(argv) != 2 or argv[0] != "--peer":
        raise Refused("this key's forced command names no peer (peer-exec --peer NODE)")
    try:
        return validate_node_name(argv[1])
    except Exception as e:
        raise Refused(str(e)) from None


def main(environ: dict[str, str] | None = None, argv: Sequence[str] | None = None) -> int:
    """``argv``: peer-exec's own arguments (``--peer NODE``; default: the process's)."""
    env = os.environ if environ is None else environ
    args = sys.argv[2:] if argv is None else list(argv)
    try:
        peer = _peer_of(args)
        what, req = parse_request(env.get("SSH_ORIGINAL_COMMAND"))
        if what == "rpc-peer":
            from ..rpc.rpc_bridge import bridge

            return bridge(sys.stdin.buffer, sys.stdout.buffer, peer_socket_path(env), hello=peer)
        if what == "zfs" or what.startswith(("zfs+", "zfs@")):
            admitted = _ask(peer, {"what": "receive", "dataset": req[-1]}, peer_socket_path(env))
            zfs = _zfs()
            final, check = _receive_argv_for(req, admitted)
            unpacker = None
            if what == "zfs@tls":  # over the TLS channel: fd 0 becomes the stream (its pump's pid)
                from ..replication.tls_channel import serve

                try:
                    unpacker = serve(peer, env)
                except ChannelRefused as e:
                    raise Refused(str(e)) from None
            elif what.startswith("zfs+"):  # compressed on the wire: fd 0 becomes the decompressed stream
                try:
                    unpacker = start_unpack(what.removeprefix("zfs+"))
                except CodecMissing as e:
                    raise Refused(str(e)) from None
            if not check:
                os.execv(zfs, [zfs, *final])  # noqa: S606 - a validated argv, no shell
            return _relay_receive(zfs, final, unpacker)
        _ask(peer, {"what": what, "volume": req[0], "backup": req[1]}, peer_socket_path(env))
    except Refused as e:
        client = env.get("SSH_CLIENT", "?").split(" ")[0]
        print(f"zfs-backend peer-exec: refused by the peer ({client}): {e}", file=sys.stderr)
        return REFUSED
    from ..config import load_settings

    return _backup(what, req, load_settings(dict(env)).backup_dir)


def _backup(what: str, ids: list[str], root: object) -> int:
    from ..errors import ZfsBackendError
    from ..kinds.backupstore import BackupStore, read_stream, write_stream

    store = BackupStore(str(root))
    try:
        if what == "backup-write":
            write_stream(store, ids[0], ids[1], sys.stdin.buffer)
        else:
            read_stream(store, ids[0], ids[1], sys.stdout.buffer)
    except (ZfsBackendError, OSError) as e:
        print(f"zfs-backend {what}: {e}", file=sys.stderr)
        return 1
    return 0
