"""The hostile-peer suite of the trust issue (19) on OpenZFS: the second VM's own node key, used from that
VM (its ssh config and key, as the real peer would), tries every peer op and every forced command of the
lab's suite (tests/lab/test_hostile_peer.py: ``peer_ops``, ``forced_commands``, reused as they are)
against the first VM on: a user's dataset (snapshots, live data, a user property), a local volume
(created and attached from the command line: exported to the host), and the pool root; then, on its own
replica there (received under the controller's grant), what its increment-only grant does not allow, a
child, and a stream whose properties place a mount (on the lab peer-exec refuses it reading the stream;
on OpenZFS it receives with ``-u -x mountpoint``, so the property never applies, and zfs refuses the full
stream into the existing replica). Each is refused with one line; afterwards every
snapshot (name and GUID), byte (checksums), local and received property, export and mount of the pool on
the first VM is as before: compared, not assumed (``node_state``). Two VMs: the lab's third node (a peer
whose replica and live claim the hostile one must not touch) is a grant made for a third peer name.
The legitimate path (no grant refused, the controller's grant accepted): test_replication_openzfs.py."""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
sys.path.insert(0, str(Path(__file__).parent.parent / "lab"))  # and the lab's, reused as they are
from replication_helpers import cli
from replication_vm import T, assert_success, replicate, snapshot, write
from test_hostile_peer import (
    H2,
    MADE_UP,
    assert_refused,
    forced_commands,
    node_state,
    peer_ops,
    refused_lines,
)
from vagrant_helpers import CONTROLLER_ADDRESS

# its world and two node states under TCG, ~3 min: `slow` (left out by hand with ZFS_BACKEND_VAGRANT_SLOW=0)
pytestmark = pytest.mark.slow


def ssh_to(vm_pair: tuple[SSHHost, SSHHost], cmd: list[str], data: bytes = b"") -> Any:
    """``cmd`` run on the first VM with the second's own key (what sshd hands to ``peer-exec --peer``)."""
    target, via = vm_pair
    return via.run(
        ["ssh", "-o", "BatchMode=yes", target.name, "--", *cmd], input=data, check=False, timeout=T
    )


def rpc(vm_pair: tuple[SSHHost, SSHHost], reqs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One peer session of the second VM on the first: the answers, one line each, in order."""
    lines = b"".join(
        json.dumps({"id": i, "op": op, "args": a}).encode() + b"\n" for i, (op, a) in enumerate(reqs)
    )
    r = ssh_to(vm_pair, ["zfs-backend", "rpc", "--peer"], lines)
    return [json.loads(x) for x in r.text.splitlines() if x.strip()]


def grant(agents: dict[str, Any], settings: Settings, node: str, **args: Any) -> str:
    from zfs_backend.rpc.connect import connect_node

    if node not in agents:
        agents[node] = connect_node(node, settings)
    return str(agents[node].client.call("grant.add", **args)["grant"])


@pytest.fixture(scope="module")
def world(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The first VM with a user's dataset, an exported volume and the second's replica; the second with
    a stream source and a dataset whose stream carries a mountpoint."""
    n1, n2 = vm_pair
    tag = uuid.uuid4().hex[:8]
    user, vol, r2, evil = f"tank/u{tag}", f"hostile{tag}", f"tank/r{tag}2", f"tank/e{tag}"
    try:  # a setup that fails half way is cleaned up as well (it would leave an export behind)
        write(n1, user, "a", 1)
        snapshot(n1, user, "snapshot-s1")
        write(n1, user, "b", 1)
        snapshot(n1, user, "snapshot-s2")
        write(n1, user, "live", 1)  # written after the newest snapshot
        Zfs(n1, timeout=T).set(parse_dataset(user), "com.example:owner", "alice")
        r = cli(settings, "volume", "create", vol, "--size", "1G", "--node", n1.name, "--json", timeout=T)
        assert r.returncode == 0, (r.stdout, r.stderr)
        r = cli(settings, "volume", "attach", vol, "--client", CONTROLLER_ADDRESS, timeout=T)
        assert r.returncode == 0, (r.stdout, r.stderr)
        vols = [
            d
            for d in Zfs(n1, timeout=T).list_datasets(parse_dataset("tank/volumes"), recursive=True)
            if "volume-" in str(d.name)
        ]
        volume_ds = str(vols[-1].name)
        write(n2, r2, "y", 1)
        snapshot(n2, r2, "s1")
        assert_success(replicate(settings, agents, f"{n2.name}:{r2}@s1", f"{n1.name}:{r2}"))
        # "another peer's grant": made for a third node's name, on a dataset of its own
        g3 = grant(
            agents, settings, n1.name, peer="zb-node3", dataset=f"tank/r{tag}3", allow=["create"], ttl_s=0
        )
        write(n2, evil, "z", 1)
        Zfs(n2, timeout=T).set(parse_dataset(evil), "mountpoint", f"/tmp/evil{tag}")
        snapshot(n2, evil, "s1")
        yield {
            "tag": tag,
            "user": user,
            "volume": volume_ds,
            "volume_id": volume_ds.rsplit("volume-", 1)[1],
            "r2": r2,
            "g3": g3,
            "plain_stream": n2.run(["zfs", "send", f"{r2}@s1"], timeout=T).stdout,
            "mount_stream": n2.run(["zfs", "send", "-p", f"{evil}@s1"], timeout=T).stdout,
        }
    finally:
        with contextlib.suppress(Exception):
            agents[n1.name].client.call("grant.revoke", grant=g3)
        cli(settings, "volume", "detach", vol, "--client", CONTROLLER_ADDRESS, timeout=T)
        cli(settings, "volume", "delete", vol, timeout=T)
        for host, names in ((n1, [user, r2]), (n2, [r2, evil])):
            for name in names:
                with contextlib.suppress(Exception):
                    Zfs(host, timeout=T).destroy(
                        parse_dataset(name), recursive=True, missing_ok=True, deadline=60
                    )


def test_a_hostile_peer_changes_nothing_on_openzfs(
    world: dict[str, Any], vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any]
) -> None:
    n1, n2 = vm_pair
    w = world
    g_inc = grant(agents, settings, n1.name, peer=n2.name, dataset=w["r2"], allow=["increment"])
    before = node_state(n1)
    # what is compared is there: the user's snapshots and live data, the volume's export, the replica
    assert [snap for snap, _g in before[w["user"]][0]] == ["snapshot-s1", "snapshot-s2"]
    assert "./live" in before[w["user"]][1] and "com.example:owner\talice\tlocal" in before[w["user"]][2]
    assert w["volume_id"] in before["exports"] and w["r2"] in before
    for target in (w["user"], w["volume"], "tank"):
        ops = peer_ops(target, w, g_inc)
        refused_lines(rpc(vm_pair, ops), len(ops))
        for cmd, data in forced_commands(target, w):
            assert_refused(ssh_to(vm_pair, cmd, data), (target, cmd))
    # recv.status and backup.list show nothing of others; a forged hello ends the session
    answers = rpc(
        vm_pair,
        [
            ("recv.status", {}),
            ("backup.list", {}),
            ("peer.hello", {"peer": "zb-node3"}),
            ("recv.status", {}),
        ],
    )
    assert len(answers) == 3, answers
    # its own claims may be listed (a replication's until released, a failed earlier run's until pruned):
    # nothing of another peer's
    assert all(c["peer"] == n2.name for c in answers[0]["result"]), answers[0]
    assert answers[1]["result"] == []
    assert "second peer.hello" in answers[2]["error"]["message"]
    # its own replica, with what its grant (increment only) does not allow
    r2 = w["r2"]
    begin = {"dataset": r2, "holder": H2, "source": f"{n2.name}:{r2}", "recursive": False, "sent_guids": []}
    snaps = Zfs(n1, timeout=T).list_snapshots(parse_dataset(r2))
    answers = rpc(
        vm_pair,
        [
            ("recv.begin", {**begin, "grant": g_inc}),  # allowed: a claim
            ("recv.discard", {"dataset": r2, "holder": H2, "base_guids": {"": snaps[0].guid}}),  # no rollback
            (
                "recv.commit",
                {"dataset": r2, "holder": H2, "target_guid": snaps[-1].guid, "prune_prefix": "s"},
            ),
            ("recv.begin", {**begin, "holder": MADE_UP, "grant": g_inc}),  # bound to H2
            ("recv.begin", {**begin, "dataset": f"{r2}/child", "grant": g_inc}),
            ("recv.status", {}),
        ],
    )
    assert "result" in answers[0], answers[0]
    refused_lines(answers[1:5], 4)
    claims = answers[5]["result"]
    assert H2 in [c["holder"] for c in claims if c["dataset"] == r2], claims
    assert all(c["peer"] == n2.name for c in claims), claims
    assert_refused(ssh_to(vm_pair, ["zfs", "receive", f"{r2}/child"], w["plain_stream"]), "child")
    # a stream whose properties place a mount: on OpenZFS peer-exec receives with `-u -x mountpoint`
    # (the property never applies), and zfs itself refuses a full stream into the existing replica
    r = ssh_to(vm_pair, ["zfs", "receive", r2], w["mount_stream"])
    assert r.returncode != 0 and r.err_text.strip().count("\n") <= 1, (r.returncode, r.err_text)
    assert f"/tmp/evil{w['tag']}" not in n1.run(["cat", "/proc/mounts"], timeout=T).text
    assert "result" in rpc(vm_pair, [("recv.release", {"dataset": r2, "holder": H2})])[0]
    assert all(g["grant"] != g_inc for g in agents[n1.name].client.call("grant.list"))
    assert node_state(n1) == before
