"""The Vagrant tier: OpenZFS 2.x storage VMs reached through the inventory that
``scripts/vagrant-tier up`` writes (``$ZFS_BACKEND_VAGRANT_INVENTORY``).

``scripts/test --vagrant`` brings the VMs up, runs these tests and always destroys the VMs. Without
it (a plain ``scripts/test``) they are deselected. The ones marked ``slow`` (minutes each under TCG) run
too, CI included; ``ZFS_BACKEND_VAGRANT_SLOW=0`` leaves them out of a run by hand (``scripts/test``
refuses it under ``CI=true``). A missing prerequisite
(``$ZFS_BACKEND_VAGRANT_UNAVAILABLE``, from ``scripts/vagrant-tier check``) skips them naming it,
or fails them under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings, load_settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.hosts.inventory import Inventory
from zfs_backend.zfs import Zfs, parse_dataset


def _requested() -> bool:
    """The tier was asked for (scripts/test --vagrant sets one of these)."""
    return bool(
        os.environ.get("ZFS_BACKEND_VAGRANT_INVENTORY") or os.environ.get("ZFS_BACKEND_VAGRANT_UNAVAILABLE")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests `vagrant`; deselect them when the tier was not asked for (a plain
    `scripts/test`): not run, and not a skip (which CI would count as a missing prerequisite)."""
    mine = [i for i in items if "tests/vagrant/" in str(i.fspath).replace(os.sep, "/")]
    for item in mine:
        item.add_marker(pytest.mark.vagrant)
    if mine and not _requested():
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]
        return
    # the long ones (marked `slow`: minutes each under TCG; docs/vagrant.md lists them with their times)
    # are left out only when asked, by hand (ZFS_BACKEND_VAGRANT_SLOW=0; scripts/test refuses it in CI)
    slow = [i for i in mine if i.get_closest_marker("slow")]
    if slow and os.environ.get("ZFS_BACKEND_VAGRANT_SLOW", "1") == "0":
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i not in slow]


def _unavailable() -> tuple[str, bool] | None:
    """(reason, is_missing_prerequisite) when the tier cannot be used, else None."""
    missing = os.environ.get("ZFS_BACKEND_VAGRANT_UNAVAILABLE")
    if missing:
        return missing, True
    inv = os.environ.get("ZFS_BACKEND_VAGRANT_INVENTORY")
    if not inv:  # run by hand with -p/-k: say how to get the tier
        return "the Vagrant tier is not up: run scripts/test --vagrant", False
    if not Path(inv).is_file():
        return f"the Vagrant tier's inventory {inv} does not exist (scripts/vagrant-tier up)", True
    return None


@pytest.fixture(scope="session", autouse=True)
def _vagrant_tier_required() -> None:
    """First of this directory's fixtures (session-scoped, autouse): skip or fail before any other."""
    why = _unavailable()
    if why is None:
        return
    reason, missing = why
    if missing and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vagrant_inventory() -> Inventory:
    return load_inventory(os.environ["ZFS_BACKEND_VAGRANT_INVENTORY"])


@pytest.fixture(scope="session")
def vms(vagrant_inventory: Inventory) -> Iterator[dict[str, SSHHost]]:
    """One SSHHost per VM (strict host keys against the tier's known_hosts)."""
    settings = load_settings()
    # Emulated VMs answer slowly: generous connect timeouts.
    hosts = {n: vagrant_inventory.connect(n, settings, connect_timeout=60) for n in vagrant_inventory.names}
    yield hosts
    for h in hosts.values():
        h.close()


@pytest.fixture(scope="session")
def vm_pair(vms: dict[str, SSHHost]) -> tuple[SSHHost, SSHHost]:
    names = sorted(vms)
    if len(names) < 2:
        pytest.skip("needs two VMs (ZFS_BACKEND_VAGRANT_NODES=2)")
    return vms[names[0]], vms[names[1]]


@pytest.fixture
def scratch(vms: dict[str, SSHHost]) -> Iterator[str]:
    """A fresh dataset name under tank (``tank/t-<hex>``), destroyed on every VM afterwards."""
    name = f"tank/t-{uuid.uuid4().hex[:10]}"
    yield name
    ds = parse_dataset(name)
    for h in vms.values():
        z = Zfs(h, timeout=300)
        with contextlib.suppress(Exception):  # best effort; the destroy below reports
            if z.resume_token(ds) is not None:
                z.abort_resumable_receive(ds)
        with contextlib.suppress(Exception):  # a failed test may leave holds behind
            for s in z.list_snapshots(ds):
                for tag in z.holds(s.name):
                    z.release(s.name, tag)
        z.destroy(ds, recursive=True, missing_ok=True, deadline=60)


# -- the replication tests' fixtures (test_replication_openzfs*.py; their helpers: replication_vm.py) ----

_T = 600.0  # seconds for any one step on an emulated VM


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The controller's settings: the tier's inventory, a home of this module's own."""
    home = tmp_path_factory.mktemp("controller")
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(home),
        "ZFS_BACKEND_INVENTORY": os.environ["ZFS_BACKEND_VAGRANT_INVENTORY"],
    }
    return load_settings(env)


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, Any]]:
    """One agent session per VM for the module (a session costs an SSH set-up under emulation)."""
    made: dict[str, Any] = {}
    yield made
    for node in made.values():
        with contextlib.suppress(Exception):
            node.close()


@pytest.fixture
def names(vms: dict[str, SSHHost]) -> Iterator[list[str]]:
    """Datasets a test made (on any VM): destroyed on every VM afterwards, resume tokens first."""
    made: list[str] = []
    yield made
    for h in vms.values():
        z = Zfs(h, timeout=_T)
        for name in made:
            ds = parse_dataset(name)
            with contextlib.suppress(Exception):
                if z.resume_token(ds) is not None:
                    z.abort_resumable_receive(ds)
            with contextlib.suppress(Exception):
                z.destroy(ds, recursive=True, missing_ok=True, deadline=120)
