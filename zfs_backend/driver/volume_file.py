"""The driver's root operations on a volume's ``volume`` file, run on the node by
``zfs-backend volume-file``: size it (create it when missing), give it its owner and mode. They touch
a regular file or nothing.

A granted client writes in the volume's directory; with ``secure_file_operations=false`` its root is
root there, so it can replace ``volume`` by a symbolic link (to ``/etc/passwd`` on the node, say), a
FIFO or a device node. ``truncate``, ``chmod`` and ``chown`` by path would follow the link (coreutils'
``chmod`` and ``truncate`` have no way not to; only ``chown -h``), so each operation here is done on
one file descriptor, with no check-then-use race:

* the volume's mountpoint (root's, the export's root, which no client can rename) is opened as a
  directory (``O_DIRECTORY|O_NOFOLLOW``); the path above it is the parent dataset's, never exported;
* ``volume`` in it is opened ``O_PATH|O_NOFOLLOW`` — a handle on whatever the name is, a link itself
  rather than its target, opening no device — and ``fstat`` must say a regular file, else the
  operation is refused (:class:`~zfs_backend.driver.errors.UnsafeVolumeFile`) and nothing is touched;
* the change goes through that very inode: ``/proc/self/fd/N`` reopened for ``ftruncate``, and
  ``chown``/``chmod`` on it. A missing file is created ``O_CREAT|O_EXCL|O_NOFOLLOW``.

Answers are one JSON object on stdout (``{"error", "type"}`` and the error's exit code when refused).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError, ZfsBackendError
from .errors import UnsafeVolumeFile
from .exports_format import MAX_ANONYMOUS_ID, validate_export_path

__all__ = ["VOLUME_FILE", "main", "set_access", "truncate"]

VOLUME_FILE = "volume"
_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _open_dir(mountpoint: str) -> int:
    try:
        return os.open(validate_export_path(mountpoint), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise UnsafeVolumeFile(f"cannot open the volume directory {mountpoint}: {e.strerror}") from None


def _handle(dfd: int, shown: str) -> int:
    """An ``O_PATH`` handle on the regular file ``volume`` in ``dfd``, or UnsafeVolumeFile."""
    fd = os.open(VOLUME_FILE, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        what = _KINDS.get(kind, "not a regular file")
        raise UnsafeVolumeFile(f"refusing to touch {shown}: it is {what}, not the volume's regular file")
    return fd


def truncate(mountpoint: str, size: int) -> dict[str, Any]:
    """Create or resize ``<mountpoint>/volume`` (sparse) to ``size`` bytes."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UsageError(f"invalid size {size!r}")
    shown = f"{mountpoint}/{VOLUME_FILE}"
    dfd = _open_dir(mountpoint)
    try:
        try:
            fd = os.open(
                VOLUME_FILE,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=dfd,
            )
            created = True
        except FileExistsError:
            handle = _handle(dfd, shown)
            try:
                fd = os.open(f"/proc/self/fd/{handle}", os.O_WRONLY | os.O_CLOEXEC)
            finally:
                os.close(handle)
            created = False
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != stat.S_IFREG:  # cannot be: the same inode
                raise UnsafeVolumeFile(f"refusing to touch {shown}: not a regular file")
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return {"size": size, "created": created}


def set_access(mountpoint: str, uid: int, gid: int, mode: int) -> dict[str, Any]:
    """Give ``<mountpoint>/volume`` the owner ``uid:gid`` and ``mode``; what already is right is left
    alone (a replica received read-only may have them already). Returns what was changed."""
    for name, v in (("uid", uid), ("gid", gid)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ANONYMOUS_ID:
            raise UsageError(f"invalid {name} {v!r}")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise UsageError(f"invalid mode {mode!r}: expected 0-0777")
    dfd = _open_dir(mountpoint)
    try:
        fd = _handle(dfd, f"{mountpoint}/{VOLUME_FILE}")
    finally:
        os.close(dfd)
    try:
        st, inode = os.fstat(fd), f"/proc/self/fd/{fd}"
        changed = []
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(inode, uid, gid)  # through the handle's magic link: this inode, never a name
            changed.append("owner")
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:  # after a chown: it may clear set-id bits
            os.chmod(inode, mode)
            changed.append("mode")
    finally:
        os.close(fd)
    return {"changed": changed}


def main(argv: Sequence[str], stdout: Any) -> int:
    """``truncate MOUNTPOINT SIZE`` or ``access MOUNTPOINT UID GID MODE`` (mode in octal)."""
    try:
        args = list(argv)
        try:
            if args[:1] == ["truncate"] and len(args) == 3:
                answer = truncate(args[1], int(args[2]))
            elif args[:1] == ["access"] and len(args) == 5:
                answer = set_access(args[1], int(args[2]), int(args[3]), int(args[4], 8))
            else:
                raise UsageError(
                    "usage: volume-file truncate MOUNTPOINT SIZE | access MOUNTPOINT UID GID MODE"
                )
        except ValueError:
            raise UsageError("volume-file: sizes, ids and modes are integers") from None
        except OSError as e:
            raise UnsafeVolumeFile(f"volume-file {' '.join(args[:2])}: {e.strerror}") from None
        json.dump(answer, stdout)
        return 0
    except ZfsBackendError as e:
        json.dump({"error": str(e), "type": type(e).__name__}, stdout)
        return e.exit_code
