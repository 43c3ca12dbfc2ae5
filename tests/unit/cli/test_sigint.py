"""``cli.sigint``: Ctrl-C noted while a command starts an activity, raised again where it follows it (one
noted before raises on entry), the previous handler back afterwards; ``progress.run_in_foreground`` and
``start_and_follow`` cancel the activity on it, whenever it came."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.cli import sigint
from zfs_backend.cli.progress import EXIT_CANCELLED, run_in_foreground, start_and_follow

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_activity import Act, Escaped, escaped


@pytest.fixture(autouse=True)
def _ctrl_c_escapes() -> Iterator[None]:
    """Outside the handling under test a Ctrl-C fails the test (``Escaped``), not the test session."""
    before = signal.signal(signal.SIGINT, escaped)
    yield
    assert signal.getsignal(signal.SIGINT) is escaped  # every handler installed is gone afterwards
    signal.signal(signal.SIGINT, before)


def test_noted_inside_raised_where_followed_noted_again_after() -> None:
    with sigint.deferred() as d:
        signal.raise_signal(signal.SIGINT)
        assert d.pending
        with pytest.raises(KeyboardInterrupt), d.raising():  # the one noted before raises on entry
            pass
        d.pending = False
        with pytest.raises(KeyboardInterrupt), d.raising():
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # noted again, not raised
        assert d.pending


def test_off_the_main_thread_nothing_is_deferred() -> None:
    seen: list[object] = []

    def run() -> None:
        with sigint.deferred() as d:
            seen.append(d.active)
            d.pending = True
            try:
                with d.raising():
                    seen.append("entered")
            except KeyboardInterrupt:
                seen.append("raised")

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [False, "raised"]


@pytest.mark.parametrize("detach", [False, True])
def test_a_noted_interrupt_cancels_at_once(capsys: pytest.CaptureFixture[str], detach: bool) -> None:
    act = Act()
    with sigint.deferred() as d:
        signal.raise_signal(signal.SIGINT)
        rc = run_in_foreground(act, label="x", as_json=False, detach=detach, sigint=d)  # type: ignore[arg-type]
    assert rc == EXIT_CANCELLED and act.cancelled == 1
    out = capsys.readouterr().out
    assert "interrupted: cancelling" in out and "cancelled" in out


@pytest.mark.parametrize("when", ["before following", "while following"])
def test_start_and_follow_cancels_on_ctrl_c(when: str) -> None:
    act = Act()

    def start() -> Act:
        if when == "before following":
            signal.raise_signal(signal.SIGINT)  # the agent is answering the start
        return act

    assert start_and_follow(start, label="x", as_json=False, detach=False) == EXIT_CANCELLED  # type: ignore[arg-type]
    assert act.cancelled == 1


def test_a_start_that_fails_raises_its_error_after_a_ctrl_c() -> None:
    def start() -> Act:
        signal.raise_signal(signal.SIGINT)
        raise RuntimeError("refused: nothing started")

    with pytest.raises(RuntimeError, match="refused"):
        start_and_follow(start, label="x", as_json=False, detach=False)  # type: ignore[arg-type]


def test_escaped_is_what_the_fixture_catches() -> None:
    with pytest.raises(Escaped):
        signal.raise_signal(signal.SIGINT)
