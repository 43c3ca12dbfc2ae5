"""A hot standby between the Vagrant tier's OpenZFS VMs, from the command line: a volume on the first VM
written through NFS from the host (the tier's controller address, granted like any client) by the lab's
``Writer``, which remembers the checksum of every acknowledged (fsynced) block; ``standby create`` onto
the second VM while it writes; a controlled ``standby failover`` under the writer, and back. After each
failover every acknowledged block reads back equal from the new primary (the writer follows the volume's
``provider_location``). Holds keep the base (OpenZFS has user holds; zfs-fuse has none, so the lab never
sees this branch): the standby's base snapshot is held on both sides under the sync's tag, its destroy is
refused (``DatasetBusy``) and it stays, and ``standby remove`` releases both holds. The helpers are
the lab's (tests/lab/standby_helpers.py, replication_helpers.py): the flows, the volume service and
the writer are the same against the VMs' inventory.

The VMs are emulated (TCG): a slow writer, generous waits, no timing assertions."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.errors import DatasetBusy
from zfs_backend.flows import standby as sb
from zfs_backend.flows.env import FlowEnv, set_env
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import nfs
from zfs_backend.replication.receiver_standby import hold_tag
from zfs_backend.zfs import Zfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
sys.path.insert(0, str(Path(__file__).parent.parent / "lab"))  # and the lab's, reused as they are
from replication_helpers import cli
from standby_helpers import Writer, cleanup, flow_env, location, new_volume
from vagrant_helpers import CONTROLLER_ADDRESS

KiB = 1 << 10
RATE = 256 * KiB  # the writer's pace: ganesha on an emulated CPU


@pytest.fixture
def env(settings: Settings) -> Iterator[FlowEnv]:
    e = flow_env(settings)
    old = set_env(e)
    yield e
    set_env(old)
    e.close()


def _read_only(env: FlowEnv, node: str, vol: str) -> bool:
    d = env.driver(node)
    return d.zfs.get(d.dataset_of(env.service().get_volume(vol).model()), ["readonly"])["readonly"] == "on"


def test_standby_under_a_writer_failover_and_back_loses_no_acknowledged_write(
    vm_pair: tuple[SSHHost, SSHHost], env: FlowEnv, settings: Settings
) -> None:
    first, second = (h.name for h in vm_pair)
    vol = new_volume(env, first, CONTROLLER_ADDRESS)
    w = Writer(lambda: location(env, vol), rate=RATE).start()
    try:
        w.wait_for(512 * KiB, timeout=300)
        r = cli(settings, "standby", "create", vol, "--standby", second, "--interval", "5", timeout=900)
        assert r.returncode == 0, (r.stdout, r.stderr)
        [st] = sb.standby_status(vol)
        assert (st["primary"], st["standby"], st["replication_status"]) == (first, second, "enabled"), st
        assert _read_only(env, second, vol)
        for new, old in ((second, first), (first, second)):
            w.wait_for(len(w.acked) * w.block + 256 * KiB, timeout=300)  # writing on the primary
            n_before, t_failover = len(w.acked), time.time()
            r = cli(settings, "standby", "failover", vol, timeout=900)
            assert r.returncode == 0, (new, r.stdout, r.stderr)
            rec = env.service().get_volume(vol)
            assert rec.node == new and rec.status == "in-use", rec
            assert str(rec.provider_location).startswith(env.driver(new).options.export_address or "?")
            w.wait_for((n_before + 4) * w.block, timeout=300)  # the writer carries on, on the new primary
            assert w.verify(location(env, vol), before=t_failover) >= n_before
            [st] = sb.standby_status(vol)
            assert (st["primary"], st["standby"], st["replication_status"]) == (new, old, "enabled"), st
            assert st["detail"]["forced"] is False
            assert (
                _read_only(env, old, vol)
                and env.driver(old).exports.get(env.driver(old).dataset_of(rec.model())) is None
            )
    finally:
        w.stop()
    try:
        assert env.service().get_volume(vol).node == first
        assert w.verify(location(env, vol)) == len(w.acked)  # every acknowledged write, after both
        print(f"standby on OpenZFS: {len(w.acked)} acknowledged blocks verified, {w.errors} writer retries")
    finally:
        cleanup(env, vol, [first, second])


def test_the_standby_base_is_held_on_both_sides_until_the_standby_is_removed(
    vm_pair: tuple[SSHHost, SSHHost], env: FlowEnv, settings: Settings
) -> None:
    first, second = vm_pair
    vol = new_volume(env, first.name, CONTROLLER_ADDRESS)
    try:
        addr, path = location(env, vol).split(":", 1)
        with nfs.NfsClient(addr, path) as c:
            c.pwrite("/volume", 0, b"x" * (256 * KiB))
        r = cli(
            settings, "standby", "create", vol, "--standby", second.name, "--interval", "3600", timeout=900
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        rel = env.service().replication(vol)
        assert rel is not None and rel.activity_id
        tag = hold_tag(rel.activity_id)
        ds = env.driver(first.name).dataset_of(env.service().get_volume(vol).model())
        # the sync activity syncs once as it starts (after `create` returned), then every hour: wait for
        # that first sync and for both sides to hold the same snapshot (nothing moves it afterwards)
        zs = [Zfs(host, timeout=600) for host in (first, second)]
        agent = env.agent(first.name)
        deadline = time.monotonic() + 300
        while True:
            synced = int((agent.get(rel.activity_id).record().result or {}).get("syncs", 0)) >= 1
            held = [[s for s in z.list_snapshots(ds) if tag in z.holds(s.name)] for z in zs]
            if synced and all(len(h) == 1 for h in held) and held[0][0].guid == held[1][0].guid:
                break
            assert time.monotonic() < deadline, f"no common snapshot held under {tag}: {held}"
            time.sleep(2)
        bases = []
        for z, h in zip(zs, held, strict=True):
            with pytest.raises(DatasetBusy):
                z.destroy(h[0].name, deadline=0)
            assert [s.guid for s in z.list_snapshots(ds) if s.name == h[0].name] == [h[0].guid]
            bases.append((h[0].snap, h[0].guid))
        assert bases[0] == bases[1]  # the same snapshot (by GUID) is the base on both sides
        r = cli(settings, "standby", "remove", vol, timeout=900)
        assert r.returncode == 0, (r.stdout, r.stderr)
        z1 = Zfs(first, timeout=600)
        assert all(tag not in z1.holds(s.name) for s in z1.list_snapshots(ds))
        assert not Zfs(second, timeout=600).exists(ds)  # the standby replica is gone, with its hold
    finally:
        cleanup(env, vol, [first.name, second.name])
