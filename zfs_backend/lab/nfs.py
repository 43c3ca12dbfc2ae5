"""NFS in the lab: nfs-ganesha (FSAL VFS) and rpcbind in every node, and a userspace NFS client.

Server side. Each node runs ``rpcbind`` (for NFSv3's MOUNT/NLM lookups) and ``ganesha.nfsd`` with
every port set explicitly (:data:`PORTS`). The node's ``/etc/ganesha/ganesha.conf`` (written here,
into the node's own root) holds only the core parameters and ``%include``\\ s
:data:`EXPORTS_FILE`, which the volume driver owns: an ``EXPORT`` block per volume filesystem, added
and removed live by rewriting that file and sending ``SIGHUP`` to the pid in :data:`PID_FILE`. The
driver's defaults (``zfs_backend.driver.options``) name the same paths; a unit test keeps them equal.
Both daemons start only when their binaries are installed (Debian ``nfs-ganesha``,
``nfs-ganesha-vfs``, ``rpcbind``); otherwise the lab runs without NFS.

Client side. :class:`NfsClient` reads and writes files of an export through ``libnfs`` (Debian
``libnfs13``, pulled in by ``libnfs-utils``) via ctypes, over NFSv3, from the calling process's
network namespace: the controller (the bridge address) or a node (``nsenter``). libnfs 4.0's
NFSv4 write path fails to encode COMPOUNDs, so the client speaks v3; :func:`nfs_ls` lists a
directory with ``nfs-ls`` over either version.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from ..errors import MissingDependency, NfsError

__all__ = [
    "EXPORTS_FILE",
    "GANESHA_CONF",
    "GANESHA_SERVICE",
    "PID_FILE",
    "PORTS",
    "RPCBIND_SERVICE",
    "SERVICES",
    "NfsClient",
    "NfsError",
    "Ports",
    "ganesha_argv",
    "ganesha_available",
    "ganesha_config",
    "nfs_ls",
    "prepare_argv",
    "rpcbind_argv",
    "rpcbind_available",
]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

GANESHA_SERVICE = "nfs-ganesha"
RPCBIND_SERVICE = "rpcbind"
SERVICES = (RPCBIND_SERVICE, GANESHA_SERVICE)

GANESHA_CONF = "/etc/ganesha/ganesha.conf"
EXPORTS_FILE = "/etc/ganesha/zfs-backend/exports.conf"
PID_FILE = "/run/ganesha/ganesha.pid"
LOG_FILE = "/var/log/ganesha/ganesha.log"
# Directories ganesha needs inside the node (its own /run is a fresh tmpfs).
RUN_DIRS = (
    "/run/ganesha",
    "/run/rpcbind",
    "/var/lib/nfs/ganesha",
    "/var/log/ganesha",
    "/etc/ganesha/zfs-backend",
)


@dataclass(frozen=True)
class Ports:
    """Every port the NFS server listens on (NFSv3 needs MOUNT and NLM beside NFS; rpcbind is 111)."""

    nfs: int = 2049
    mount: int = 20048
    nlm: int = 32803
    rpcbind: int = 111


PORTS = Ports()


def ganesha_available() -> bool:
    """True when ``ganesha.nfsd`` and its VFS FSAL are installed."""
    if shutil.which("ganesha.nfsd", path=_PATH) is None:
        return False
    return any(
        os.path.exists(os.path.join(d, "libfsalvfs.so"))
        for d in (
            "/usr/lib/x86_64-linux-gnu/ganesha",
            "/usr/lib/aarch64-linux-gnu/ganesha",
            "/usr/lib/ganesha",
        )
    )


def rpcbind_available() -> bool:
    return shutil.which("rpcbind", path=_PATH) is not None


def ganesha_config(ports: Ports = PORTS, protocols: tuple[int, ...] = (3, 4)) -> str:
    """The node's ``ganesha.conf``: core parameters, explicit ports, and the driver's exports file."""
    protos = ", ".join(str(int(p)) for p in protocols)
    return f"""# Written by zfs_backend (lab or role zfs_backend_node). Exports: {EXPORTS_FILE} (driver's).
NFS_CORE_PARAM {{
    Protocols = {protos};
    NFS_Port = {int(ports.nfs)};
    MNT_Port = {int(ports.mount)};
    NLM_Port = {int(ports.nlm)};
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    Lease_Lifetime = 10;
}}
LOG {{
    Default_Log_Level = EVENT;
}}
%include "{EXPORTS_FILE}"
"""


# A constant script; the paths and the config text reach it as positional parameters.
_PREPARE = r"""
set -eu
conf=$1 exports=$2 text=$3
shift 3
mkdir -p "$@"
printf '%s' "$text" > "$conf.tmp"
mv -f "$conf.tmp" "$conf"
[ -e "$exports" ] || : > "$exports"
"""


def prepare_argv(ports: Ports = PORTS) -> list[str]:
    """The argv (run inside a node) that creates ganesha's directories, writes its config and, when
    missing, an empty exports file (an ``%include`` of a missing file is fatal to ganesha)."""
    return [
        "sh",
        "-c",
        _PREPARE,
        "zfs-backend-nfs-setup",
        GANESHA_CONF,
        EXPORTS_FILE,
        ganesha_config(ports),
        *RUN_DIRS,
    ]


def rpcbind_argv() -> list[str]:
    """rpcbind in the foreground (``-f``), warm start off (``-w`` needs state it does not have)."""
    return ["rpcbind", "-f"]


def ganesha_argv() -> list[str]:
    """ganesha.nfsd in the foreground, with the node's config, log and pid file."""
    return ["ganesha.nfsd", "-F", "-f", GANESHA_CONF, "-L", LOG_FILE, "-p", PID_FILE]


# ---- client ------------------------------------------------------------------------------------


_lib: ctypes.CDLL | None = None


def _libnfs() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("nfs") or "libnfs.so.13"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise MissingDependency(f"libnfs not found ({e}): install the Debian package libnfs-utils") from e
    vp, cp, u64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64
    lib.nfs_init_context.restype = vp
    lib.nfs_init_context.argtypes = []
    lib.nfs_destroy_context.argtypes = [vp]
    lib.nfs_get_error.restype = cp
    lib.nfs_get_error.argtypes = [vp]
    lib.nfs_set_timeout.argtypes = [vp, ctypes.c_int]
    lib.nfs_mount.argtypes = [vp, cp, cp]
    lib.nfs_open.argtypes = [vp, cp, ctypes.c_int, ctypes.POINTER(vp)]
    lib.nfs_close.argtypes = [vp, vp]
    # libnfs 4.0: (nfs, fh, offset, count, buf)
    lib.nfs_pread.argtypes = [vp, vp, u64, u64, vp]
    lib.nfs_pwrite.argtypes = [vp, vp, u64, u64, vp]
    lib.nfs_fsync.argtypes = [vp, vp]
    _lib = lib
    return lib


class NfsClient:
    """One NFSv3 mount of ``server:export`` through libnfs (no kernel client, no root mount)."""

    CHUNK = 1 << 20

    def __init__(self, server: str, export: str, timeout_ms: int = 10_000) -> None:
        self.server, self.export = server, export
        self._lib = _libnfs()
        ctx = self._lib.nfs_init_context()
        if not ctx:
            raise NfsError("libnfs: cannot create a context")
        self._ctx = ctypes.c_void_p(ctx)
        self._lib.nfs_set_timeout(self._ctx, int(timeout_ms))
        rc = self._lib.nfs_mount(self._ctx, server.encode(), export.encode())
        if rc != 0:
            err = self._error()
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None  # type: ignore[assignment]
            raise NfsError(f"mount {server}:{export} failed: {err}")

    def _error(self) -> str:
        e = self._lib.nfs_get_error(self._ctx)
        return e.decode(errors="replace") if e else "unknown error"

    @contextmanager
    def _open(self, path: str, flags: int) -> Iterator[ctypes.c_void_p]:
        fh = ctypes.c_void_p()
        if self._lib.nfs_open(self._ctx, path.encode(), flags, ctypes.byref(fh)) != 0:
            raise NfsError(f"open {self.server}:{self.export}{path} failed: {self._error()}")
        try:
            yield fh
        finally:
            self._lib.nfs_close(self._ctx, fh)

    def pwrite(self, path: str, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of the existing file ``path`` (relative to the export) and fsync."""
        with self._open(path, os.O_RDWR) as fh:
            done = 0
            while done < len(data):
                chunk = data[done : done + self.CHUNK]
                buf = ctypes.create_string_buffer(chunk, len(chunk))
                n = self._lib.nfs_pwrite(self._ctx, fh, offset + done, len(chunk), buf)
                if n <= 0:
                    raise NfsError(f"write {path} at {offset + done} failed: {self._error()}")
                done += n
            if self._lib.nfs_fsync(self._ctx, fh) != 0:
                raise NfsError(f"fsync {path} failed: {self._error()}")

    def pread(self, path: str, offset: int, count: int) -> bytes:
        """Read ``count`` bytes at ``offset`` (fewer at end of file)."""
        out = bytearray()
        with self._open(path, os.O_RDONLY) as fh:
            while len(out) < count:
                want = min(self.CHUNK, count - len(out))
                buf = ctypes.create_string_buffer(want)
                n = self._lib.nfs_pread(self._ctx, fh, offset + len(out), want, buf)
                if n < 0:
                    raise NfsError(f"read {path} at {offset + len(out)} failed: {self._error()}")
                if n == 0:
                    break
                out += buf.raw[:n]
        return bytes(out)

    def close(self) -> None:
        if self._ctx:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None  # type: ignore[assignment]

    def __enter__(self) -> NfsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def nfs_ls(server: str, path: str, version: int = 3, timeout: float = 10.0) -> list[str]:
    """File names in ``server:path`` listed with ``nfs-ls`` (libnfs-utils) over NFS ``version``."""
    if shutil.which("nfs-ls", path=_PATH) is None:
        raise MissingDependency("nfs-ls not found: install the Debian package libnfs-utils")
    url = f"nfs://{server}{path.rstrip('/')}/" + ("?version=4" if version == 4 else "")
    res = subprocess.run(
        ["nfs-ls", url],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise NfsError(f"nfs-ls {url} failed: {(res.stderr or res.stdout).strip()}")
    return [line.split()[-1] for line in res.stdout.splitlines() if line.split()]
