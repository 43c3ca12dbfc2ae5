"""Issue 22 on the lab, from the command line: forced failovers both ways. The standby is promoted with the
primary's link down (``standby failover --force``), then, the link back, the old primary becomes the
standby again (``standby create`` onto it: its copy is kept aside whole, the node seeded anew) and the
next forced failover goes back to it; then a controlled one. Each promoted side is mounted, exported to
the volume's client, writable, and holds every acknowledged write (checksums)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import until

from zfs_backend.config import Settings
from zfs_backend.flows import standby as sb
from zfs_backend.flows.env import FlowEnv, set_env
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import cli
from standby_helpers import MiB, Writer, cleanup, flow_env, location, new_volume

pytestmark = pytest.mark.skipif(not nfs.ganesha_available(), reason="nfs-ganesha is not installed")


@pytest.fixture
def env(lab: Lab, lab_settings: Settings) -> Iterator[FlowEnv]:
    e = flow_env(lab_settings)
    old = set_env(e)
    yield e
    set_env(old)
    e.close()


def _synced_after(env: FlowEnv, vol: str, t: float) -> bool:
    rel = env.service().replication(vol)
    assert rel is not None and rel.activity_id is not None
    rec = env.agent(env.service().get_volume(vol).node).get(rel.activity_id).record()
    return float((rec.result.get("newest") or {}).get("taken_at") or 0) > t


def _read_only(d: Any, ds: Any) -> bool:
    value, source = d.zfs.get_with_source(ds, "readonly")
    return value == "on" or (value == "off" and source == "temporary")


def _write(env: FlowEnv, vol: str, nbytes: int) -> Writer:
    w = Writer(lambda: location(env, vol), rate=MiB).start()
    try:
        w.wait_for(nbytes)
    finally:
        w.stop()
    return w


def test_forced_failover_both_ways_then_a_controlled_one(
    env: FlowEnv, lab: Lab, lab_settings: Settings
) -> None:
    client = lab.layout.controller_address
    vol = new_volume(env, "node1", client)
    asides: list[str] = []
    try:
        r = cli(lab_settings, "standby", "create", vol, "--standby", "node2", "--interval", "2")
        assert r.returncode == 0, (r.stdout, r.stderr)
        for new, old in (("node2", "node1"), ("node1", "node2")):
            w = _write(env, vol, 2 * MiB)
            last = max(at for _, at in w.acked.values())
            until("a sync after the last write", lambda t=last: _synced_after(env, vol, t), 120)
            lab.link(old, False)
            try:
                t0 = time.monotonic()
                r = cli(lab_settings, "standby", "failover", vol, "--force", "--json")
                took = time.monotonic() - t0
                assert r.returncode == 0, (new, r.stdout, r.stderr)
            finally:
                lab.link(old, True)
            print(f"forced failover {old} -> {new}: command {took:.2f} s")
            rec = env.service().get_volume(vol)
            assert rec.node == new, rec
            d_new = env.driver(new)
            ds = d_new.dataset_of(rec.model())
            entry = d_new.exports.get(ds)
            assert entry is not None and client in entry.clients, entry
            assert not _read_only(d_new, ds) and d_new.zfs.is_mounted(ds)
            [st] = sb.standby_status(vol)
            assert st["replication_status"] == "failed-over" and st["detail"]["old_primary"] == old, st
            assert w.verify(location(env, vol)) == len(w.acked)  # all acked before the synced snapshot
            assert rec.provider_location is not None
            addr, path = rec.provider_location.split(":", 1)
            with nfs.NfsClient(addr, path) as c:  # writable through the grant
                c.pwrite("/volume", 64 << 20, b"y" * 65536)
            # the old primary answers again: it becomes the standby, its copy kept aside
            r = cli(lab_settings, "standby", "create", vol, "--standby", old, "--interval", "2", "--json")
            assert r.returncode == 0, (old, r.stdout, r.stderr)
            aside = json.loads(r.stdout)["set_aside"]
            asides.append(aside)
            d_old = env.driver(old)
            assert aside.startswith(f"{old}:") and d_old.zfs.exists(parse_dataset(aside.split(":", 1)[1]))
            [st] = sb.standby_status(vol)
            assert (st["primary"], st["standby"], st["replication_status"]) == (new, old, "enabled"), st
            assert _read_only(d_old, ds) and d_old.exports.get(ds) is None
        # and a controlled failover after the forced ones: nothing acknowledged is lost
        w = Writer(lambda: location(env, vol), rate=MiB).start()
        try:
            w.wait_for(MiB)
            r = cli(lab_settings, "standby", "failover", vol)
            assert r.returncode == 0, (r.stdout, r.stderr)
            w.wait_for(len(w.acked) * w.block + MiB)
        finally:
            w.stop()
        assert env.service().get_volume(vol).node == "node2"
        assert w.verify(location(env, vol)) == len(w.acked)
    finally:
        cleanup(env, vol, ["node1", "node2"])
        for a in asides:
            node, name = a.split(":", 1)
            with contextlib.suppress(Exception):
                env.driver(node).zfs.destroy(parse_dataset(name), recursive=True, deadline=30.0)
