"""The driver's exports file, as text: one marked ``EXPORT`` block per volume filesystem, its grants and
the attachments they are counted from; validation of every name and address that can reach it.

Each block lies between two marker comments naming the dataset; anything else in the file is kept as it
is. An export's own ``Access_Type`` is ``None``; the granted addresses are one ``CLIENT`` block with
``Access_Type = RW``. Each grant is held by one or more **attachments** (an id and the client address
it was made for), written as marker comments inside the block (``# zfs-backend attachment ID ADDR``,
which ganesha ignores as comments), so an address stays granted while any attachment of it is left.

Invariant of an :class:`ExportEntry` (enforced when one is made, so also after parsing): its
``clients`` are exactly the addresses of its ``attachments``. Parsing reads back what ganesha enforces:
the ``Clients`` line is the truth; an attachment line naming an address that is not granted, or not
valid, is dropped, and a granted address without an attachment line (a file written by an older
version) gets its **default attachment** ``client-ADDR`` — the identity an attach without an
attachment id has, so a single attachment per client works as before.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError, UsageError
from ..zfs.names import DatasetName, parse_dataset
from .errors import InvalidAttachment, InvalidClient

__all__ = [
    "MAX_ANONYMOUS_ID",
    "Attachment",
    "ExportEntry",
    "ExportSecurity",
    "default_attachment",
    "parse_exports",
    "render_export",
    "validate_attachment_id",
    "validate_client",
    "validate_export_path",
]

MIN_EXPORT_ID = 100
MAX_EXPORT_ID = 65535
MAX_ANONYMOUS_ID = 4294967294  # uid/gid 2**32 - 1 is "no id" to chown
DEFAULT_PREFIX = "client-"
_BEGIN = "# zfs-backend export dataset="
_END = "# end zfs-backend export"
_ATTACHMENT_MARK = "# zfs-backend attachment "
_BLOCK = re.compile(re.escape(_BEGIN) + r"(\S+)\n(.*?)" + re.escape(_END) + r"\n?", re.DOTALL)
ID_LINE = re.compile(r"\bExport_Id\s*=\s*(\d+)", re.IGNORECASE)
_PATH_LINE = re.compile(r'^\s*Path\s*=\s*"([^"]*)"\s*;', re.MULTILINE | re.IGNORECASE)
_CLIENTS_LINE = re.compile(r"^\s*Clients\s*=\s*([^;\n]*);", re.MULTILINE | re.IGNORECASE)
_ATTACHMENT_LINE = re.compile(r"^" + re.escape(_ATTACHMENT_MARK) + r"(\S+) (\S+)$", re.MULTILINE)
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.:/-]*")
_ATTACHMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def validate_export_path(path: str) -> str:
    """``path`` if it is an absolute path of safe characters (it goes into the server's config)."""
    if not isinstance(path, str) or not _SAFE_PATH.fullmatch(path) or "/../" in f"{path}/" or path == "/":
        raise UsageError(f"refusing to export {path!r}: not a safe absolute path")
    return path


def validate_client(address: object) -> str:
    """``address`` in its canonical form if it is one IPv4 or IPv6 address another host can have: no
    network, no hostname, no scope; not loopback (127.0.0.0/8, ::1), unspecified, "this network"
    (0.0.0.0/8), multicast, broadcast, reserved (240.0.0.0/4) or IPv4-mapped. It goes into the
    server's config."""
    shown = ascii(address)[:80]
    if not isinstance(address, str):
        raise InvalidClient(f"invalid client address {shown}: expected an IP address")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidClient(f"invalid client address {shown}: expected an IP address") from None
    if ip.is_loopback:
        raise InvalidClient(f"invalid client address {shown}: a loopback address is not a client host")
    broadcast = ip.version == 4 and int(ip) == 2**32 - 1
    this_network = ip.version == 4 and int(ip) >> 24 == 0
    scoped = isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None
    mapped = isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
    if (
        ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or broadcast
        or this_network
        or scoped
        or mapped
    ):
        raise InvalidClient(f"invalid client address {shown}: not the address of one host")
    return str(ip)


def client_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def canonical_clients(addresses: Iterable[str]) -> tuple[str, ...]:
    """Validated, canonical, without duplicates, in address order."""
    return tuple(sorted({validate_client(a) for a in addresses}, key=client_key))


def default_attachment(client: str) -> str:
    """The attachment id of an attach that names none: one per client address."""
    return f"{DEFAULT_PREFIX}{validate_client(client)}"


def validate_attachment_id(attachment: object) -> str:
    """``attachment`` if it is an id of 1-128 letters, digits and ``_.:-`` (starting with a letter or
    digit): it goes into the exports file as a comment."""
    if not isinstance(attachment, str) or not _ATTACHMENT_ID.fullmatch(attachment):
        raise InvalidAttachment(
            f"invalid attachment id {ascii(attachment)[:80]}: expected 1-128 of A-Z a-z 0-9 _ . : -"
        )
    return attachment


@dataclass(frozen=True, order=True)
class Attachment:
    """One attachment of a volume: its id and the client address it grants."""

    id: str
    client: str

    def __post_init__(self) -> None:
        validate_attachment_id(self.id)
        object.__setattr__(self, "client", validate_client(self.client))
        if self.id.startswith(DEFAULT_PREFIX) and self.id != f"{DEFAULT_PREFIX}{self.client}":
            raise InvalidAttachment(f"attachment id {self.id} is the default of another client")


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


def _merge(clients: Iterable[str], attachments: Iterable[Attachment]) -> tuple[Attachment, ...]:
    """``attachments`` by id (one id, one client), plus the default attachment of each of ``clients``
    that has none."""
    by_id: dict[str, Attachment] = {}
    for a in attachments:
        if not isinstance(a, Attachment):
            raise InvalidAttachment(f"invalid attachment {ascii(a)[:80]}")
        seen = by_id.setdefault(a.id, a)
        if seen.client != a.client:
            raise InvalidAttachment(f"attachment {a.id} is already attached from {seen.client}")
    held = {a.client for a in by_id.values()}
    for c in canonical_clients(clients):
        if c not in held:
            by_id.setdefault(f"{DEFAULT_PREFIX}{c}", Attachment(f"{DEFAULT_PREFIX}{c}", c))
    return tuple(sorted(by_id.values()))


@dataclass(frozen=True)
class ExportEntry:
    """One volume's export: its dataset, ``Export_Id`` and path, the granted addresses (canonical and
    sorted) and the attachments holding them (sorted by id). Made from either or both: a client given
    without an attachment gets its default one; ``clients`` always ends up as the attachments'
    addresses."""

    dataset: DatasetName
    export_id: int
    path: str
    clients: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    def __post_init__(self) -> None:
        attachments = _merge(self.clients, self.attachments)
        object.__setattr__(self, "attachments", attachments)
        object.__setattr__(self, "clients", canonical_clients(a.client for a in attachments))


def render_export(
    entry: ExportEntry, protocols: Sequence[int], security: ExportSecurity | None = None
) -> str:
    """The marked ``EXPORT`` block of ``entry``: its attachments (comments), its path (for NFSv4 the
    same pseudo path), no access for anybody, and read-write access for its granted clients."""
    sec = security or ExportSecurity()
    path = validate_export_path(entry.path)
    protos = ", ".join(str(int(p)) for p in protocols)
    clients = canonical_clients(entry.clients)
    text = f"{_BEGIN}{entry.dataset}\n"
    for a in entry.attachments:
        text += f"{_ATTACHMENT_MARK}{validate_attachment_id(a.id)} {validate_client(a.client)}\n"
    text += (
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
    return tuple(sorted(found, key=client_key))


def _parse_attachments(block: str, granted: tuple[str, ...]) -> list[Attachment]:
    """The valid attachment lines of one of our blocks whose address is granted."""
    found = []
    for m in _ATTACHMENT_LINE.finditer(block):
        try:
            a = Attachment(m.group(1), m.group(2))
        except UsageError:
            continue
        if a.client in granted:
            found.append(a)
    return found


def parse_exports(text: str) -> tuple[dict[str, ExportEntry], str]:
    """The driver's entries (by dataset name) and the rest of the file (kept verbatim)."""
    entries: dict[str, ExportEntry] = {}
    for m in _BLOCK.finditer(text):
        try:
            ds = parse_dataset(m.group(1))
        except UsageError:
            continue
        idm, pm = ID_LINE.search(m.group(2)), _PATH_LINE.search(m.group(2))
        if idm and pm:
            granted = _parse_clients(m.group(2))
            try:
                atts = tuple(_parse_attachments(m.group(2), granted))
                entries[str(ds)] = ExportEntry(ds, int(idm.group(1)), pm.group(1), granted, atts)
            except InvalidAttachment:  # one id on two addresses (tampered): the grants alone
                entries[str(ds)] = ExportEntry(ds, int(idm.group(1)), pm.group(1), granted)
    rest = _BLOCK.sub("", text)
    return entries, rest


def render_file(
    entries: dict[str, ExportEntry], rest: str, protocols: Sequence[int], security: ExportSecurity
) -> str:
    """The whole file: the foreign text, then the driver's blocks by Export_Id."""
    body = rest.rstrip("\n") + "\n" if rest.strip() else ""
    return body + "".join(
        render_export(e, protocols, security) for e in sorted(entries.values(), key=lambda e: e.export_id)
    )
