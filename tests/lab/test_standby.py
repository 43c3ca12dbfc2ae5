"""Hot standby on the lab, through the flows (in this process): created while a writer keeps writing to
the volume through NFS, lag under --max-lag at a steady write rate, a controlled failover that loses no
acknowledged write (checksums), a forced failover with the primary's link down (the data-loss window
reported, the old primary fenced), both dual-state paths, a failing step that reverts and leaves both
sides as they were, and the generic path for a driver that does not publish snapshot_replicate. No
timed assertions: lag is checked against a generous goal, never a duration."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import until

from zfs_backend.config import Settings
from zfs_backend.flows import standby as sb
from zfs_backend.flows import standby_tasks
from zfs_backend.flows.env import FlowEnv, set_env
from zfs_backend.flows.runs import show_flow
from zfs_backend.hosts import SSHHost
from zfs_backend.kinds.standby import PREFIX
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import cli
from standby_helpers import MiB, Writer, cleanup, flow_env, location, new_volume

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)


@pytest.fixture
def env(lab: Lab, lab_settings: Settings) -> Iterator[FlowEnv]:
    e = flow_env(lab_settings)
    old = set_env(e)
    yield e
    set_env(old)
    e.close()


@pytest.fixture
def client(lab: Lab) -> str:
    return lab.layout.controller_address


def sync_record(e: FlowEnv, volume: str) -> Any:
    rel = e.service().replication(volume)
    assert rel is not None and rel.activity_id
    return e.agent(e.service().get_volume(volume).node).get(rel.activity_id).record()


def read_only(d: Any, ds: Any) -> bool:
    """zfs-fuse shows a mounted read-only dataset as ``off`` with source ``temporary``."""
    value, source = d.zfs.get_with_source(ds, "readonly")
    return value == "on" or (value == "off" and source == "temporary")


def snapshots(host: SSHHost, ds: str) -> list[tuple[str, int]]:
    return [(s.snap, s.guid) for s in Zfs(host).list_snapshots(parse_dataset(ds))]


def test_standby_while_writing_lag_then_controlled_failover_loses_nothing(
    env: FlowEnv, client: str, lab_settings: Settings
) -> None:
    vol = new_volume(env, "node1", client)
    w = Writer(lambda: location(env, vol), rate=MiB).start()
    try:
        w.wait_for(2 * MiB)
        statuses: list[str] = []
        run = sb.standby_create(
            lab_settings,
            vol,
            "node2",
            interval_s=2.0,
            max_lag_s=30.0,
            on_progress=lambda *a: statuses.append(env.service().get_volume(vol).status),
        )
        assert run.state == "SUCCESS", run.error
        assert set(statuses) == {"in-use"}  # stateless: the volume stayed in-use (and writable) throughout
        rec = sync_record(env, vol)
        assert rec.kind == "standby-sync" and rec.state == "running" and rec.progress.pair == (0, 0)
        assert rec.self_restarting is True
        # lag under --max-lag at a steady write rate (a generous goal: no timing is asserted)
        lags = []
        for _ in range(8):
            time.sleep(1.0)
            [st] = sb.standby_status(vol)
            assert st["state"] == "running" and st["last_error"] is None, st
            lags.append(st["lag_s"])
        assert all(lag is not None and lag < 30.0 for lag in lags), lags
        assert sync_record(env, vol).result["syncs"] >= 2
        n_before = len(w.acked)
        t_failover = time.time()
        run = sb.standby_failover(lab_settings, vol)
        assert run.state == "SUCCESS", run.error
        rec_vol = env.service().get_volume(vol)
        assert rec_vol.node == "node2" and rec_vol.status == "in-use"
        assert rec_vol.provider_location and rec_vol.provider_location.startswith(
            str(env.driver("node2").options.export_address)
        )
        w.wait_for((n_before + 16) * w.block)  # the writer carries on, on node2
    finally:
        w.stop()
    try:
        # every write acknowledged before the failover started (and after it) is on the new primary
        assert w.verify(location(env, vol), before=t_failover) >= n_before
        assert w.verify(location(env, vol)) == len(w.acked)
        # the relationship is reversed: node1 is the standby, synced by node2's agent
        [st] = sb.standby_status(vol)
        assert (st["primary"], st["standby"], st["replication_status"]) == ("node2", "node1", "enabled")
        assert st["state"] == "running" and st["detail"]["forced"] is False
        old = env.driver("node1")
        ds = old.dataset_of(rec_vol.model())
        assert read_only(old, ds) and old.exports.get(ds) is None
    finally:
        cleanup(env, vol, ["node1", "node2"])


def test_forced_failover_with_the_primary_link_down(
    env: FlowEnv, client: str, lab: Lab, lab_settings: Settings
) -> None:
    vol = new_volume(env, "node1", client)
    w = Writer(lambda: location(env, vol), rate=MiB).start()
    try:
        w.wait_for(1 * MiB)
        assert sb.standby_create(lab_settings, vol, "node3", interval_s=2.0).state == "SUCCESS"
        w.wait_for(6 * MiB)
        sync_id = sync_record(env, vol).id
        w.stop()
        time.sleep(3.0)  # at least one sync after the last write
        newest = sync_record(env, vol).result["newest"]
        lab.link("node1", False)
        try:
            t0 = time.time()
            run = sb.standby_failover(lab_settings, vol, force=True)
            assert run.state == "SUCCESS", run.error
            [st] = sb.standby_status(vol)
            d = st["detail"]
            assert st["primary"] == "node3" and st["replication_status"] == "failed-over"
            assert d["forced"] is True and d["snapshot"].startswith(PREFIX) and sync_id in d["fenced"]
            assert d["snapshot"] >= newest["snapshot"]
            assert 0 <= d["lost_window_s"] <= time.time() - d["snapshot_time"]
            assert d["snapshot_time"] <= t0
            # what the standby holds is every write acknowledged before its newest snapshot was taken
            assert w.verify(location(env, vol), before=d["snapshot_time"]) > 0
        finally:
            lab.link("node1", True)
        # the old primary's sync comes back and is refused (fenced): it fails, the promoted volume stays
        act = env.agent("node1").get(sync_id)
        assert act.wait(120) == "failed" and "fenced" in (act.error or ""), act.error
        promoted = env.driver("node3")
        ds = promoted.dataset_of(env.service().get_volume(vol).model())
        assert not read_only(promoted, ds)
    finally:
        cleanup(env, vol, ["node1", "node3"])


def test_without_stateless_operations_the_volume_is_busy_meanwhile(
    lab_settings: Settings, client: str, lab: Lab
) -> None:
    e = flow_env(lab_settings, stateless_volume_operations=False)
    old = set_env(e)
    vol = new_volume(e, "node1", client)
    try:
        statuses: list[str] = []
        run = sb.standby_create(
            lab_settings,
            vol,
            "node2",
            on_progress=lambda *a: statuses.append(e.service().get_volume(vol).status),
        )
        assert run.state == "SUCCESS", run.error
        assert "maintenance" in statuses and e.service().get_volume(vol).status == "in-use"
    finally:
        cleanup(e, vol, ["node1", "node2"])
        set_env(old)
        e.close()


def test_a_failing_step_reverts_and_leaves_both_sides_as_they_were(
    env: FlowEnv,
    client: str,
    nodes: dict[str, SSHHost],
    lab_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vol = new_volume(env, "node1", client)
    model = env.service().get_volume(vol).model()
    ds1 = str(env.driver("node1").dataset_of(model))
    ds2 = str(env.driver("node2").dataset_of(model))
    try:
        # create: the last step fails -> no sync, no replica, no seed snapshot; record and status as before
        def boom(*a: Any, **k: Any) -> None:
            raise RuntimeError("injected failure")

        with monkeypatch.context() as m:
            m.setattr(standby_tasks.RecordStandby, "execute", boom)
            run = sb.standby_create(lab_settings, vol, "node2", interval_s=2.0)
        assert run.state == "REVERTED" and "injected failure" in (run.error or "")
        states = {a["name"]: a["state"] for a in show_flow(lab_settings, run.id)["atoms"]}
        assert states["seed.start"] == "REVERTED" and states["start-sync"] == "REVERTED"
        assert snapshots(nodes["node1"], ds1) == []
        assert not Zfs(nodes["node2"]).exists(parse_dataset(ds2))
        assert env.service().replication(vol) is None and env.service().get_volume(vol).status == "in-use"
        syncs = [
            a
            for a in env.agent("node1").list()
            if a.kind == "standby-sync" and a.record().params["dataset"] == ds1
        ]
        assert syncs and all(a.state == "cancelled" for a in syncs)
        # failover: the promotion fails -> the volume is back on node1, exported to the same client and
        # writable; node2 read-only and unexported; a sync running again from node1
        assert sb.standby_create(lab_settings, vol, "node2", interval_s=2.0).state == "SUCCESS"
        before = env.driver("node1").exports.get(env.driver("node1").dataset_of(model))
        with monkeypatch.context() as m:
            m.setattr(standby_tasks.failover, "promote", boom)
            run = sb.standby_failover(lab_settings, vol)
        assert run.state == "REVERTED", run.error
        rec = env.service().get_volume(vol)
        assert rec.node == "node1" and rec.status == "in-use"
        d1, d2 = env.driver("node1"), env.driver("node2")
        assert d1.exports.get(d1.dataset_of(model)) == before
        assert not read_only(d1, d1.dataset_of(model))
        assert d2.exports.get(d2.dataset_of(model)) is None
        assert read_only(d2, d2.dataset_of(model))
        [st] = sb.standby_status(vol)
        assert (st["primary"], st["standby"], st["state"]) == ("node1", "node2", "running"), st
        with nfs.NfsClient(*location(env, vol).split(":", 1)) as c:  # writable again
            c.pwrite("/volume", 0, b"x" * 4096)
    finally:
        cleanup(env, vol, ["node1", "node2"])


def test_a_driver_without_snapshot_replicate_takes_the_generic_path(
    lab_settings: Settings, client: str, lab: Lab
) -> None:
    e = flow_env(lab_settings, backend_replication=False)
    old = set_env(e)
    vol = new_volume(e, "node2", client)
    try:
        assert e.stats("node2")["snapshot_replicate"] is False
        run = sb.standby_create(lab_settings, vol, "node3", interval_s=2.0)
        assert run.state == "SUCCESS", run.error
        states = {a["name"]: a["state"] for a in show_flow(lab_settings, run.id)["atoms"]}
        assert states["seed.stream"] == "SUCCESS" and states["seed.start"] == "IGNORE"
        time.sleep(3)
        [st] = sb.standby_status(vol)
        assert st["state"] == "running" and st["syncs"] >= 1, st
        # the controller's stream took the receiver's claim and left its mark: the relationship's own
        rel = e.service().replication(vol)
        assert rel is not None and str(rel.detail.get("replica_mark", "")).startswith("act-"), rel.detail
        out = sb.standby_remove(vol)
        ds3 = e.driver("node3").dataset_of(e.service().get_volume(vol).model())
        assert out["destroyed"] == f"node3:{ds3}" and not out.get("left"), out
    finally:
        cleanup(e, vol, ["node2", "node3"])
        set_env(old)
        e.close()


def test_suspend_resume_cancel_and_an_agent_sigkill(
    env: FlowEnv, client: str, lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings
) -> None:
    vol = new_volume(env, "node1", client)
    model = env.service().get_volume(vol).model()
    ds2 = str(env.driver("node2").dataset_of(model))
    try:
        assert sb.standby_create(lab_settings, vol, "node2", interval_s=1.0).state == "SUCCESS"
        rel = env.service().replication(vol)
        assert rel is not None and rel.activity_id
        assert str(rel.detail.get("replica_mark", "")).startswith("act-"), rel.detail  # the seed's mark
        act = env.agent("node1").get(rel.activity_id)

        def syncs() -> int:
            return int(act.record().result.get("syncs") or 0)

        wait_for_syncs = lambda n: until(f"{n} syncs", lambda: syncs() >= n, 120)  # noqa: E731
        wait_for_syncs(2)
        act.suspend()
        assert act.state == "suspended"
        n = syncs()
        time.sleep(3.5)  # several intervals: no sync while suspended
        assert syncs() <= n + 1  # (one may have been in flight)
        act.resume()
        wait_for_syncs(n + 2)
        # the agent SIGKILLed: the next one carries the standby on (self-restarting), the same claim
        lab.restart_service("node1", "agent", hard=True)
        m = syncs()
        wait_for_syncs(m + 2)
        assert act.state == "running"
        claims = env.agent("node2").client.call("recv.status")
        assert [c["holder"] for c in claims if c["dataset"] == ds2] == [act.id]
        # cancel: stopped, its claim and holds released, both sides left at their last common snapshot
        act.cancel()
        assert act.state == "cancelled"
        assert [c for c in env.agent("node2").client.call("recv.status") if c["dataset"] == ds2] == []
        ds1 = str(env.driver("node1").dataset_of(model))
        left1, left2 = snapshots(nodes["node1"], ds1), snapshots(nodes["node2"], ds2)
        assert len(left1) == 1 and left1[-1] in left2
        for host, ds in ((nodes["node1"], ds1), (nodes["node2"], ds2)):
            for snap, _guid in snapshots(host, ds):
                assert Zfs(host).get(parse_dataset(ds).snapshot(snap), ["userrefs"])["userrefs"] in ("0", "-")
    finally:
        cleanup(env, vol, ["node1", "node2"])


def test_failover_back_and_forth_from_the_command_line(
    env: FlowEnv, client: str, lab_settings: Settings
) -> None:
    """Issue 22: ``zfs-backend standby failover`` to node2, back to node1, again to node2 (the second one
    failed and reverted: the old primary's dataset was not mounted when promoted again). Each time the
    promoted side is exported to the volume's client and writable, the demoted side is the standby
    (read-only, unexported, synced the new way round), and every acknowledged write is there."""
    vol = new_volume(env, "node1", client)
    w = Writer(lambda: location(env, vol), rate=MiB).start()
    try:
        w.wait_for(MiB)
        r = cli(lab_settings, "standby", "create", vol, "--standby", "node2", "--interval", "2")
        assert r.returncode == 0, (r.stdout, r.stderr)
        for new, old in (("node2", "node1"), ("node1", "node2"), ("node2", "node1")):
            w.wait_for((len(w.acked) + 8) * w.block)
            n_before, t_failover = len(w.acked), time.time()
            r = cli(lab_settings, "standby", "failover", vol)
            assert r.returncode == 0, (new, r.stdout, r.stderr)
            rec = env.service().get_volume(vol)
            assert rec.node == new and rec.status == "in-use", rec
            d_new, d_old = env.driver(new), env.driver(old)
            ds = d_new.dataset_of(rec.model())
            entry = d_new.exports.get(ds)
            assert entry is not None and client in entry.clients, entry
            assert not read_only(d_new, ds)
            assert read_only(d_old, ds) and d_old.exports.get(ds) is None
            [st] = sb.standby_status(vol)
            assert (st["primary"], st["standby"], st["replication_status"]) == (new, old, "enabled"), st
            w.wait_for((n_before + 16) * w.block)  # the writer carries on, on the promoted side
            assert w.verify(location(env, vol), before=t_failover) >= n_before
    finally:
        w.stop()
    try:
        assert w.verify(location(env, vol)) == len(w.acked)
        r = cli(lab_settings, "standby", "remove", vol, "--json")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert env.service().replication(vol) is None or sb.standby_status(vol) == []
        d_old = env.driver("node1")  # the old primary a controlled failover made the standby: removed
        assert not d_old.zfs.exists(d_old.dataset_of(env.service().get_volume(vol).model()))
        assert env.service().get_volume(vol).node == "node2"
    finally:
        cleanup(env, vol, ["node1", "node2"])
