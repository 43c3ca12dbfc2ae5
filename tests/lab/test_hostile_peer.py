"""A hostile peer (issue 19): node2's own key, used from node2 (its namespace, its ssh config and key, as
the real peer would), tries every peer op and every forced command against node1 on: a user's dataset,
a local volume (exported), the pool root, another peer's replica (received from node3 under node3's
grant, with node3's claim live), and a replica granted to node2 with operations its grant did not allow.
Each is refused with one line; afterwards every snapshot (name and GUID), byte (file checksums),
property (local and received values) and export on node1 is as before: compared, not assumed.

The legitimate path: the controller (``snapshot_replicate``) makes a grant over its own connection to node1's
agent and the real source agent replicates under it; the grant is consumed with the claim. Started on the
source's agent without the controller's grant, or with another peer's, it is refused by node1.
"""

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
from zfs_backend.lab import Lab
from zfs_backend.lab.nfs import EXPORTS_FILE
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import _agent, assert_success, replicate, snapshot, write

MADE_UP = "act-00000000000000000000000000"
H2 = "act-01M8PC6J46SJJSD1CGAQ7Y88P2"  # node2's claim on its granted replica
H3 = "act-01M8PC6J46SJJSD1CGAQ7Y88P3"  # node3's claim on its replica


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def ssh_node1(nodes: dict[str, SSHHost], cmd: list[str], data: bytes = b"", via: str = "node2") -> Any:
    """``cmd`` run on node1 with ``via``'s own key (what sshd hands to ``peer-exec --peer <via>``)."""
    return nodes[via].run(
        ["ssh", "-o", "BatchMode=yes", "node1", "--", *cmd], input=data, check=False, timeout=120
    )


def rpc(
    nodes: dict[str, SSHHost], reqs: list[tuple[str, dict[str, Any]]], via: str = "node2"
) -> list[dict[str, Any]]:
    """One peer session of ``via`` on node1: the answers, one line each, in order."""
    lines = b"".join(
        json.dumps({"id": i, "op": op, "args": a}).encode() + b"\n" for i, (op, a) in enumerate(reqs)
    )
    r = ssh_node1(nodes, ["zfs-backend", "rpc", "--peer"], lines, via)
    return [json.loads(x) for x in r.text.splitlines() if x.strip()]


def start_ungranted(settings: Settings, src: str, dst: str, grant: str | None = None) -> Any:
    """Start ``replicate`` on the source's agent directly, as a controller that never asked the
    destination would (or with a grant of its own choosing): only the destination's check stands."""
    from replication_helpers import FAST

    from zfs_backend.replication.api import _request
    from zfs_backend.replication.request import KIND

    req = _request(src, None, dst, destination=None)
    params = {**req.to_params(), **FAST, **({"grant": grant} if grant else {})}
    return _agent(settings, req.source_node).start(KIND, params)


def grant(settings: Settings, **args: Any) -> str:
    return str(_agent(settings, "node1").client.call("grant.add", **args)["grant"])


def node_state(host: SSHHost) -> dict[str, Any]:
    """Everything a peer must not change on ``host``: per dataset its snapshots (names, GUIDs), files
    (SHA-256), local and received property values; the exports file; the mounts of the pool."""
    z = Zfs(host)
    out: dict[str, Any] = {}
    for d in z.list_datasets(parse_dataset("tank"), recursive=True):
        name = str(d.name)
        snaps = [(s.snap, s.guid) for s in z.list_snapshots(d.name)]
        mnt = z.mountpoint(d.name)
        files = host.run(
            ["sh", "-c", 'cd "$1" && find . -xdev -type f | sort | xargs -r sha256sum', "sh", str(mnt)],
            check=False,
            timeout=300,
        ).text
        props = host.run(["zfs", "get", "-H", "-o", "property,value,source", "all", name]).text
        kept = sorted(ln for ln in props.splitlines() if ln.split("\t")[-1] in ("local", "received"))
        out[name] = (snaps, files, kept)
    out["exports"] = host.run(["cat", EXPORTS_FILE], check=False).text
    out["mounts"] = sorted(
        ln.split()[1] for ln in host.run(["cat", "/proc/mounts"]).text.splitlines() if "tank" in ln
    )
    return out


def refused_lines(answers: list[dict[str, Any]], n: int) -> None:
    assert len(answers) == n, answers
    for a in answers:
        assert "error" in a and "\n" not in a["error"]["message"], a


@pytest.fixture(scope="module")
def world(lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]) -> Iterator[dict[str, Any]]:
    """node1 with a user's dataset, an exported volume, node3's replica (node3's claim live) and node2's
    replica; node2 with a stream source and a dataset whose stream carries a mountpoint."""
    from zfs_backend.cli.main import main as cli_main

    tag = uuid.uuid4().hex[:8]
    n1, n2, n3 = nodes["node1"], nodes["node2"], nodes["node3"]
    user, vol, r2, r3, evil = (
        f"tank/u{tag}",
        f"hostile{tag}",
        f"tank/r{tag}2",
        f"tank/r{tag}3",
        f"tank/e{tag}",
    )
    try:  # a setup that fails half way is cleaned up as well (it would leave an export behind)
        yield _world(lab, lab_settings, nodes, tag, user, vol, r2, r3, evil)
    finally:
        with contextlib.suppress(Exception):
            rpc(nodes, [("recv.release", {"dataset": r3, "holder": H3})], "node3")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ZFS_BACKEND_HOME", str(lab_settings.home))
            mp.setenv("ZFS_BACKEND_LAB_NETWORK", lab_settings.lab_network)
            cli_main(["volume", "detach", vol, "--client", lab.node("node3").address])
            cli_main(["volume", "delete", vol])
        for host, names in ((n1, [user, r2, r3]), (n2, [r2, evil]), (n3, [r3])):
            for name in names:
                with contextlib.suppress(Exception):
                    Zfs(host).destroy(parse_dataset(name), recursive=True, missing_ok=True, deadline=20)


def _world(
    lab: Lab,
    lab_settings: Settings,
    nodes: dict[str, SSHHost],
    tag: str,
    user: str,
    vol: str,
    r2: str,
    r3: str,
    evil: str,
) -> dict[str, Any]:
    from zfs_backend.cli.main import main as cli_main

    n1, n2, n3 = nodes["node1"], nodes["node2"], nodes["node3"]
    write(n1, user, "a", 1)
    snapshot(n1, user, "snapshot-s1")
    write(n1, user, "b", 1)
    snapshot(n1, user, "snapshot-s2")
    write(n1, user, "live", 1)  # written after the newest snapshot
    Zfs(n1).set(parse_dataset(user), "com.example:owner", "alice")
    # a local volume, attached (exported) to node3
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZFS_BACKEND_HOME", str(lab_settings.home))
        mp.setenv("ZFS_BACKEND_LAB_NETWORK", lab_settings.lab_network)
        assert cli_main(["volume", "create", vol, "--size", "1G", "--node", "node1", "--json"]) == 0
        assert cli_main(["volume", "attach", vol, "--client", lab.node("node3").address]) == 0
    vols = [
        d
        for d in Zfs(n1).list_datasets(parse_dataset("tank/volumes"), recursive=True)
        if "volume-" in str(d.name)
    ]
    volume_ds = str(vols[-1].name)
    volume_id = volume_ds.rsplit("volume-", 1)[1]
    # node3's replica on node1, under node3's grant
    write(n3, r3, "x", 1)
    snapshot(n3, r3, "s1")
    assert_success(replicate(lab_settings, f"node3:{r3}@s1", f"node1:{r3}"))  # granted by the controller
    # node2's replica on node1, under node2's grant
    write(n2, r2, "y", 1)
    snapshot(n2, r2, "s1")
    assert_success(replicate(lab_settings, f"node2:{r2}@s1", f"node1:{r2}"))
    listed = _agent(lab_settings, "node1").client.call("grant.list")
    assert not [x for x in listed if x.get("dataset") in (r2, r3)]  # consumed with the claims
    # node3 keeps a live claim on its replica (a standby-like relationship)
    g3 = grant(lab_settings, peer="node3", dataset=r3, allow=["increment", "rollback", "prune"], ttl_s=0)
    begin3 = {
        "dataset": r3,
        "holder": H3,
        "source": f"node3:{r3}",
        "recursive": False,
        "sent_guids": [],
        "grant": g3,
    }
    assert (
        "result"
        in rpc(nodes, [("recv.begin", begin3), ("recv.renew", {"dataset": r3, "holder": H3})], "node3")[0]
    )
    # a stream whose properties place a mount (send -p of a dataset with a local mountpoint)
    write(n2, evil, "z", 1)
    Zfs(n2).set(parse_dataset(evil), "mountpoint", f"/tmp/evil{tag}")
    snapshot(n2, evil, "s1")
    w = {
        "tag": tag,
        "user": user,
        "volume": volume_ds,
        "volume_id": volume_id,
        "r2": r2,
        "r3": r3,
        "g3": g3,
        "plain_stream": n2.run(["zfs", "send", f"{r2}@s1"], timeout=120).stdout,
        "mount_stream": n2.run(["zfs", "send", "-p", f"{evil}@s1"], timeout=120).stdout,
    }
    return w


def peer_ops(target: str, w: dict[str, Any], grant_id: str | None) -> list[tuple[str, dict[str, Any]]]:
    """Every peer op a hostile node2 may try on ``target`` (each must be refused)."""
    base = {"dataset": target, "source": "node2:tank/x", "recursive": False, "sent_guids": []}
    ops: list[tuple[str, dict[str, Any]]] = [
        ("recv.begin", {**base, "holder": MADE_UP}),
        ("recv.begin", {**base, "holder": MADE_UP, "grant": w["g3"]}),  # node3's grant
        ("recv.begin", {**base, "holder": MADE_UP, "recursive": True, "grant": grant_id}),
        ("peer.admit", {"what": "receive", "dataset": target}),
        ("recv.fence", {"dataset": target, "holder": H3}),
        (
            "grant.add",
            {"peer": "node2", "dataset": target, "allow": ["create", "increment", "rollback", "prune"]},
        ),
        ("grant.list", {}),
        ("grant.revoke", {"grant": w["g3"]}),
        ("start", {"kind": "replicate", "params": {}}),
        ("list", {}),
        ("backup.begin", {"volume": w["volume_id"], "backup": "b1", "holder": MADE_UP}),
        ("backup.verify", {"volume": w["volume_id"], "backup": "b1"}),
        (
            "backup.commit",
            {"volume": w["volume_id"], "backup": "b1", "holder": MADE_UP, "snapshot": "s", "guid": 1},
        ),
        ("peer.admit", {"what": "backup-read", "volume": w["volume_id"], "backup": "b1"}),
    ]
    if grant_id is not None and target != w["r2"]:
        ops.append(
            ("recv.begin", {**base, "holder": MADE_UP, "grant": grant_id})
        )  # a grant for another dataset
    for holder in (MADE_UP, H3):
        for verb, extra in (
            ("expect", {"sent_guids": [1]}),
            ("commit", {"target_guid": 1, "prune_prefix": "sna"}),
            ("discard", {"base_guids": {"": 1}}),
            ("finish", {"target_guids": {}}),
            ("clean", {}),
            ("renew", {}),
            ("release", {}),
            ("abort", {}),
        ):
            ops.append((f"recv.{verb}", {"dataset": target, "holder": holder, **extra}))
    return ops


def forced_commands(target: str, w: dict[str, Any]) -> list[tuple[list[str], bytes]]:
    return [
        (["zfs", "receive", target], w["plain_stream"]),
        (["zfs", "receive", "-s", "-o", "readonly=on", target], w["plain_stream"]),
        (["zfs", "recv", f"{target}/child"], w["plain_stream"]),
        (["zfs", "receive", "-F", target], w["plain_stream"]),
        (["zfs", "receive", "-o", f"mountpoint=/tmp/x{w['tag']}", target], w["plain_stream"]),
        (["zfs-backend", "backup-write", w["volume_id"], "b1"], b"junk"),
        (["zfs-backend", "backup-read", w["volume_id"], "b1"], b""),
        (["zfs-backend", "rpc"], b'{"id":1,"op":"list","args":{}}\n'),
        (["zfs", "destroy", "-r", target], b""),
        (["sh", "-c", "id"], b""),
    ]


def assert_refused(r: Any, what: object) -> None:
    err = r.err_text.strip()
    assert r.returncode == 126, (what, r.returncode, err)
    assert err.count("\n") == 0 and "refused" in err, (what, err)


def test_a_hostile_peer_changes_nothing(
    world: dict[str, Any], nodes: dict[str, SSHHost], lab_settings: Settings
) -> None:
    n1 = nodes["node1"]
    w = world
    g_inc = grant(lab_settings, peer="node2", dataset=w["r2"], allow=["increment"])
    before = node_state(n1)
    # what is compared is there: the user's snapshots and live data, the volume's export, both replicas
    assert [snap for snap, _g in before[w["user"]][0]] == ["snapshot-s1", "snapshot-s2"]
    assert "./live" in before[w["user"]][1] and "com.example:owner\talice\tlocal" in before[w["user"]][2]
    assert w["volume_id"] in before["exports"] and w["r2"] in before and w["r3"] in before
    targets = [w["user"], w["volume"], "tank", w["r3"]]
    for target in targets:
        ops = peer_ops(target, w, g_inc)
        answers = rpc(nodes, ops)
        refused_lines(answers, len(ops))
        for cmd, data in forced_commands(target, w):
            assert_refused(ssh_node1(nodes, cmd, data), (target, cmd))
    # recv.status names no other peer's holder; backup.list shows nothing of others; a forged hello
    # ends the session (the op after it is never answered)
    abort = ("backup.abort", {"volume": w["volume_id"], "backup": "b1", "holder": MADE_UP})
    answers = rpc(
        nodes,
        [
            ("recv.status", {}),
            ("backup.list", {}),
            abort,
            ("peer.hello", {"peer": "node3"}),
            ("recv.status", {}),
        ],
    )
    assert len(answers) == 4, answers
    assert answers[0]["result"] == [] and answers[1]["result"] == []
    assert answers[2]["result"] == {"removed": False}  # nothing of its own to drop: a no-op
    assert "second peer.hello" in answers[3]["error"]["message"]
    # the granted replica, with what its grant (increment only) does not allow
    r2 = w["r2"]
    begin = {"dataset": r2, "holder": H2, "source": f"node2:{r2}", "recursive": False, "sent_guids": []}
    snaps = Zfs(n1).list_snapshots(parse_dataset(r2))
    answers = rpc(
        nodes,
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
    assert [c["holder"] for c in answers[5]["result"]] == [H2]  # its own claim only, not node3's
    assert_refused(ssh_node1(nodes, ["zfs", "receive", f"{r2}/child"], w["plain_stream"]), "child")
    r = ssh_node1(nodes, ["zfs", "receive", r2], w["mount_stream"])  # admitted, then the stream is read
    assert_refused(r, "mount stream")
    assert "mountpoint" in r.err_text
    assert "result" in rpc(nodes, [("recv.release", {"dataset": r2, "holder": H2})])[0]
    assert all(g["grant"] != g_inc for g in _agent(lab_settings, "node1").client.call("grant.list"))
    assert node_state(n1) == before


def test_the_legitimate_path_replicates_under_a_grant_and_nothing_else(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    from zfs_backend.errors import NotGranted

    n2 = nodes["node2"]
    ds = f"tank/r{uuid.uuid4().hex[:8]}"
    names.append(ds)
    write(n2, ds, "f", 2)
    snapshot(n2, ds, "s1")
    with pytest.raises(NotGranted, match="no grant was presented"):  # refused by node1 at the start
        start_ungranted(lab_settings, f"node2:{ds}@s1", f"node1:{ds}")
    g = grant(lab_settings, peer="node3", dataset=ds, allow=["create"])  # another peer's grant
    with pytest.raises(NotGranted, match="holds no grant"):
        start_ungranted(lab_settings, f"node2:{ds}@s1", f"node1:{ds}", grant=g)
    assert not Zfs(nodes["node1"]).exists(parse_dataset(ds))
    assert_success(replicate(lab_settings, f"node2:{ds}@s1", f"node1:{ds}"))  # the controller's grant
    assert [s.snap for s in Zfs(nodes["node1"]).list_snapshots(parse_dataset(ds))] == ["s1"]
    listed = _agent(lab_settings, "node1").client.call("grant.list")
    assert [x["grant"] for x in listed if x.get("dataset") == ds] == [
        g
    ]  # node3's unused one alone: ours went
    with pytest.raises(NotGranted):
        grant(lab_settings, peer="node2", dataset="tank", allow=["create"])  # the pool root: never
