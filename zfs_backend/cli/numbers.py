"""argparse ``type=`` functions for numeric options: bounded, finite, one line when refused.

Each returns a function that turns the option's text into a number within ``[low, high]`` or raises
:class:`UsageError` naming the option, its range and what was given. ``main`` catches it around
``parse_args``, so an absurd number (negative, zero where it means nothing, NaN, infinity, 400 digits)
is one line and exit 2 before anything runs, never a traceback nor argparse's usage block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from ..errors import UsageError

__all__ = ["PORT_MAX", "seconds", "whole"]

PORT_MAX = 65535
_MAX_TEXT = 32  # longer than any sane number: shown cut, never parsed
_WHOLE = re.compile(rf"-?[0-9]{{1,{_MAX_TEXT}}}")


def _shown(text: str) -> str:
    return repr(text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "...")


def seconds(option: str, low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite number of seconds in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    span = f"{'more than' if low_open else 'at least'} {low:g} and at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= _MAX_TEXT else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise UsageError(f"{option} must be a number of seconds, {span}, not {_shown(text)}")
        return value

    return parse


def whole(option: str, low: int, high: int) -> Callable[[str], int]:
    """A whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        t = text.strip()
        if not _WHOLE.fullmatch(t) or not low <= int(t) <= high:
            raise UsageError(f"{option} must be a whole number from {low} to {high}, not {_shown(text)}")
        return int(t)

    return parse
