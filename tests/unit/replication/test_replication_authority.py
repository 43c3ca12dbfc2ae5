"""A peer session's recv.* ops (replication.authority through the agent's ActivityManager, as the peer
socket calls them) on an in-memory node: nothing without a grant of this peer for this dataset under a
replica root; a claim is the peer's own; rollback and prune only when granted, prune only of what this
node recorded as received; status shows only the caller's claims. The attack of issue 19, replayed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.activity.store import ActivityStore
from zfs_backend.agent.manager import ActivityManager
from zfs_backend.errors import AlreadyRunning, DatasetNotFound, NotGranted, ProtocolError, UsageError
from zfs_backend.replication.authority import PeerAuthority
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.grants import GrantStore
from zfs_backend.replication.receiver import Receiver
from zfs_backend.zfs.api import Zfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_zfs import FakeZfs, bytes_since, changes

A = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"
B = "act-01M8PC6J46SJJSD1CGAQ7Y88PY"
MADE_UP = "act-00000000000000000000000000"
P = "zfs_backend-standby-"


class Node:
    def __init__(self, tmp_path: Path, roots: tuple[str, ...] = ("tank",)) -> None:
        self.zfs = FakeZfs()
        self.claims = ClaimStore(tmp_path / "claims.db")
        self.grants = GrantStore(tmp_path / "grants.db")
        self.rx = Receiver(
            cast(Zfs, self.zfs),
            self.claims,
            ttl=300,
            changes=changes,
            bytes_since=bytes_since,
            grants=self.grants,
        )
        self.auth = PeerAuthority(self.grants, self.claims, roots, dialect=lambda: self.zfs.dialect)
        self.mgr = ActivityManager(
            ActivityStore(tmp_path / "a.db"), node="node1", receiver=self.rx, authority=self.auth
        )

    def grant(self, peer: str, dataset: str, allow: list[str], **kw: Any) -> str:
        return str(self.mgr.grant("add", {"peer": peer, "dataset": dataset, "allow": allow, **kw})["grant"])

    def recv(self, verb: str, peer: str | None = "node2", **args: Any) -> Any:
        return self.mgr.receive(verb, args, peer=peer)

    def begin(self, dataset: str, holder: str = A, peer: str = "node2", **kw: Any) -> Any:
        return self.recv("begin", peer=peer, dataset=dataset, holder=holder, source=f"{peer}:tank/src", **kw)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = Node(tmp_path)
    n.zfs.make("tank/victim", "snapshot-s1", "snapshot-s2", guids=[501, 502])  # a user's dataset
    n.zfs.make("tank/r1", f"{P}1", guids=[601])  # a replica node2 is granted
    return n


def test_begin_needs_a_grant_of_this_peer_for_this_dataset(node: Node) -> None:
    with pytest.raises(NotGranted, match="no grant was presented"):
        node.begin("tank/victim")
    g = node.grant("node2", "tank/r1", ["increment"])
    with pytest.raises(NotGranted, match="holds no grant"):
        node.begin("tank/victim", grant=g)  # a grant for another dataset
    with pytest.raises(NotGranted, match="holds no grant"):
        node.begin("tank/r1", grant=g, peer="node3")  # another peer's grant
    with pytest.raises(NotGranted, match="holds no grant"):
        node.begin("tank/r1", grant=g, recursive=True)  # not a recursive grant
    with pytest.raises(UsageError, match="invalid grant id"):
        node.begin("tank/r1", grant="gr-nope")
    create_only = node.grant("node2", "tank/r1", ["create"])
    with pytest.raises(NotGranted, match=r"tank/r1 exists: .* allows only creating it"):
        node.begin("tank/r1", grant=create_only)
    inc_only = node.grant("node2", "tank/r9", ["increment"])
    with pytest.raises(NotGranted, match="tank/r9 does not exist"):
        node.begin("tank/r9", grant=inc_only)
    assert node.claims.all() == [] and node.zfs.changing() == []
    node.begin("tank/r1", grant=g)
    claim = node.claims.get("tank/r1")
    assert claim is not None and claim.state["peer"] == "node2" and claim.state["grant"] == g
    assert node.grants.get(g) is not None and node.grants.get(g).holder == A  # type: ignore[union-attr]
    with pytest.raises(NotGranted, match="in use by another activity"):
        node.begin("tank/r1", holder=B, grant=g)


def test_nothing_outside_the_replica_roots(tmp_path: Path) -> None:
    n = Node(tmp_path, roots=("tank/replicas",))
    n.zfs.make("tank/replicas")
    for ds in ("tank", "tank/replicas", "tank/victim", "tank/replicas2/x"):
        with pytest.raises(NotGranted, match="replica roots"):
            n.grant("node2", ds, ["create"])
        with pytest.raises(NotGranted, match="replica roots"):
            n.begin(ds)
    n.grant("node2", "tank/replicas/r1", ["create"])
    unset = Node(tmp_path / "unset", roots=())
    with pytest.raises(NotGranted, match="none are configured"):
        unset.grant("node2", "tank/r1", ["create"])


def test_grant_ops_validate(node: Node) -> None:
    with pytest.raises(UsageError, match="unknown allow"):
        node.grant("node2", "tank/r1", ["destroy"])
    with pytest.raises(UsageError, match="invalid node name"):
        node.grant("Node 2", "tank/r1", ["create"])
    with pytest.raises(UsageError, match="ttl_s"):
        node.grant("node2", "tank/r1", ["create"], ttl_s="1h")
    with pytest.raises(UsageError, match="volume grant"):
        node.mgr.grant("add", {"peer": "node2", "volume": "v1", "allow": ["create"]})
    g = node.grant("node2", "tank/r1", ["create"], ttl_s=0)
    assert [x["grant"] for x in node.mgr.grant("list", {})] == [g]
    assert node.mgr.grant("revoke", {"dataset": "tank/r1"}) == {"revoked": 1}


def test_the_issue_19_attack_is_refused_and_changes_nothing(node: Node) -> None:
    """recv.begin on a user's dataset with a made-up holder, expect announcing the user's snapshot, commit
    with a prune prefix, discard at @snapshot-s2: each refused, nothing touched."""
    with pytest.raises(NotGranted):
        node.begin("tank/victim", holder=MADE_UP)
    for verb, extra in (
        ("expect", {"sent_guids": [501]}),
        ("commit", {"target_guid": 502, "prune_prefix": "sna"}),
        ("discard", {"base_guids": {"": 502}}),
        ("finish", {"target_guids": {}}),
        ("clean", {}),
        ("renew", {}),
        ("release", {}),
        ("abort", {}),
    ):
        with pytest.raises(AlreadyRunning, match=f"{MADE_UP} does not hold tank/victim$"):
            node.recv(verb, dataset="tank/victim", holder=MADE_UP, **extra)
    assert node.zfs.guids("tank/victim") == [501, 502]
    assert node.zfs.changing() == [] and node.claims.all() == []


def test_another_peers_claim_is_not_held_for_this_one(node: Node) -> None:
    g = node.grant("node3", "tank/r1", ["increment", "rollback", "prune"])
    node.begin("tank/r1", peer="node3", grant=g)
    assert node.recv("status", peer="node2") == []  # nobody else's holder ids
    assert [c["holder"] for c in node.recv("status", peer="node3")] == [A]
    assert [c["holder"] for c in node.recv("status", peer=None)] == [A]  # the controller sees all
    for verb, extra in (
        ("discard", {"base_guids": {"": 601}}),
        ("commit", {"target_guid": 601, "prune_prefix": P}),
        ("abort", {}),
        ("release", {}),
        ("finish", {"target_guids": {"": 601}}),
    ):
        with pytest.raises(AlreadyRunning, match=f"{A} does not hold tank/r1$"):
            node.recv(verb, peer="node2", dataset="tank/r1", holder=A, **extra)
    own = node.grant("node2", "tank/r1", ["increment"])
    with pytest.raises(AlreadyRunning, match="does not hold"):
        node.begin("tank/r1", peer="node2", grant=own)  # node3's holder id, from node2
    with pytest.raises(AlreadyRunning, match=r"by another replication$"):
        node.begin("tank/r1", holder=B, peer="node2", grant=own)  # a granted begin names no other holder
    assert node.grants.get(own).holder is None  # type: ignore[union-attr]
    assert node.claims.get("tank/r1").state["peer"] == "node3"  # type: ignore[union-attr]


def test_rollback_and_prune_only_when_granted(node: Node) -> None:
    g = node.grant("node2", "tank/r1", ["increment"])
    node.begin("tank/r1", grant=g)
    with pytest.raises(NotGranted, match="does not allow rollback"):
        node.recv("discard", dataset="tank/r1", holder=A, base_guids={"": 601})
    node.recv("expect", dataset="tank/r1", holder=A, sent_guids=[602])
    node.zfs.add_snapshot("tank/r1", f"{P}2", 602)
    with pytest.raises(NotGranted, match="does not allow prune"):
        node.recv("commit", dataset="tank/r1", holder=A, target_guid=602, prune_prefix=P)
    assert node.recv("commit", dataset="tank/r1", holder=A, target_guid=602)["verified"] is True


def test_prune_removes_only_what_this_node_recorded_as_received(node: Node) -> None:
    node.zfs.make("tank/r2", f"{P}1", "user", guids=[701, 702])
    g = node.grant("node2", "tank/r2", ["increment", "prune"], ttl_s=0)
    node.begin("tank/r2", grant=g)
    # announcing GUIDs that are already there (the seed, a user's snapshot) makes them nobody's own
    node.recv("expect", dataset="tank/r2", holder=A, sent_guids=[701, 702])
    node.recv("expect", dataset="tank/r2", holder=A, sent_guids=[703])
    node.zfs.add_snapshot("tank/r2", f"{P}3", 703)
    out = node.recv("commit", dataset="tank/r2", holder=A, target_guid=703, prune_prefix=P)
    assert out["pruned"] == []
    node.recv("expect", dataset="tank/r2", holder=A, sent_guids=[704])
    node.zfs.add_snapshot("tank/r2", f"{P}4", 704)
    out = node.recv("commit", dataset="tank/r2", holder=A, target_guid=704, prune_prefix=P)
    assert out["pruned"] == [f"{P}3"]  # received by this relationship: 703 only
    assert node.zfs.guids("tank/r2") == [701, 702, 704]


def test_a_grant_is_consumed_with_its_claim_and_survives_a_failed_begin(node: Node) -> None:
    g = node.grant("node2", "tank/new", ["create"])
    g2 = node.grant("node2", "tank/missing/r", ["create"])
    with pytest.raises(DatasetNotFound, match="parent"):  # after the grant was bound
        node.begin("tank/missing/r", grant=g2)
    assert node.grants.get(g2) is not None and node.grants.get(g2).holder is None  # type: ignore[union-attr]
    node.begin("tank/new", grant=g)
    node.recv("release", dataset="tank/new", holder=A)
    assert node.grants.get(g) is None and node.claims.all() == []


def test_admission_of_peer_exec_receives(node: Node) -> None:
    with pytest.raises(NotGranted, match="holds no granted claim"):
        node.mgr.admit("node2", {"what": "receive", "dataset": "tank/r1"})
    g = node.grant("node2", "tank/r1", ["increment"])
    node.begin("tank/r1", grant=g)
    ok = node.mgr.admit("node2", {"what": "receive", "dataset": "tank/r1"})
    assert ok["dataset"] == "tank/r1" and ok["recv_no_mount"] is False and ok["recv_properties"] is False
    for peer, ds in (
        ("node3", "tank/r1"),
        ("node2", "tank/victim"),
        ("node2", "tank/r1/child"),
        ("node2", "tank"),
    ):
        with pytest.raises(NotGranted):
            node.mgr.admit(peer, {"what": "receive", "dataset": ds})
    with pytest.raises(ProtocolError, match="peer session"):
        node.mgr.admit(None, {"what": "receive", "dataset": "tank/r1"})


def test_received_guids_keep_all_64_bits(node: Node) -> None:
    big = (1 << 64) - 1  # a GUID is unsigned 64-bit; SQLite's INTEGER is signed
    node.claims.record_received("tank/r1", [big, 5], "node2")
    assert node.claims.received_by("tank/r1", "node2") == {big, 5}
    assert node.claims.received_by("tank/r1", "node3") == set()
    node.claims.forget_received("tank/r1", [big])
    assert node.claims.received_by("tank/r1", "node2") == {5}


def test_the_bound_holder_begins_again_whatever_it_created(node: Node) -> None:
    """A create-only grant, bound by the first begin, lets the same holder begin again after its stream
    created the dataset (a migrate's next round); nobody else, and nothing after the claim is released."""
    g = node.grant("node2", "tank/m1", ["create"])
    node.begin("tank/m1", grant=g)
    node.zfs.make("tank/m1", "s1", guids=[801])  # the first stream arrived
    node.begin("tank/m1", grant=g)  # the same holder: its claim's own
    with pytest.raises(NotGranted):
        node.begin("tank/m1", holder=B, grant=g)
    node.recv("finish", dataset="tank/m1", holder=A, target_guids={"": 801})
    with pytest.raises(NotGranted):
        node.begin("tank/m1", grant=g)  # consumed


def test_a_claim_on_one_dataset_reaches_nothing_inside_it(node: Node) -> None:
    node.zfs.make("tank/r1/child", "c1", guids=[901])
    g = node.grant("node2", "tank/r1", ["increment", "rollback"])
    node.begin("tank/r1", grant=g)
    for verb, extra in (
        ("discard", {"base_guids": {"child": 901}}),
        ("finish", {"target_guids": {"": 601, "child": 901}}),
        ("clean", {"target": "tank/r1/child"}),
    ):
        with pytest.raises(NotGranted, match="covers tank/r1 alone"):
            node.recv(verb, dataset="tank/r1", holder=A, **extra)
    assert all("child" not in str(c) for c in node.zfs.changing())  # nothing done inside


def test_a_fenced_holder_is_told_it_is_fenced_not_that_it_holds_nothing(node: Node) -> None:
    """A forced failover fences the standby's sync off the promoted dataset: when its source comes back,
    every call it makes names the fence (lab: test_standby.py's forced failover with the link down)."""
    g = node.grant("node2", "tank/r1", ["increment"])
    node.begin("tank/r1", grant=g)
    node.recv("fence", peer=None, dataset="tank/r1", holder=A, reason="tank/r1 was promoted")
    with pytest.raises(AlreadyRunning, match="fenced off tank/r1: tank/r1 was promoted"):
        node.recv("renew", dataset="tank/r1", holder=A)
    with pytest.raises(AlreadyRunning, match="fenced off tank/r1"):
        node.begin("tank/r1", grant=g)
    with pytest.raises(AlreadyRunning, match="does not hold"):  # an unfenced stranger learns nothing more
        node.recv("renew", dataset="tank/r1", holder=B)


def test_a_grant_for_either_case_asks_zfs_nothing(node: Node) -> None:
    """A replicate grant allows create and increment (the plan decides): the begin's admission then runs
    no ``zfs`` command (each costs ~10 ms on zfs-fuse, on every replication's path)."""

    def no_zfs(_ds: object) -> bool:
        raise AssertionError("exists() asked")

    both = node.grant("node2", "tank/r1", ["create", "increment"])
    args = {"dataset": "tank/r1", "holder": A, "grant": both}
    assert node.auth.for_begin("node2", args, no_zfs).id == both
    inc = node.grant("node2", "tank/r1", ["increment"])
    with pytest.raises(AssertionError, match="exists"):  # one case allowed: it must look
        node.auth.for_begin("node2", {**args, "grant": inc}, no_zfs)


def test_a_batch_checks_each_item_as_its_single_op(node: Node) -> None:
    """recv.expect_many / recv.commit_many on a peer session: each item's claim must be this peer's, and
    a prune needs the item's grant to allow it; a refused item is refused alone, naming nobody."""
    node.zfs.make("tank/r2", f"{P}1", guids=[701])
    node.begin("tank/r1", grant=node.grant("node2", "tank/r1", ["increment", "prune"]))
    node.begin("tank/r2", holder=B, grant=node.grant("node2", "tank/r2", ["increment"]))  # no prune
    node.begin(
        "tank/victim", holder=MADE_UP, peer="node3", grant=node.grant("node3", "tank/victim", ["increment"])
    )
    out = node.recv(
        "expect_many",
        items=[
            {"dataset": "tank/r1", "holder": A, "sent_guids": [602]},
            {"dataset": "tank/r2", "holder": B, "sent_guids": [702]},
            {"dataset": "tank/victim", "holder": MADE_UP, "sent_guids": [503]},  # node3's claim
        ],
    )
    assert "ok" in out[0] and "ok" in out[1]
    assert out[2]["error"] == {"type": "AlreadyRunning", "message": f"{MADE_UP} does not hold tank/victim"}
    assert node.claims.get("tank/victim").state.get("sent") != [503]  # type: ignore[union-attr]
    node.zfs.add_snapshot("tank/r1", f"{P}2", 602)
    node.zfs.add_snapshot("tank/r2", f"{P}2", 702)
    out = node.recv(
        "commit_many",
        items=[
            {"dataset": "tank/r1", "holder": A, "target_guid": 602, "prune_prefix": P},
            {"dataset": "tank/r2", "holder": B, "target_guid": 702, "prune_prefix": P},
        ],
    )
    assert out[0]["ok"]["verified"] is True
    assert out[1]["error"]["type"] == "NotGranted" and "does not allow prune" in out[1]["error"]["message"]
    assert node.zfs.guids("tank/r2") == [701, 702]  # nothing pruned, nothing held
    with pytest.raises(ProtocolError, match="bad arguments"):
        node.recv("commit_many")
