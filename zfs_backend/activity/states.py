"""The activity state machine: states as constants, allowed moves as a frozenset of pairs.

::

    pending ──► running ◄──► suspended
       │           │  │          │
       │           │  └──► succeeded
       │           └─────► failed ◄──┘ (and pending → failed)
       └──────► cancelling ──► cancelled   (from pending, running, suspended)
                    └────────► failed      (the rollback itself failed)

One function, :func:`check_transition`, decides; it raises ``InvalidTransition`` with a one-line
message and changes nothing.
"""

from __future__ import annotations

from ..errors import InvalidTransition

__all__ = [
    "ACTIVE",
    "ALL_STATES",
    "CANCELLED",
    "CANCELLING",
    "FAILED",
    "NON_TERMINAL",
    "PENDING",
    "RUNNING",
    "STATUS_CANCELLED",
    "STATUS_FAILED",
    "STATUS_OK",
    "SUCCEEDED",
    "SUSPENDED",
    "TERMINAL",
    "TRANSITIONS",
    "check_transition",
    "is_terminal",
    "verb_for",
]

PENDING = "pending"
RUNNING = "running"
SUSPENDED = "suspended"
CANCELLING = "cancelling"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

ALL_STATES: tuple[str, ...] = (PENDING, RUNNING, SUSPENDED, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED})
NON_TERMINAL: frozenset[str] = frozenset(ALL_STATES) - TERMINAL
#: states in which the activity's work may still move forward by itself
ACTIVE: frozenset[str] = frozenset({PENDING, RUNNING})

TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        (PENDING, RUNNING),  # start
        (PENDING, SUSPENDED),  # suspended before it started: starts on resume
        (PENDING, CANCELLING),
        (PENDING, FAILED),  # could not even start (bad plan, host unreachable)
        (RUNNING, SUSPENDED),
        (RUNNING, CANCELLING),
        (RUNNING, SUCCEEDED),
        (RUNNING, FAILED),
        (SUSPENDED, RUNNING),  # resume
        (SUSPENDED, CANCELLING),
        (SUSPENDED, FAILED),  # the held stream died and the kind cannot restart it
        (CANCELLING, CANCELLED),
        (CANCELLING, FAILED),  # rollback failed: the error says what is left behind
    }
)

_VERBS = {
    (PENDING, RUNNING): "start",
    (SUSPENDED, RUNNING): "resume",
    SUSPENDED: "suspend",
    CANCELLING: "cancel",
    CANCELLED: "finish cancelling",
    SUCCEEDED: "complete",
    FAILED: "fail",
    PENDING: "reset",
}


def is_terminal(state: str) -> bool:
    return state in TERMINAL


def verb_for(old: str, new: str) -> str:
    """The user-facing verb of the move ``old → new`` ("resume", "cancel", ...)."""
    if new == RUNNING:
        return "start" if old == PENDING else "resume"
    return _VERBS.get(new, f"move to {new}")


def check_transition(old: str, new: str, activity_id: str = "", verb: str | None = None) -> None:
    """Raise ``InvalidTransition`` unless ``old → new`` is an allowed move.

    The message is one line: ``cannot resume activity act-…: it is running``.
    """
    for s in (old, new):
        if s not in ALL_STATES:
            raise InvalidTransition(f"unknown activity state {s!r}")
    if (old, new) in TRANSITIONS:
        return
    what = f"activity {activity_id}" if activity_id else "activity"
    raise InvalidTransition(f"cannot {verb or verb_for(old, new)} {what}: it is {old}")


#: ``status`` of a succeeded activity; failed ones carry a process exit code or ``STATUS_FAILED``
STATUS_OK = 0
STATUS_FAILED = 1
#: ``status`` of a cancelled activity (the conventional "interrupted" exit code)
STATUS_CANCELLED = 130
