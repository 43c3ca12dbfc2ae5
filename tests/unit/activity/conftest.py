"""Fixtures of the activity tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.activity import ActivityContext, ActivityStore


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ActivityContext]:
    """A context on a fresh store of its own, node ``test``."""
    st = ActivityStore(tmp_path / "state" / "activities.db")
    yield ActivityContext(store=st, node="test")
    st.close()
