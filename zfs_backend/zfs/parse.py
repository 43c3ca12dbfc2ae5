"""Pure parsers of zfs/zpool output: ``-H`` tables, ``get -Hp`` triples, human sizes."""

from __future__ import annotations

import re

from ..errors import ParseError  # re-exported: zfs.parse.ParseError, zfs.ParseError

__all__ = [
    "ParseError",
    "parse_get",
    "parse_human_size",
    "parse_int",
    "parse_send_estimate",
    "parse_table",
]


#: no ZFS size exceeds 2**64 bytes (16 EiB)
MAX_SIZE = 1 << 64
_UNITS = {"": 0, "B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6, "Z": 7}
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)\s*([BKMGTPEZ]?)(?:i?B)?", re.IGNORECASE)


def parse_human_size(text: str) -> int | None:
    """``"1016M"`` -> 1065353216. Units are powers of 1024, decimals allowed; ``-``/``none`` -> None;
    beyond ``MAX_SIZE``: ``ParseError``.

    zfs-fuse prints sizes this way where it has no ``-p``; the result is only as exact as the text
    (three significant digits).
    """
    t = text.strip()
    if t in ("-", "", "none"):
        return None
    m = _HUMAN.fullmatch(t)
    if not m:
        raise ParseError(f"not a size: {text!r}")
    number, unit = m.group(1), m.group(2).upper()
    value = float(number) * (1024 ** _UNITS[unit])
    if not value <= MAX_SIZE:  # also infinity (hundreds of digits)
        raise ParseError(f"not a size: {text[:40]!r} is beyond 16 EiB")
    return round(value)


def parse_int(text: str) -> int | None:
    """An exact integer as printed by ``-p`` (``-`` -> None); falls back to a human size."""
    t = text.strip()
    if t in ("-", "", "none"):
        return None
    if t.isdigit():
        return int(t)
    return parse_human_size(t)


def parse_table(text: str, ncols: int) -> list[list[str]]:
    """Split ``-H`` output into rows of exactly ``ncols`` tab-separated fields."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != ncols:
            raise ParseError(f"expected {ncols} tab-separated fields, got {len(fields)}: {line[:120]!r}")
        rows.append(fields)
    return rows


def parse_get(text: str) -> dict[str, dict[str, str]]:
    """Parse ``zfs get -H -o name,property,value`` into ``{name: {property: value}}``, in order."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ParseError(f"expected name<TAB>property<TAB>value: {line[:120]!r}")
        name, prop, value = parts
        out.setdefault(name, {})[prop] = value
    return out


_SIZE_LINE = re.compile(r"^size\s+(\d+)\s*$", re.MULTILINE)


def parse_send_estimate(text: str) -> int | None:
    """The total from ``zfs send -nvP`` output (the last ``size\\t<bytes>`` line), or None."""
    found = _SIZE_LINE.findall(text)
    return int(found[-1]) if found else None
