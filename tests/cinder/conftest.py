"""A real Cinder in front of the session's lab, once for this directory: ``scripts/cinder-up --purge``
before its first test, ``scripts/cinder-down --purge`` after its last, also when a test failed. Its
ports come from the test lab's network (``$ZFS_BACKEND_TEST_NETWORK``), so it cannot clash with a
Cinder of another lab. Without ``.venv-cinder`` or ``rabbitmq-server`` the tests skip (fail under
CI).

The modules run in their names' order: ``test_cinder_1_volumes.py`` (everything the driver has today),
then ``test_cinder_2_migrate_failover.py`` (``cinder migrate`` and ``cinder failover-host``: xfail until the
core driver has ``migrate_volume`` / ``failover_host``; the failover, its failback and a freeze/thaw of
node1's backend run last)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.cinderlab import procs
from zfs_backend.cinderlab.config import CinderLayout
from zfs_backend.cinderlab.services import RABBITMQ_SERVER
from zfs_backend.config import Settings
from zfs_backend.lab import Lab, nfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib

from cinder_helpers import ROOT, STANDBY, Cinder

VENV = ROOT / ".venv-cinder"
HERE = Path(__file__).resolve().parent


def _missing() -> str | None:
    if not (VENV / "bin" / "cinder-volume").exists() or not (VENV / "bin" / "cinder").exists():
        return f"{VENV} (cinder, python-cinderclient) is missing: run scripts/bootstrap --cinder"
    if not RABBITMQ_SERVER.exists():
        return "rabbitmq-server is not installed: run scripts/bootstrap --cinder"
    if not nfs.ganesha_available():
        return "nfs-ganesha is not installed (scripts/bootstrap installs it)"
    return None


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
    }


_STOP: list[Callable[[], None]] = []  # how to take this Cinder down, while it is up


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last test of this directory, take the services down (a fixture of package scope would
    live to the end of the session here: this directory is no Python package)."""
    if nextitem is None or Path(str(nextitem.fspath)).parent != HERE:
        while _STOP:
            _STOP.pop()()


@pytest.fixture(scope="session")
def cinder_layout(lab: Lab, lab_settings: Settings) -> Iterator[CinderLayout]:
    """The services up (the scheduler knowing every node's backend); down after this directory's last
    test (see ``pytest_runtest_teardown``), or at the end of the session at the latest."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    lay = CinderLayout(lab_settings, VENV)
    env = _env(lab_settings)
    t0 = time.monotonic()
    up = subprocess.run(
        [
            str(ROOT / "scripts" / "cinder-up"),
            "--purge",
            "--json",
            "--replication-device",
            f"node1:{STANDBY}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    if up.returncode != 0:
        _down(lay, env)
        pytest.fail(f"scripts/cinder-up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    report: dict[str, Any] = json.loads(up.stdout.strip().splitlines()[-1])
    print(f"\ncinder-up: {time.monotonic() - t0:.1f} s ({report['seconds']})", file=sys.stderr)
    for w in report.get("warnings", []):
        print(f"cinder-up: warning: {w}", file=sys.stderr)
    _STOP.append(lambda: _down(lay, env))
    try:
        yield lay
    finally:
        while _STOP:
            _STOP.pop()()


def _down(lay: CinderLayout, env: dict[str, str]) -> None:
    """``scripts/cinder-down --purge``, then nothing of this Cinder running or listening."""
    down = subprocess.run(
        [str(ROOT / "scripts" / "cinder-down"), "--purge"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert down.returncode == 0, f"scripts/cinder-down failed:\n{down.stdout}\n{down.stderr}"
    left = procs.marked(lay.root)
    assert not left, f"processes of the cinder left running: {[p.pid for p in left]}"
    listening = [p for p in lay.ports.all().values() if not procs.port_free(p)]
    assert not listening, f"ports still listening after cinder-down: {listening}"
    assert not lay.root.exists(), f"{lay.root} left behind"


@pytest.fixture(scope="session")
def cinder(cinder_layout: CinderLayout) -> Iterator[Cinder]:
    c = Cinder(cinder_layout)
    yield c
    c.close()
