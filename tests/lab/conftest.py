"""A lab for the integration tests: its own state directory and network, so it never touches the
default lab that `scripts/demo` uses. One lab per test session (3 nodes); tests that break a node
restore it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.config import Settings, load_settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab

# Overridable so that two people can run lab tests at once without tearing each other's lab down.
TEST_NETWORK = os.environ.get("ZFS_BACKEND_TEST_NETWORK", "198.18.100.0/24")
TEST_HOME = Path(os.environ.get("ZFS_BACKEND_TEST_HOME", "/var/lib/zfs-backend-test"))


def lab_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (namespaces, mounts)"
    if not Path("/dev/fuse").exists():
        return "lab tests need /dev/fuse"
    for b in ("zfs-fuse", "sshd", "nsenter"):
        if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"lab tests need {b} (run scripts/bootstrap)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_skip_reason()
    for item in items:
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def lab_settings() -> Settings:
    env = {
        "ZFS_BACKEND_HOME": str(TEST_HOME),
        "ZFS_BACKEND_LAB_NETWORK": TEST_NETWORK,
    }
    return load_settings(env)


@pytest.fixture(scope="session")
def lab(lab_settings: Settings) -> Iterator[Lab]:
    lab = Lab(lab_settings)
    lab.down()  # a previous run that was killed may have left one behind
    with contextlib.suppress(OSError):  # an empty home is made again by `lab up`, as a user's would be
        lab_settings.home.rmdir()
    lab = Lab(lab_settings)
    lab.up(nodes=3, pool_size=1 << 30, with_agent=_agent_available(), test_kinds=True)
    yield lab
    lab.down()


def _agent_available() -> bool:
    try:
        from zfs_backend.agent import daemon  # noqa: F401
    except ImportError:
        return False
    return True


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


@pytest.fixture(scope="session")
def nodes(lab: Lab, lab_settings: Settings) -> Iterator[dict[str, SSHHost]]:
    inv = load_inventory(lab_settings.inventory)
    hosts = {name: inv.connect(name, lab_settings) for name in inv.names}
    yield hosts
    for h in hosts.values():
        h.close()
