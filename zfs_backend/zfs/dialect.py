"""Which ZFS a node runs, as feature flags: OpenZFS 2.x or zfs-fuse 0.7 (or something between).

Later code asks the flags (``dialect.send_estimate``), never the version string. The probe reads
behaviour, not versions:

- ``zfs`` with no arguments prints every command with its flags (stderr, exit 2) on both dialects;
  the flags of ``list``, ``send``, ``receive`` and ``get`` and the presence of ``version``,
  ``bookmark`` and ``holds`` are read from it;
- ``zfs get`` with no arguments prints the property table: ``written`` is looked up there;
- ``zpool`` with no arguments: the flags of ``zpool list``;
- ``zfs holds`` with no arguments: zfs-fuse lists ``holds`` but answers "internal error:
  /usr/lib/zfs/pyzfs.py not found" (its ``hold``/``release`` exit 0 but holds cannot be listed, so
  ``holds`` is False there);
- ``zfs version`` (OpenZFS >= 0.8) for display, and as the sign of a kernel implementation;
- ``zfs upgrade -v``: the filesystem (ZPL) versions this zfs supports, the highest of which is the
  newest filesystem it can receive (zfs-fuse 0.7: 4; OpenZFS: 5, system attributes; a version 5
  filesystem's stream carries the ``SA_SPILL`` feature, which zfs-fuse's receive rejects).

zvols cannot be seen in the help: zfs-fuse lists ``create -V`` but aborts ("Function not
implemented"). They are assumed only where ``zfs version`` exists (the kernel module).

Results are cached per host object, or per ``host.dialect_key`` where a host names itself stably (the
local node: an agent makes a new ``LocalHost`` per activity, and the probe costs ~5 zfs commands);
:func:`dialect_from_texts` is pure.
"""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass

from ..errors import UnsupportedFeature
from ..hosts.base import CommandResult, Host
from . import cmd

__all__ = [
    "OPENZFS_2",
    "ZFS_FUSE_07",
    "Dialect",
    "command_flags",
    "dialect_from_texts",
    "forget",
    "parse_usage",
    "probe",
]


@dataclass(frozen=True)
class Dialect:
    """Feature flags of one node's zfs/zpool. ``name``/``version`` are for display only."""

    name: str
    version: str | None = None
    resumable_receive: bool = False  # recv -s, recv -A, send -t, receive_resume_token
    send_estimate: bool = False  # send -nvP prints "size\t<bytes>"
    zvols: bool = False
    written_property: bool = False  # written, written@snap
    holds: bool = False  # hold / holds / release all usable
    user_holds: bool = False  # hold / release work (zfs-fuse: yes, though `zfs holds` cannot list them)
    diff: bool = False  # zfs diff (reports changed files; ignores atime-only changes)
    parsable_list: bool = False  # zfs list -p
    zpool_list_parsable: bool = False  # zpool list -p
    get_type_filter: bool = False  # zfs get -t
    bookmarks: bool = False
    recv_no_mount: bool = False  # recv -u
    recv_properties: bool = False  # recv -o prop=value / -x prop
    send_compressed: bool = False  # send -c: blocks as compressed on disk (the receiver keeps them so)
    send_large_blocks: bool = False  # send -L: records over 128 KiB as they are
    send_embedded: bool = False  # send -e: embedded-data blocks as they are
    send_raw: bool = False  # send -w: an encrypted dataset's blocks as on disk (no key needed, none sent)
    zpl_version: int | None = None  # the highest filesystem (ZPL) version it receives (None: unknown)

    def __str__(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


OPENZFS_2 = Dialect(
    name="openzfs",
    version="2.x",
    resumable_receive=True,
    send_estimate=True,
    zvols=True,
    written_property=True,
    holds=True,
    user_holds=True,
    diff=True,
    parsable_list=True,
    zpool_list_parsable=True,
    get_type_filter=True,
    bookmarks=True,
    recv_no_mount=True,
    recv_properties=True,
    send_compressed=True,
    send_large_blocks=True,
    send_embedded=True,
    send_raw=True,
    zpl_version=5,
)

ZFS_FUSE_07 = Dialect(name="zfs-fuse", user_holds=True, zpl_version=4)  # 0.7 has no way to print its version

_OPT = re.compile(r"(?<![\w-])-([A-Za-z]+)\b")


def parse_usage(text: str) -> dict[str, list[str]]:
    """Map each command in a ``zfs``/``zpool`` usage listing to its synopsis lines.

    Synopses are tab-indented; continuation lines (tab + spaces) are joined to the previous one.
    """
    out: dict[str, list[str]] = {}
    last: tuple[str, int] | None = None
    for raw in text.splitlines():
        if not raw.startswith("\t"):
            last = None
            continue
        body = raw[1:]
        if body.startswith(" ") and last is not None:
            cmd_name, idx = last
            out[cmd_name][idx] += " " + body.strip()
            continue
        words = body.split()
        if not words:
            continue
        name = words[0]
        out.setdefault(name, []).append(body.strip())
        last = (name, len(out[name]) - 1)
    return out


def command_flags(usage: dict[str, list[str]], command: str) -> frozenset[str]:
    """Every single-letter option mentioned in any synopsis of ``command``."""
    letters: set[str] = set()
    for line in usage.get(command, []):
        rest = line.split(None, 1)[1] if " " in line else ""
        for m in _OPT.finditer(rest):
            letters.update(m.group(1))
    return frozenset(letters)


def _property_names(get_usage: str) -> frozenset[str]:
    names: set[str] = set()
    in_table = False
    for line in get_usage.splitlines():
        if "PROPERTY" in line and "EDIT" in line:
            in_table = True
            continue
        if in_table:
            words = line.split()
            if not words:
                continue
            if not line.startswith("\t"):
                in_table = False
                continue
            names.add(words[0].split("@")[0])
    return frozenset(names)


def _zpl_version(upgrade_text: str | None) -> int | None:
    """The highest filesystem version ``zfs upgrade -v`` lists (its first table), or None."""
    if not upgrade_text or "filesystem versions" not in upgrade_text:
        return None
    table = upgrade_text.split("filesystem versions", 1)[1]
    found = [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\S", table, re.MULTILINE)]
    return max(found) if found else None


def _version(text: str) -> str | None:
    m = re.search(r"^zfs-(\d+\.\d+[\w.+~-]*)", text, re.MULTILINE)
    return m.group(1) if m else None


def dialect_from_texts(
    zfs_usage: str,
    zpool_usage: str,
    get_usage: str = "",
    version_text: str | None = None,
    holds_text: str | None = None,
    upgrade_text: str | None = None,
) -> Dialect:
    """Build a :class:`Dialect` from captured help texts (pure; the probe's logic).

    ``version_text``: output of ``zfs version`` or None if that command does not exist.
    ``holds_text``: combined output of ``zfs holds`` with no arguments, or None if not run.
    ``upgrade_text``: output of ``zfs upgrade -v``, or None if not run.
    """
    zu = parse_usage(zfs_usage)
    pu = parse_usage(zpool_usage)
    send = command_flags(zu, "send")
    recv = command_flags(zu, "receive") | command_flags(zu, "recv")
    has_version = "version" in zu and version_text is not None and _version(version_text) is not None
    holds_broken = holds_text is not None and bool(
        re.search(r"internal error|pyzfs|not implemented|unrecognized command", holds_text, re.I)
    )
    props = _property_names(get_usage)
    if has_version:
        name, version = "openzfs", _version(version_text or "")
    elif "version" not in zu and "p" not in command_flags(zu, "list"):
        name, version = "zfs-fuse", None
    else:
        name, version = "zfs", None
    return Dialect(
        name=name,
        version=version,
        resumable_receive={"s", "A"} <= recv and "t" in send,
        send_estimate={"n", "v", "P"} <= send,
        zvols=has_version,
        written_property="written" in props,
        holds={"hold", "holds", "release"} <= zu.keys() and not holds_broken,
        user_holds={"hold", "release"} <= zu.keys(),
        diff="diff" in zu,
        parsable_list="p" in command_flags(zu, "list"),
        zpool_list_parsable="p" in command_flags(pu, "list"),
        get_type_filter="t" in command_flags(zu, "get"),
        bookmarks="bookmark" in zu,
        recv_no_mount="u" in recv,
        recv_properties={"o", "x"} <= recv,
        send_compressed="c" in send,
        send_large_blocks="L" in send,
        send_embedded="e" in send,
        send_raw="w" in send,
        zpl_version=_zpl_version(upgrade_text),
    )


_cache: weakref.WeakKeyDictionary[Host, Dialect] = weakref.WeakKeyDictionary()
_by_key: dict[tuple[str, ...], Dialect] = {}  # hosts that name themselves stably (``dialect_key``)
_cache_lock = threading.Lock()


def _key(host: Host) -> tuple[str, ...] | None:
    key = getattr(host, "dialect_key", None)
    return tuple(key) if key else None


def _both(res: CommandResult) -> str:
    return res.text + "\n" + res.err_text


def probe(host: Host, *, refresh: bool = False) -> Dialect:
    """Probe ``host``'s zfs/zpool once (cached per host object) and return its dialect."""
    key = _key(host)
    if not refresh:
        with _cache_lock:
            hit = _by_key.get(key) if key is not None else _cache.get(host)
        if hit is not None:
            return hit
    zfs_usage = _both(cmd.run(host, ["zfs"], check=False, timeout=30))
    zu = parse_usage(zfs_usage)
    if "send" not in zu:
        raise UnsupportedFeature(f"{host.name}: `zfs` printed no usage listing; is ZFS installed?")
    zpool_usage = _both(cmd.run(host, ["zpool"], check=False, timeout=30))
    get_usage = _both(cmd.run(host, ["zfs", "get"], check=False, timeout=30))
    version_text: str | None = None
    if "version" in zu:
        res = cmd.run(host, ["zfs", "version"], check=False, timeout=30)
        version_text = res.text if res.returncode == 0 else None
    holds_text: str | None = None
    if "holds" in zu:
        holds_text = _both(cmd.run(host, ["zfs", "holds"], check=False, timeout=30))
    upgrade_text: str | None = None
    if "upgrade" in zu:
        res = cmd.run(host, ["zfs", "upgrade", "-v"], check=False, timeout=30)
        upgrade_text = res.text if res.returncode == 0 else None
    d = dialect_from_texts(zfs_usage, zpool_usage, get_usage, version_text, holds_text, upgrade_text)
    with _cache_lock:
        if key is not None:
            _by_key[key] = d
        else:
            _cache[host] = d
    return d


def forget(host: Host) -> None:
    """Drop the cached dialect of ``host`` (e.g. after an upgrade)."""
    key = _key(host)
    with _cache_lock:
        _cache.pop(host, None)
        if key is not None:
            _by_key.pop(key, None)
