"""Fixtures of the lab integration tests. The lab itself (``lab``, ``lab_settings``, ``nodes``) is
shared with ``tests/cinder/`` and lives in ``tests/conftest.py``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from zfs_backend.hosts import SSHHost


@pytest.fixture
def names(nodes: dict[str, SSHHost]) -> Iterator[list[str]]:
    """Dataset names for one test (``tank/r<hex>``, see ``replication_helpers.new_name``), destroyed on
    every node afterwards."""
    from zfs_backend.zfs import Zfs, parse_dataset

    made: list[str] = []
    yield made
    for host in nodes.values():
        z = Zfs(host)
        for n in made:
            with contextlib.suppress(Exception):
                z.destroy(parse_dataset(n), recursive=True, missing_ok=True, deadline=20)
