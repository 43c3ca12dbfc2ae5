"""tests/polling.py: eventually and until."""

from __future__ import annotations

import itertools

import pytest
from polling import NotYet, eventually, until


def test_eventually_returns_once_the_call_stops_raising() -> None:
    calls = itertools.count()

    def flaky() -> int:
        n = next(calls)
        if n < 3:
            raise OSError("not yet")
        return n

    assert eventually(flaky, 5, interval=0) == 3


def test_eventually_raises_the_last_error_at_the_deadline() -> None:
    def never() -> None:
        raise OSError("still not")

    with pytest.raises(OSError, match="still not"):
        eventually(never, 0, interval=0)


def test_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "here"])
    assert until("a value", lambda: next(values), 5, interval=0) == "here"


def test_until_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="waiting for the seed to start"):
        until("the seed to start", lambda: None, 0, interval=0)


def test_only_the_retried_exception_is_asked_again() -> None:
    calls = itertools.count()

    def broken() -> None:
        next(calls)
        raise ValueError("broken, not late")

    with pytest.raises(ValueError, match="broken"):
        eventually(broken, 5, interval=0, retry=NotYet)
    assert next(calls) == 1


def test_until_does_not_swallow_an_error_of_the_call() -> None:
    def fails() -> None:
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        until("never", fails, 5, interval=0)
