"""NFS exports of volume filesystems on an nfs-ganesha server, managed live.

The driver owns one file on the node (``NodeOptions.exports_file``), ``%include``\\ d by the server's
``ganesha.conf``. It holds one ``EXPORT`` block per volume filesystem, each between two marker
comments naming the dataset; anything else in the file is kept as it is. A change rewrites the file
atomically (write a temporary file, ``mv``) and sends ``SIGHUP`` to the server, which re-reads its
exports: new blocks are added and missing ones removed, without a restart.

Measured with ganesha 4.3 on zfs-fuse: the reload is near-immediate, but a removed export's files
can stay open for a moment, so a destroy after :meth:`GaneshaExports.remove` must be retried within
a deadline (``Zfs.destroy`` does). Only this process serialises its changes (a lock per node and
file); one controller per node is assumed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError, UsageError
from ..hosts.base import Host
from ..zfs.names import DatasetName, parse_dataset

__all__ = ["ExportEntry", "GaneshaExports", "parse_exports", "render_export", "validate_export_path"]

MIN_EXPORT_ID = 100
MAX_EXPORT_ID = 65535
_BEGIN = "# zfs-backend export dataset="
_END = "# end zfs-backend export"
_BLOCK = re.compile(re.escape(_BEGIN) + r"(\S+)\n(.*?)" + re.escape(_END) + r"\n?", re.DOTALL)
_ID_LINE = re.compile(r"\bExport_Id\s*=\s*(\d+)", re.IGNORECASE)
_PATH_LINE = re.compile(r'^\s*Path\s*=\s*"([^"]*)"\s*;', re.MULTILINE | re.IGNORECASE)
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.:/-]*")

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(host: Host, path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((host.name, path), threading.Lock())


def validate_export_path(path: str) -> str:
    """``path`` if it is an absolute path of safe characters (it goes into the server's config)."""
    if not isinstance(path, str) or not _SAFE_PATH.fullmatch(path) or "/../" in f"{path}/" or path == "/":
        raise UsageError(f"refusing to export {path!r}: not a safe absolute path")
    return path


@dataclass(frozen=True)
class ExportEntry:
    dataset: DatasetName
    export_id: int
    path: str


def render_export(entry: ExportEntry, protocols: Sequence[int]) -> str:
    """The marked ``EXPORT`` block of ``entry``: its path, for NFSv4 the same pseudo path."""
    path = validate_export_path(entry.path)
    protos = ", ".join(str(int(p)) for p in protocols)
    return (
        f"{_BEGIN}{entry.dataset}\n"
        "EXPORT {\n"
        f"    Export_Id = {int(entry.export_id)};\n"
        f'    Path = "{path}";\n'
        f'    Pseudo = "{path}";\n'
        f"    Protocols = {protos};\n"
        "    Transports = TCP;\n"
        "    Access_Type = RW;\n"
        "    Squash = No_Root_Squash;\n"
        "    SecType = sys;\n"
        "    FSAL {\n"
        "        Name = VFS;\n"
        "    }\n"
        "}\n"
        f"{_END}\n"
    )


def parse_exports(text: str) -> tuple[dict[str, ExportEntry], str]:
    """The driver's entries (by dataset name) and the rest of the file (kept verbatim)."""
    entries: dict[str, ExportEntry] = {}
    for m in _BLOCK.finditer(text):
        try:
            ds = parse_dataset(m.group(1))
        except UsageError:
            continue
        idm, pm = _ID_LINE.search(m.group(2)), _PATH_LINE.search(m.group(2))
        if idm and pm:
            entries[str(ds)] = ExportEntry(ds, int(idm.group(1)), pm.group(1))
    rest = _BLOCK.sub("", text)
    return entries, rest


class GaneshaExports:
    """The driver's exports on one node's ganesha."""

    def __init__(
        self, host: Host, exports_file: str, pid_file: str, protocols: Sequence[int] = (3, 4)
    ) -> None:
        self.host = host
        self.exports_file = exports_file
        self.pid_file = pid_file
        self.protocols = tuple(protocols)
        self._lock = _lock_for(host, exports_file)

    # ---- reading ------------------------------------------------------------------------------

    def _read(self) -> str:
        res = self.host.run(["cat", self.exports_file], check=False)
        if res.returncode != 0:
            raise ConfigError(
                f"{self.host.name}: cannot read the NFS exports file {self.exports_file}: "
                f"{res.err_text.strip() or 'exit ' + str(res.returncode)} (is nfs-ganesha set up?)"
            )
        return res.text

    def entries(self) -> dict[str, ExportEntry]:
        return parse_exports(self._read())[0]

    def get(self, dataset: DatasetName) -> ExportEntry | None:
        return self.entries().get(str(dataset))

    def server_pid(self) -> int | None:
        """The server's pid when it is running, else None."""
        res = self.host.run(["cat", self.pid_file], check=False)
        text = res.text.strip()
        if res.returncode != 0 or not text.isdigit():
            return None
        if self.host.run(["kill", "-0", text], check=False).returncode != 0:
            return None
        return int(text)

    # ---- changes ------------------------------------------------------------------------------

    def _write(self, entries: dict[str, ExportEntry], rest: str) -> None:
        body = rest.rstrip("\n") + "\n" if rest.strip() else ""
        body += "".join(
            render_export(e, self.protocols) for e in sorted(entries.values(), key=lambda e: e.export_id)
        )
        tmp = f"{self.exports_file}.tmp"
        self.host.run(["tee", tmp], input=body.encode())
        self.host.run(["mv", "-f", tmp, self.exports_file])

    def reload(self) -> None:
        """SIGHUP the server: it re-reads its exports (adds new ones, removes missing ones)."""
        pid = self.server_pid()
        if pid is None:
            raise ConfigError(
                f"{self.host.name}: the NFS server (nfs-ganesha) is not running ({self.pid_file})"
            )
        self.host.run(["kill", "-HUP", str(pid)])

    def add(self, dataset: DatasetName, path: str) -> ExportEntry:
        """Export ``dataset`` (mounted at ``path``); idempotent. Returns its entry."""
        validate_export_path(path)
        with self._lock:
            entries, rest = parse_exports(self._read())
            current = entries.get(str(dataset))
            if current is not None and current.path == path:
                return current
            used = {e.export_id for e in entries.values()} | {int(x) for x in _ID_LINE.findall(rest)}
            if current is not None:
                export_id = current.export_id
            else:
                free = next((i for i in range(MIN_EXPORT_ID, MAX_EXPORT_ID + 1) if i not in used), None)
                if free is None:
                    raise ConfigError(f"{self.host.name}: no free NFS Export_Id left")
                export_id = free
            entry = ExportEntry(dataset, export_id, path)
            entries[str(dataset)] = entry
            self._write(entries, rest)
            self.reload()
            return entry

    def remove(self, dataset: DatasetName) -> bool:
        """Unexport ``dataset``; False when it was not exported."""
        with self._lock:
            entries, rest = parse_exports(self._read())
            if entries.pop(str(dataset), None) is None:
                return False
            self._write(entries, rest)
            self.reload()
            return True
