"""Fixtures for the zfs unit tests: canned help texts, a scripted FakeHost, a manual clock.

Fixtures, not importable helpers: the suite runs with ``--import-mode=importlib``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from zfs_backend.hosts.fake import FakeHost

DATA = Path(__file__).parent / "data"

Reply = tuple[int, str, str]


def canned(name: str) -> str:
    return (DATA / name).read_text()


def scripted(table: dict[tuple[str, ...], Reply | list[Reply]], name: str = "n1") -> FakeHost:
    """A FakeHost answering each exact argv from ``table``; a list is consumed one reply per call.

    Unknown argv -> rc 99 so a test notices.
    """

    def responder(argv: tuple[str, ...], stdin: bytes | None) -> Reply:
        reply = table.get(argv)
        if reply is None:
            return 99, "", f"unexpected argv {argv!r}"
        if isinstance(reply, list):
            return reply.pop(0) if len(reply) > 1 else reply[0]
        return reply

    return FakeHost(responder, name=name)


def fuse_probe_table() -> dict[tuple[str, ...], Reply | list[Reply]]:
    return {
        ("zfs",): (2, "", canned("zfs_fuse_07_zfs_usage.txt")),
        ("zpool",): (2, "", canned("zfs_fuse_07_zpool_usage.txt")),
        ("zfs", "get"): (2, "", canned("zfs_fuse_07_get_usage.txt")),
        ("zfs", "holds"): (255, "", canned("zfs_fuse_07_holds.txt")),
        ("zfs", "upgrade", "-v"): (0, canned("zfs_fuse_07_upgrade_v.txt"), ""),
    }


def openzfs_probe_table() -> dict[tuple[str, ...], Reply | list[Reply]]:
    return {
        ("zfs",): (2, "", canned("openzfs_2_zfs_usage.txt")),
        ("zpool",): (2, "", canned("openzfs_2_zpool_usage.txt")),
        ("zfs", "get"): (2, "", canned("openzfs_2_get_usage.txt")),
        ("zfs", "version"): (0, canned("openzfs_2_version.txt"), ""),
        ("zfs", "holds"): (2, "", canned("openzfs_2_holds.txt")),
        ("zfs", "upgrade", "-v"): (0, canned("openzfs_2_upgrade_v.txt"), ""),
    }


class FakeClock:
    """A manual clock: ``sleep`` advances ``now``; no real waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        self.sleeps.append(dt)
        self.now += dt


Scripted = Callable[..., FakeHost]


@pytest.fixture
def scripted_host() -> Scripted:
    return scripted


@pytest.fixture
def canned_text() -> Callable[[str], str]:
    return canned


@pytest.fixture
def fuse_table() -> dict[tuple[str, ...], Reply | list[Reply]]:
    return fuse_probe_table()


@pytest.fixture
def openzfs_table() -> dict[tuple[str, ...], Reply | list[Reply]]:
    return openzfs_probe_table()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
