"""Several hot standbys of one node pair (node1 → node2) on the lab, their calls to the standby batched
(``kinds.standby_pair``: ``recv.expect_many`` / ``recv.commit_many`` over the pair's one session): while
writers keep writing to every volume, one standby is suspended, one cancelled and one fails (a user's
fenced off its replica, as a forced failover does: its next call is refused and it fails); the others
keep syncing, the suspended one carries on when resumed, and every live standby ends with the
same files as its primary (checksums). The batched ops are also called on the standby's agent itself,
one item refused and the others done. No timed assertion: every wait is for a condition."""

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
from zfs_backend.flows.env import FlowEnv, set_env
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import checksums
from standby_helpers import Writer, cleanup, flow_env, location, new_volume

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)

N = 5
OK1, OK2, SUSPENDED, CANCELLED, FAILING = range(N)


@pytest.fixture
def env(lab: Lab, lab_settings: Settings) -> Iterator[FlowEnv]:
    e = flow_env(lab_settings)
    old = set_env(e)
    yield e
    set_env(old)
    e.close()


def test_standbys_of_one_pair_sync_together_and_fail_alone(
    env: FlowEnv, lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings
) -> None:
    client = lab.layout.controller_address
    vols = [new_volume(env, "node1", client) for _ in range(N)]
    models = [env.service().get_volume(v).model() for v in vols]
    ds1 = [str(env.driver("node1").dataset_of(m)) for m in models]
    ds2 = [str(env.driver("node2").dataset_of(m)) for m in models]
    writers = [Writer(lambda v=v: location(env, v), rate=128 << 10).start() for v in vols]  # type: ignore[misc]
    try:
        for w in writers:
            w.wait_for(256 << 10)
        for v in vols:
            assert sb.standby_create(lab_settings, v, "node2", interval_s=1.0).state == "SUCCESS"
        acts = [env.agent("node1").get(str(env.service().replication(v).activity_id)) for v in vols]  # type: ignore[union-attr]

        def result(i: int) -> dict[str, Any]:
            return dict(acts[i].record().result or {})

        def syncs(i: int) -> int:
            return int(result(i).get("syncs") or 0)

        def synced(i: int, n: int) -> None:
            until(f"{vols[i]}: {n} syncs", lambda: syncs(i) >= n, 180)

        for i in range(N):
            synced(i, 2)
        # one suspended, one cancelled, one fenced off its replica (its next batched call is refused)
        acts[SUSPENDED].suspend()
        assert acts[SUSPENDED].state == "suspended"
        acts[CANCELLED].cancel()
        assert acts[CANCELLED].state == "cancelled"
        env.agent("node2").client.call(
            "recv.fence", dataset=ds2[FAILING], holder=acts[FAILING].id, reason="a test's forced failover"
        )
        until(f"{vols[FAILING]}'s sync failed", lambda: acts[FAILING].state == "failed", 180)
        assert "fenced" in str(acts[FAILING].record().error)
        suspended_at = syncs(SUSPENDED)
        # the others keep syncing, together
        going = {i: syncs(i) for i in (OK1, OK2)}
        for i, n in going.items():
            synced(i, n + 3)
            assert result(i)["last_error"] is None and acts[i].state == "running"
        assert syncs(SUSPENDED) <= suspended_at + 1  # (one may have been in flight when it was suspended)
        acts[SUSPENDED].resume()
        synced(SUSPENDED, suspended_at + 2)
        # the cancelled one's claim is gone, the fenced one's too; the others' are theirs
        holders = {c["dataset"]: c["holder"] for c in env.agent("node2").client.call("recv.status")}
        assert ds2[CANCELLED] not in holders and ds2[FAILING] not in holders
        assert holders[ds2[OK1]] == acts[OK1].id and holders[ds2[OK2]] == acts[OK2].id
        # no hold left on the primary by the cancelled or the failed one
        for i in (CANCELLED, FAILING):
            for snap in Zfs(nodes["node1"]).list_snapshots(parse_dataset(ds1[i])):
                assert Zfs(nodes["node1"]).get(snap.name, ["userrefs"])["userrefs"] in ("0", "-"), snap
    finally:
        for w in writers:
            w.stop()
    try:
        # every live standby ends with its primary's files: one more sync after the writes stopped, then
        # the syncs suspended so nothing moves while the files are compared
        stopped = time.time()
        for i in (OK1, OK2, SUSPENDED):
            until(
                f"{vols[i]}: a sync after the writes",
                lambda i=i: float((result(i).get("newest") or {}).get("taken_at") or 0) > stopped,  # type: ignore[misc]
                180,
            )
            acts[i].suspend()
        for i in (OK1, OK2, SUSPENDED):
            newest = str(result(i)["newest"]["snapshot"])
            one, two = Zfs(nodes["node1"]), Zfs(nodes["node2"])
            guid = {s.snap: s.guid for s in one.list_snapshots(parse_dataset(ds1[i]))}[newest]
            assert guid in [s.guid for s in two.list_snapshots(parse_dataset(ds2[i]))]
            sums = checksums(nodes["node1"], ds1[i])
            assert sums and sums == checksums(nodes["node2"], ds2[i]), vols[i]
        # a batch on the standby's agent: each item its own answer (a holder that holds nothing is
        # refused alone, the others renewed in one write)
        items = [{"dataset": ds2[i], "holder": acts[i].id, "sent_guids": []} for i in (OK1, OK2)]
        items.append({"dataset": ds2[CANCELLED], "holder": acts[CANCELLED].id, "sent_guids": []})
        out = env.agent("node2").client.call("recv.expect_many", items=items)
        assert "ok" in out[0] and "ok" in out[1] and out[2]["error"]["type"] == "AlreadyRunning", out
    finally:
        for v in vols:
            cleanup(env, v, ["node1", "node2"])
