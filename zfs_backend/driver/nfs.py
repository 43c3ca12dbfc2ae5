"""NFS exports of volume filesystems on an nfs-ganesha server, managed live, granted per client.

The driver owns one file on the node (``NodeOptions.exports_file``), ``%include``\\ d by the server's
``ganesha.conf``. It holds one ``EXPORT`` block per volume filesystem, each between two marker
comments naming the dataset; anything else in the file is kept as it is. A change rewrites the file
atomically (write a temporary file, ``mv``) and sends ``SIGHUP`` to the server, which re-reads its
exports: new blocks are added, missing ones removed and changed ones updated, without a restart.

Access is granted, not open: an export's own ``Access_Type`` is ``None``, so nobody can mount it until
an address is granted, and the grants are one ``CLIENT`` block listing the granted addresses with
``Access_Type = RW``. The grants live only in this file (parsed back from it, rendered into it), so
what the server enforces and what the driver believes are the same text. Squashing (``Squash`` and
``Anonymous_Uid``/``Anonymous_Gid``) is set per export from :class:`ExportSecurity`. Every address
is validated (:func:`validate_client`) before it can reach the file.

Measured with ganesha 4.3 on zfs-fuse: the reload is near-immediate; a revoked address is refused at
once, also on a mount it made before (NFSv3 ``MNT3ERR_ACCES`` for a new mount, "RPC packet not
accepted" on an old one; over NFSv4 the export is not even visible to it). A removed export's files
can stay open for a moment, so a destroy after :meth:`GaneshaExports.remove` must be retried within a
deadline (``Zfs.destroy`` does). ganesha caches file attributes (``Attr_Expiration_Time``, 60 s), so
the driver sets a volume file's owner and mode before exporting it. Only this process serialises its
changes (a lock per node and file); one controller per node is assumed.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from ..errors import ConfigError, UsageError
from ..hosts.base import Host
from ..zfs.names import DatasetName, parse_dataset
from .errors import InvalidClient

__all__ = [
    "MAX_ANONYMOUS_ID",
    "ExportEntry",
    "ExportSecurity",
    "GaneshaExports",
    "parse_exports",
    "render_export",
    "validate_client",
    "validate_export_path",
]

MIN_EXPORT_ID = 100
MAX_EXPORT_ID = 65535
MAX_ANONYMOUS_ID = 4294967294  # uid/gid 2**32 - 1 is "no id" to chown
_BEGIN = "# zfs-backend export dataset="
_END = "# end zfs-backend export"
_BLOCK = re.compile(re.escape(_BEGIN) + r"(\S+)\n(.*?)" + re.escape(_END) + r"\n?", re.DOTALL)
_ID_LINE = re.compile(r"\bExport_Id\s*=\s*(\d+)", re.IGNORECASE)
_PATH_LINE = re.compile(r'^\s*Path\s*=\s*"([^"]*)"\s*;', re.MULTILINE | re.IGNORECASE)
_CLIENTS_LINE = re.compile(r"^\s*Clients\s*=\s*([^;\n]*);", re.MULTILINE | re.IGNORECASE)
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


def validate_client(address: object) -> str:
    """``address`` in its canonical form if it is one IPv4 or IPv6 address a client can have (no
    network, no hostname, no scope, not unspecified, multicast or broadcast): it goes into the
    server's config."""
    shown = ascii(address)[:80]
    if not isinstance(address, str):
        raise InvalidClient(f"invalid client address {shown}: expected an IP address")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidClient(f"invalid client address {shown}: expected an IP address") from None
    broadcast = ip.version == 4 and int(ip) == 2**32 - 1
    scoped = isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None
    if ip.is_unspecified or ip.is_multicast or broadcast or scoped:
        raise InvalidClient(f"invalid client address {shown}: not the address of one host")
    return str(ip)


def _client_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def _clients(addresses: Iterable[str]) -> tuple[str, ...]:
    """Validated, canonical, without duplicates, in address order."""
    return tuple(sorted({validate_client(a) for a in addresses}, key=_client_key))


@dataclass(frozen=True)
class ExportSecurity:
    """How an export treats the credentials of granted clients.

    ``root_squash``: root on a client becomes ``anonymous_uid``/``anonymous_gid`` on the server
    (``Squash = Root_Squash``); otherwise root stays root (``No_Root_Squash``)."""

    root_squash: bool = True
    anonymous_uid: int = 65534
    anonymous_gid: int = 65534

    def __post_init__(self) -> None:
        if not isinstance(self.root_squash, bool):
            raise ConfigError(f"invalid root_squash {self.root_squash!r}: expected true or false")
        for name in ("anonymous_uid", "anonymous_gid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ANONYMOUS_ID:
                raise ConfigError(f"invalid {name} {v!r}: expected 0-{MAX_ANONYMOUS_ID}")


@dataclass(frozen=True)
class ExportEntry:
    dataset: DatasetName
    export_id: int
    path: str
    clients: tuple[str, ...] = ()  # granted addresses, canonical and sorted


def render_export(
    entry: ExportEntry, protocols: Sequence[int], security: ExportSecurity | None = None
) -> str:
    """The marked ``EXPORT`` block of ``entry``: its path (for NFSv4 the same pseudo path), no access
    for anybody, and read-write access for its granted clients."""
    sec = security or ExportSecurity()
    path = validate_export_path(entry.path)
    protos = ", ".join(str(int(p)) for p in protocols)
    clients = _clients(entry.clients)
    text = (
        f"{_BEGIN}{entry.dataset}\n"
        "EXPORT {\n"
        f"    Export_Id = {int(entry.export_id)};\n"
        f'    Path = "{path}";\n'
        f'    Pseudo = "{path}";\n'
        f"    Protocols = {protos};\n"
        "    Transports = TCP;\n"
        "    Access_Type = None;\n"
        f"    Squash = {'Root_Squash' if sec.root_squash else 'No_Root_Squash'};\n"
        f"    Anonymous_Uid = {int(sec.anonymous_uid)};\n"
        f"    Anonymous_Gid = {int(sec.anonymous_gid)};\n"
        "    SecType = sys;\n"
        "    FSAL {\n"
        "        Name = VFS;\n"
        "    }\n"
    )
    if clients:
        text += f"    CLIENT {{\n        Clients = {', '.join(clients)};\n        Access_Type = RW;\n    }}\n"
    return text + f"}}\n{_END}\n"


def _parse_clients(block: str) -> tuple[str, ...]:
    """The granted addresses of one of our blocks; anything that is not a valid address is dropped
    (so a tampered entry is never written back)."""
    found: set[str] = set()
    for m in _CLIENTS_LINE.finditer(block):
        for item in m.group(1).split(","):
            try:
                found.add(validate_client(item.strip()))
            except InvalidClient:
                continue
    return tuple(sorted(found, key=_client_key))


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
            entries[str(ds)] = ExportEntry(ds, int(idm.group(1)), pm.group(1), _parse_clients(m.group(2)))
    rest = _BLOCK.sub("", text)
    return entries, rest


class GaneshaExports:
    """The driver's exports on one node's ganesha, and the clients granted each of them."""

    def __init__(
        self,
        host: Host,
        exports_file: str,
        pid_file: str,
        protocols: Sequence[int] = (3, 4),
        security: ExportSecurity | None = None,
    ) -> None:
        self.host = host
        self.exports_file = exports_file
        self.pid_file = pid_file
        self.protocols = tuple(protocols)
        self.security = security or ExportSecurity()
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

    def render(self, entries: dict[str, ExportEntry], rest: str) -> str:
        """The whole file: the foreign text, then the driver's blocks by Export_Id."""
        body = rest.rstrip("\n") + "\n" if rest.strip() else ""
        return body + "".join(
            render_export(e, self.protocols, self.security)
            for e in sorted(entries.values(), key=lambda e: e.export_id)
        )

    def reload(self) -> None:
        """SIGHUP the server: it re-reads its exports (adds new ones, removes missing ones, updates
        changed ones)."""
        pid = self.server_pid()
        if pid is None:
            raise ConfigError(
                f"{self.host.name}: the NFS server (nfs-ganesha) is not running ({self.pid_file})"
            )
        self.host.run(["kill", "-HUP", str(pid)])

    def _change(self, fn: Callable[[dict[str, ExportEntry], str], None]) -> dict[str, ExportEntry]:
        """Read, let ``fn`` change the entries in place, and when the file would differ, write it
        atomically and reload the server. Returns the entries after the change."""
        with self._lock:
            text = self._read()
            entries, rest = parse_exports(text)
            fn(entries, rest)
            body = self.render(entries, rest)
            if body != text:
                tmp = f"{self.exports_file}.tmp"
                self.host.run(["tee", tmp], input=body.encode())
                self.host.run(["mv", "-f", tmp, self.exports_file])
                self.reload()
            return entries

    def add(self, dataset: DatasetName, path: str, clients: Iterable[str] = ()) -> ExportEntry:
        """Export ``dataset`` (mounted at ``path``); idempotent: an existing export keeps its grants
        (``clients`` are granted besides). A new export grants nobody but ``clients``."""
        validate_export_path(path)
        extra = _clients(clients)

        def change(entries: dict[str, ExportEntry], rest: str) -> None:
            current = entries.get(str(dataset))
            if current is not None:
                export_id = current.export_id
                granted = _clients((*current.clients, *extra))
            else:
                used = {e.export_id for e in entries.values()} | {int(x) for x in _ID_LINE.findall(rest)}
                free = (i for i in range(MIN_EXPORT_ID, MAX_EXPORT_ID + 1) if i not in used)
                export_id = next(free, 0)
                if not export_id:
                    raise ConfigError(f"{self.host.name}: no free NFS Export_Id left")
                granted = extra
            entries[str(dataset)] = ExportEntry(dataset, export_id, path, granted)

        return self._change(change)[str(dataset)]

    def remove(self, dataset: DatasetName) -> ExportEntry | None:
        """Unexport ``dataset`` (its grants go with it); returns the entry it had, None when it was not
        exported."""
        removed: list[ExportEntry] = []

        def change(entries: dict[str, ExportEntry], rest: str) -> None:
            entry = entries.pop(str(dataset), None)
            if entry is not None:
                removed.append(entry)

        self._change(change)
        return removed[0] if removed else None

    def grant(self, dataset: DatasetName, address: str) -> ExportEntry | None:
        """Give ``address`` read-write access to the export of ``dataset``; idempotent. None (and no
        change) when ``dataset`` is not exported."""
        client = validate_client(address)

        def change(entries: dict[str, ExportEntry], rest: str) -> None:
            entry = entries.get(str(dataset))
            if entry is not None:
                entries[str(dataset)] = replace(entry, clients=_clients((*entry.clients, client)))

        return self._change(change).get(str(dataset))

    def revoke(self, dataset: DatasetName, address: str) -> tuple[str, ...]:
        """Take access to the export of ``dataset`` away from ``address``. Returns the addresses revoked
        (empty when it was not granted or ``dataset`` is not exported)."""
        return self._revoke(dataset, validate_client(address))

    def revoke_all(self, dataset: DatasetName) -> tuple[str, ...]:
        """Take access to the export of ``dataset`` away from every client; returns who had it."""
        return self._revoke(dataset, None)

    def _revoke(self, dataset: DatasetName, client: str | None) -> tuple[str, ...]:
        revoked: list[str] = []

        def change(entries: dict[str, ExportEntry], rest: str) -> None:
            entry = entries.get(str(dataset))
            if entry is None:
                return
            keep = () if client is None else tuple(c for c in entry.clients if c != client)
            revoked.extend(c for c in entry.clients if c not in keep)
            entries[str(dataset)] = replace(entry, clients=keep)

        self._change(change)
        return tuple(revoked)
