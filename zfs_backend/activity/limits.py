"""The bounds of the live controls (``live``): the stall watchdog's timeout and a new bandwidth limit.
Kept apart (stdlib and errors only) so that the command line can read them without loading the
activity machinery."""

from __future__ import annotations

import math

from ..errors import UsageError
from .relay import MAX_BWLIMIT_BPS

__all__ = [
    "DEFAULT_STALL_TIMEOUT_S",
    "MAX_STALL_TIMEOUT_S",
    "MIN_BWLIMIT_BPS",
    "MIN_STALL_TIMEOUT_S",
    "parse_bwlimit_setting",
    "parse_stall_timeout",
]

#: no byte for this long (seconds) and the stream is torn down, unless the params say otherwise
DEFAULT_STALL_TIMEOUT_S = 120.0
#: below this a healthy stream could be taken for a stalled one (a zfs send that is still opening its
#: dataset, a throttled relay at 1 KiB/s moving 4 KiB batches)
MIN_STALL_TIMEOUT_S = 10.0
MAX_STALL_TIMEOUT_S = 7 * 86400.0
#: the lowest limit anything accepts (as ``Request.bwlimit_bps``)
MIN_BWLIMIT_BPS = 1024


def parse_stall_timeout(value: object) -> float:
    """A stall timeout in seconds within [``MIN_STALL_TIMEOUT_S``, ``MAX_STALL_TIMEOUT_S``]."""
    ok = isinstance(value, float) or (
        isinstance(value, int) and not isinstance(value, bool) and value < 1 << 64
    )
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(v) and MIN_STALL_TIMEOUT_S <= v <= MAX_STALL_TIMEOUT_S):
        raise UsageError(
            f"stall_timeout_s must be a number of seconds from {MIN_STALL_TIMEOUT_S:g} to "
            f"{MAX_STALL_TIMEOUT_S:g}, not {_shown(value)}"
        )
    return v


def parse_bwlimit_setting(value: object) -> int | None:
    """A new limit for a running activity: a whole number of bytes/s, or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_BWLIMIT_BPS <= value <= MAX_BWLIMIT_BPS
    ):
        raise UsageError(
            f"bwlimit must be {MIN_BWLIMIT_BPS}-{MAX_BWLIMIT_BPS} bytes/s or none, not {_shown(value)}"
        )
    return value


def _shown(value: object) -> str:
    """``value`` for an error line: short whatever its size (a huge int is never turned to text)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return "a number too large"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."
