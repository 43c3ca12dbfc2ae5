"""Ctrl-C while a command starts an activity and then follows it (``replicate``, ``volume replicate``,
``volume migrate|backup|restore``): whenever it comes, it cancels the activity (with rollback).

Ctrl-C raises ``KeyboardInterrupt`` anywhere Python runs. Once the agent has answered the start, an
interrupt before the command follows the activity left it running while the command said
"interrupted" (a migration's flow stopped between tasks, neither reverted nor done). So:
:func:`deferred` notes Ctrl-C instead of raising it while the command starts the activity (a start is
one round trip, bounded by the RPC's timeouts); :meth:`Deferral.raising` lets it raise again where the
activity is followed, and raises at once one noted before — inside the follower's ``try``, which
cancels on it (``progress.run_in_foreground``). Invariant: the switch back to raising happens inside
that ``try``, so no Ctrl-C falls between the two handlers. Signals reach the main thread only: on
another thread nothing is deferred (nothing to defer there).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Deferral", "deferred"]


class Deferral:
    """What :func:`deferred` yields: ``pending`` once a Ctrl-C was noted."""

    def __init__(self, active: bool) -> None:
        self.pending = False
        self.active = active  # our handler is installed (main thread)

    def note(self, signum: int, frame: Any) -> None:
        self.pending = True

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Ctrl-C raises ``KeyboardInterrupt`` inside, and one noted before raises on entry (the caller
        enters this inside the ``try`` that cancels on it). On exit Ctrl-C is noted again."""
        if not self.active:
            if self.pending:
                raise KeyboardInterrupt
            yield
            return
        noting = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            if self.pending:
                raise KeyboardInterrupt
            yield
        finally:
            signal.signal(signal.SIGINT, noting)


@contextlib.contextmanager
def deferred() -> Iterator[Deferral]:
    """Ctrl-C noted (``Deferral.pending``), not raised, inside; the previous handler back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield Deferral(active=False)
        return
    d = Deferral(active=True)
    previous = signal.signal(signal.SIGINT, d.note)
    try:
        yield d
    finally:
        signal.signal(signal.SIGINT, previous)
