"""Shared fixtures and hooks. Lab fixtures live in tests/lab/conftest.py.

* Under ``CI=true`` a test that would be skipped (a missing prerequisite: root, a package, the cinder
  virtualenv, ...) is reported as a failure that names what was missing: a CI run cannot pass by
  skipping. Outside CI the skip stands, with its reason (``-ra`` lists them).
* The run ends with one line of counts: ``passed N, failed N, skipped N`` (errors count as failed).
* The lab of the integration tests (``tests/lab/``, ``tests/cinder/``): its own state directory and
  network, so it never touches the default lab that ``scripts/demo`` uses; one lab per test session
  (3 nodes), shared by both directories; tests that break a node restore it. Tests there are marked
  ``lab`` (and ``cinder`` under ``tests/cinder/``) and skip without root and the lab's binaries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: polling.py for every test

from zfs_backend.config import Settings, load_settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab

# Overridable so that two people can run lab tests at once without tearing each other's lab down.
TEST_NETWORK = os.environ.get("ZFS_BACKEND_TEST_NETWORK", "198.18.100.0/24")
TEST_HOME = Path(os.environ.get("ZFS_BACKEND_TEST_HOME", "/var/lib/zfs-backend-test"))
LAB_DIRS = {"tests/lab/": ("lab",), "tests/cinder/": ("lab", "cinder")}


def in_ci() -> bool:
    """True when the CI variable is set to anything but a false value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: tests may not skip for a missing prerequisite; {item.nodeid} would have skipped: "
            f"{_skip_reason(report)}"
        )
    return report


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not hasattr(reporter, "stats"):
        return
    stats = reporter.stats

    def count(*keys: str) -> int:
        return sum(len(stats.get(k, [])) for k in keys)

    reporter.write_line(
        f"passed {count('passed')}, failed {count('failed', 'error')}, skipped {count('skipped')}"
    )


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
        path = str(item.fspath).replace(os.sep, "/")
        for d, marks in LAB_DIRS.items():
            if d in path:
                for m in marks:
                    item.add_marker(getattr(pytest.mark, m))
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


@pytest.fixture(scope="session")
def nodes(lab: Lab, lab_settings: Settings) -> Iterator[dict[str, SSHHost]]:
    inv = load_inventory(lab_settings.inventory)
    hosts = {name: inv.connect(name, lab_settings) for name in inv.names}
    yield hosts
    for h in hosts.values():
        h.close()
