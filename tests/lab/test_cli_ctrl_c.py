"""Ctrl-C (SIGINT) in ``replicate`` and ``volume replicate`` as a user runs them, on the lab: exit 130, the
activity cancelled (not left running), the destination rolled back (a full stream's dataset gone). Once
while the transfer is followed, once as soon as the agent lists the activity. The race ``cli.sigint``
closes (a Ctrl-C after the agent's answer to the start, before the command follows the activity) is
narrower than a test can aim at from outside: these pass without the fix too, the unit tests
(``tests/unit/cli/test_replicate_sigint.py``) hit it. ``volume migrate``'s Ctrl-C:
``test_volume_jobs_cli.py``."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import MiB, _agent, cli_env, new_name, shaped, snapshot, write


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def _on_node1(settings: Settings, dataset: str) -> Callable[[], Any]:
    """The replication of ``dataset`` on node1's agent, once it is there (else None)."""

    def found() -> Any:
        for act in _agent(settings, "node1").list():
            rec = act.record()
            if rec.kind == "replicate" and str(rec.params.get("snapshot", "")).startswith(f"{dataset}@"):
                return act
        return None

    return found


def _interrupt(settings: Settings, argv: list[str], ready: Callable[[], bool]) -> tuple[int, str, str]:
    """Run ``zfs-backend ARGV``, send it SIGINT once ``ready()``, and return its exit code and output."""
    p = subprocess.Popen(
        [sys.executable, "-m", "zfs_backend.cli.main", *argv],
        env=cli_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, out, err


def test_ctrl_c_while_replicate_follows_cancels_it(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 24)
    snapshot(src, ds, "s1")
    found = _on_node1(lab_settings, ds)

    def moving() -> bool:
        act = found()
        return act is not None and act.record().progress.pair[0] >= 2 * MiB

    with shaped(lab, "node1", 4):
        rc, out, err = _interrupt(lab_settings, ["replicate", f"node1:{ds}@s1", f"node2:{ds}"], moving)
    assert rc == 130, (out, err)
    assert "cancelled" in out, out
    act = found()
    assert act is not None and act.wait(60) == "cancelled", act.record()
    assert not _exists(dst, ds)


@pytest.fixture
def svc(lab: Lab, lab_settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(lab_settings)
    yield s
    s.close()


def test_ctrl_c_as_volume_replicate_starts_cancels_it(
    svc: VolumeService, nodes: dict[str, SSHHost], lab_settings: Settings, lab: Lab
) -> None:
    name = f"c{uuid.uuid4().hex[:8]}"
    svc.create_volume(name, 1, "node1")
    try:
        rec = svc.get_volume(name)
        ds = str(svc.driver("node1").dataset_of(rec.model()))
        write(nodes["node1"], ds, "volume", 24)
        svc.create_snapshot(name, "s1")
        found = _on_node1(lab_settings, ds)
        with shaped(lab, "node1", 4):
            argv = ["volume", "replicate", f"{name}@s1", "--to", "node2"]
            rc, out, err = _interrupt(lab_settings, argv, lambda: found() is not None)
        assert rc == 130, (out, err)
        assert "cancelled" in out, out
        act = found()
        assert act is not None and act.wait(60) == "cancelled", act.record()
        assert not _exists(nodes["node2"], ds)
    finally:
        with contextlib.suppress(Exception):
            svc.delete_snapshot(name, "s1")
        svc.delete_volume(name)


def _exists(host: SSHHost, dataset: str) -> bool:
    return Zfs(host).exists(parse_dataset(dataset))
