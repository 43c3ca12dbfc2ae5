"""Waiting in tests, in one place: ``eventually`` (a call once it stops raising) and ``until`` (a call's
first truthy value), for things that happen after the test's own call returns (ganesha applying a
SIGHUP, an agent's stream moving bytes, a conductor claiming a job). A bound on waiting, never a timed
assertion: both only say how long to keep asking before the test fails.

Every test can import it (``from polling import eventually, until``): ``tests/conftest.py`` puts this
directory on ``sys.path`` (``--import-mode=importlib`` does not).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["NotYet", "eventually", "until"]

T = TypeVar("T")


class NotYet(AssertionError):
    """What ``fn`` raises to say "not yet": the message is what the test fails with at the deadline."""


def eventually(
    fn: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.2,
    retry: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> T:
    """``fn()``'s value once it stops raising; after ``timeout`` seconds, its last exception. Only
    ``retry`` exceptions are asked again (``retry=NotYet``: anything else fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except retry:
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)


def until(what: str, fn: Callable[[], T | None], timeout: float = 20.0, *, interval: float = 0.2) -> T:
    """``fn()``'s first truthy value; after ``timeout`` seconds an ``AssertionError`` naming ``what``.
    An exception of ``fn`` fails at once."""

    def truthy() -> T:
        value = fn()
        if not value:
            raise NotYet(f"timed out after {timeout:g} s waiting for {what}")
        return value

    return eventually(truthy, timeout, interval=interval, retry=NotYet)
