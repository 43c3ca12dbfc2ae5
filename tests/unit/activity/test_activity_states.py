import itertools

import pytest

from zfs_backend.activity import states as S
from zfs_backend.errors import ActivityError, InvalidTransition

LEGAL = {
    ("pending", "running"),
    ("pending", "suspended"),
    ("pending", "cancelling"),
    ("pending", "failed"),
    ("running", "suspended"),
    ("running", "cancelling"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("suspended", "running"),
    ("suspended", "cancelling"),
    ("suspended", "failed"),
    ("cancelling", "cancelled"),
    ("cancelling", "failed"),
}


def test_states_and_terminal():
    assert S.ALL_STATES == (
        "pending",
        "running",
        "suspended",
        "cancelling",
        "succeeded",
        "failed",
        "cancelled",
    )
    assert frozenset({"succeeded", "failed", "cancelled"}) == S.TERMINAL
    assert S.TRANSITIONS == LEGAL


@pytest.mark.parametrize("old,new", sorted(itertools.product(S.ALL_STATES, S.ALL_STATES)))
def test_every_pair(old, new):
    if (old, new) in LEGAL:
        S.check_transition(old, new, "act-1")
    else:
        with pytest.raises(InvalidTransition) as ei:
            S.check_transition(old, new, "act-1")
        msg = str(ei.value)
        assert "\n" not in msg
        assert msg.startswith("cannot ") and "act-1" in msg and msg.endswith(f"it is {old}")
        assert isinstance(ei.value, ActivityError)


def test_no_move_out_of_terminal():
    for t in S.TERMINAL:
        for new in S.ALL_STATES:
            with pytest.raises(InvalidTransition):
                S.check_transition(t, new)


def test_messages():
    with pytest.raises(InvalidTransition, match=r"^cannot resume activity act-X: it is running$"):
        S.check_transition("running", "running", "act-X")
    with pytest.raises(InvalidTransition, match=r"^cannot suspend activity act-X: it is succeeded$"):
        S.check_transition("succeeded", "suspended", "act-X")
    with pytest.raises(InvalidTransition, match=r"^cannot cancel activity act-X: it is succeeded$"):
        S.check_transition("succeeded", "cancelling", "act-X")
    with pytest.raises(InvalidTransition, match="unknown activity state"):
        S.check_transition("running", "exploded")
