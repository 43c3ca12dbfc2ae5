"""Issue 22 on the lab: a migration is a TaskFlow flow (``zfs_backend.flows.migrate``), so a controller
SIGKILLed in the middle of it is carried on by ``zfs-backend flow resume``: the volume ends up on the target
with its data (checksum), exported there once with its grants, nothing left on the source, and one
activity only (the resumed flow re-attached to it)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from polling import until

from zfs_backend.config import Settings
from zfs_backend.driver.service import VolumeService
from zfs_backend.lab import Lab, nfs
from zfs_backend.rpc.connect import connect_node

sys.path.insert(0, os.path.dirname(__file__))
from replication_helpers import cli

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")


@pytest.fixture(scope="module")
def svc(lab: Lab, lab_settings: Settings) -> Iterator[VolumeService]:
    s = VolumeService(lab_settings)
    yield s
    s.close()


def _sha(svc: VolumeService, name: str) -> str:
    rec = svc.get_volume(name)
    d = svc.driver(rec.node)
    path = f"{d.zfs.mountpoint(d.dataset_of(rec.model()))}/volume"
    return d.zfs.host.run(["sha256sum", path], timeout=300).text.split()[0]


def _held(settings: Settings, act_id: str, phase: str) -> Any:
    with connect_node("node1", settings) as node:
        rec = node.get(act_id).record()
    return rec if rec.state == "suspended" and rec.result.get("held") == phase else None


@pytest.mark.parametrize("when", ["at-the-hold", "after-the-unexport"])
def test_sigkilled_controller_mid_migration_then_flow_resume(
    svc: VolumeService, lab: Lab, lab_settings: Settings, when: str
) -> None:
    """``at-the-hold``: killed while the activity waits before its catch-up (the operator's hold), then
    the activity goes on to its hold before the quiesce and waits there for a controller.
    ``after-the-unexport``: killed as soon as the source is seen unexported (the activity goes on to its
    end alone; only the saved grants can export the volume on the target)."""
    name = f"f{uuid.uuid4().hex[:8]}"
    svc.create_volume(name, 1, "node1")
    client = lab.layout.controller_address
    try:
        d1 = svc.driver("node1")
        ds1 = d1.dataset_of(svc.get_volume(name).model())
        d1.zfs.host.run(
            ["dd", "if=/dev/urandom", f"of={d1.zfs.mountpoint(ds1)}/volume", "bs=1M", "count=16"],
            timeout=300,
        )
        svc.attach(name, {"ip": client})
        before = _sha(svc, name)
        hold = ["--hold-at", "catchup"] if when == "at-the-hold" else []
        argv = ["volume", "migrate", name, "--to", "node2", *hold, "--detach", "--json"]
        r = cli(lab_settings, *argv)
        assert r.returncode == 0, (r.stdout, r.stderr)
        started = json.loads(r.stdout)
        act_id, pid = started["id"], started["pid"]
        if when == "at-the-hold":
            until("the hold before the catch-up", lambda: _held(lab_settings, act_id, "catchup"), 120)
        else:
            until("the source's unexport", lambda: d1.exports.get(ds1) is None, 300)
        os.kill(pid, signal.SIGKILL)  # the controller dies mid-migration
        until("the controller's end", lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 30)

        vol_id = svc.get_volume(name).id
        r = cli(lab_settings, "flow", "list", "--json")
        assert r.returncode == 0, r.stderr
        [flow] = [f for f in json.loads(r.stdout) if f["name"] == f"migrate-{vol_id}"]
        assert flow["state"] == "RUNNING", flow
        if when == "at-the-hold":
            # the operator lets the activity go on: it stops again before its quiesce, for a controller
            # to unexport the source; nobody does (the source stays exported, the volume on node1)
            assert cli(lab_settings, "activity", "resume", act_id, "--node", "node1").returncode == 0
            until("the hold before the quiesce", lambda: _held(lab_settings, act_id, "quiesce"), 300)
            assert d1.exports.get(ds1) is not None
        assert svc.get_volume(name).node == "node1"

        t0 = time.monotonic()
        r = cli(lab_settings, "flow", "resume", flow["id"], "--json")
        print(f"flow resume of the migration: {time.monotonic() - t0:.2f} s")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert json.loads(r.stdout)["state"] == "SUCCESS", r.stdout

        rec = svc.get_volume(name)
        assert rec.node == "node2" and rec.status == "in-use", rec
        d2 = svc.driver("node2")
        ds2 = d2.dataset_of(rec.model())
        entry = d2.exports.get(ds2)
        assert entry is not None and client in entry.clients, entry
        assert [e for e in d2.exports.entries().values() if e.path == entry.path] == [entry]
        assert rec.provider_location == d2.location(ds2)
        assert _sha(svc, name) == before
        assert not d1.zfs.exists(ds1) and d1.exports.get(ds1) is None
        with connect_node("node1", lab_settings) as node:  # the resumed flow re-attached: one activity
            recs = [a.record() for a in node.list()]
        mine = [a.id for a in recs if a.kind == "migrate" and a.params.get("dataset") == str(ds1)]
        assert mine == [act_id], mine
        addr, path = rec.provider_location.split(":", 1)
        with nfs.NfsClient(addr, path) as c:  # writable at its new place, through the grant
            c.pwrite("/volume", 0, b"x" * 65536)
    finally:
        try:
            svc.detach(name)
        finally:
            svc.delete_volume(name)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True
