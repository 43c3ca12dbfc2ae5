"""Formatting helpers for the CLI: sizes, rates, durations. Pure."""

from __future__ import annotations

import re

from ..errors import UsageError

__all__ = ["human_bytes", "human_duration", "human_rate", "parse_rate"]

_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)(bit|bps|b|B)?(?:/s)?\s*$", re.IGNORECASE)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def human_rate(bps: float | None) -> str:
    return "-" if bps is None else f"{human_bytes(bps)}/s"


def human_duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def parse_rate(text: str) -> int:
    """Parse a rate into bits per second.

    ``100mbit`` / ``1gbit`` are bits (powers of 1000); ``20M``, ``20MB/s``, ``20MiB`` are bytes per second
    (powers of 1024), as in pv and zrepl. At most 1 TiB/s (``MAX_BWLIMIT_BPS``).
    """
    from ..activity.relay import MAX_BWLIMIT_BPS  # here: render is imported by every client command

    shown = repr(text if len(text) <= 40 else text[:40] + "...")
    m = _RATE_RE.match(text) if len(text) <= 40 else None
    if not m:
        raise UsageError(f"invalid rate {shown}: expected e.g. 100mbit, 20M or 20MB/s")
    value, prefix, _i, unit = float(m.group(1)), m.group(2).lower(), m.group(3), (m.group(4) or "")
    if unit.lower() == "bit":
        bits = value * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[prefix]
    else:
        bits = value * 8 * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[prefix]
    if bits < 8000:
        raise UsageError(f"invalid rate {shown}: below 1 kB/s")
    if not bits <= 8 * MAX_BWLIMIT_BPS:  # also infinity
        raise UsageError(f"invalid rate {shown}: above 1 TiB/s")
    return int(bits)
