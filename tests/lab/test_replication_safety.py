"""Nothing lost, nobody in: replication on the lab never discards destination data it did not write,
cancel restores whole trees, only this replication's datasets are ever destroyed, one replication at a
time per destination, node keys are narrow and parameters never choose how SSH runs.

Each test first reproduces what used to go wrong (data written into a replica silently discarded by
``recv -F``, a child rolled back without a look, ...) and checks that the bytes are still there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.errors import AlreadyRunning, ReplicationConflict, UsageError
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import (
    MiB,
    _agent,
    assert_success,
    checksums,
    guid,
    listing,
    new_name,
    replicate,
    shaped,
    snapshot,
    wait_for_bytes,
    write,
)


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def open_up(host: SSHHost, ds: str) -> None:
    """Replicas are read-only; a user who wants to write into one opens it up first."""
    Zfs(host).set(parse_dataset(ds), "readonly", "off")


def writable(host: SSHHost, ds: str) -> bool:
    mnt = Zfs(host).mountpoint(parse_dataset(ds))
    return host.run(["touch", f"{mnt}/.probe-write"], check=False).returncode == 0 and (
        host.run(["rm", "-f", f"{mnt}/.probe-write"]).returncode == 0
    )


def write_kib(host: SSHHost, ds: str, file: str, kib: int) -> None:
    mnt = Zfs(host).mountpoint(parse_dataset(ds))
    host.run(["dd", "if=/dev/urandom", f"of={mnt}/{file}", "bs=1k", f"count={kib}", "status=none"])


def tree(host: SSHHost, top: str) -> dict[str, tuple[list[tuple[str, int]] | None, dict[str, str]]]:
    """Every dataset of the tree: its snapshots (names, GUIDs) and file checksums."""
    z = Zfs(host)
    if not z.exists(parse_dataset(top)):
        return {}
    return {
        str(d.name): (listing(host, str(d.name)), checksums(host, str(d.name)))
        for d in z.list_datasets(parse_dataset(top), recursive=True)
    }


def refused(settings: Settings, src: str, dst: str, **kw: object) -> str:
    """Start a replication that must be refused; return the refusal. Usually the start refuses; a change
    too fresh for the destination's space accounting is refused by the receive itself (the activity
    then fails as a conflict, status 8, with nothing discarded)."""
    try:
        act = replicate(settings, src, dst, **kw)  # type: ignore[arg-type]
    except ReplicationConflict as e:
        return str(e)
    assert act.wait(120) == "failed", act.record()
    assert act.status == 8, act.record()
    return act.error or ""


# --- writes into replicas are refused, never lost ---------------------------------------------------


def test_new_replicas_are_read_only_and_marked(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    ds = new_name(names)
    write(nodes["node1"], ds, "a", 2)
    snapshot(nodes["node1"], ds, "s1")
    act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
    assert_success(act)
    assert not writable(nodes["node2"], ds)
    props = Zfs(nodes["node2"]).get(parse_dataset(ds), ["zfs_backend:receiver", "zfs_backend:source"])
    assert props == {"zfs_backend:receiver": act.id, "zfs_backend:source": f"node1:{ds}"}
    assert act.record().result["created"] == [""]


@pytest.mark.parametrize("kib", [4, 512])
def test_a_write_into_a_replica_is_refused_and_kept(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], kib: int
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 4)
    snapshot(src, ds, "s1")
    assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}"))
    open_up(dst, ds)
    write_kib(dst, ds, "mine", kib)
    write(src, ds, "b", 2)
    snapshot(src, ds, "s2")
    before, sums = listing(dst, ds), checksums(dst, ds)
    text = refused(lab_settings, f"node1:{ds}@s2", f"node2:{ds}")
    assert "diverged" in text or "changed after" in text, text
    assert "\n" not in text
    assert listing(dst, ds) == before and checksums(dst, ds) == sums
    assert writable(dst, ds)  # its read-only lock during the attempt was undone


def test_a_write_into_one_child_of_a_recursive_replica_is_refused_and_kept(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    top = new_name(names)
    for ds, mib in ((top, 2), (f"{top}/a", 2), (f"{top}/b", 2)):
        write(src, ds, "data", mib)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    assert_success(replicate(lab_settings, f"node1:{top}@s1", f"node2:{top}", recursive=True))
    open_up(dst, f"{top}/b")
    write_kib(dst, f"{top}/b", "mine", 4)
    write(src, f"{top}/a", "more", 2)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s2"), recursive=True)
    before = tree(dst, top)
    text = refused(lab_settings, f"node1:{top}@s2", f"node2:{top}", recursive=True)
    assert "b" in text and ("diverged" in text or "changed after" in text), text
    assert tree(dst, top) == before  # no dataset of the tree changed, the untouched child neither


def test_reading_a_writable_replica_blocks_nothing_and_loses_nothing(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    top = new_name(names)
    write(src, top, "a", 2)
    write(src, f"{top}/c", "b", 2)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    assert_success(replicate(lab_settings, f"node1:{top}@s1", f"node2:{top}", recursive=True))
    for ds in (top, f"{top}/c"):
        open_up(dst, ds)
    time.sleep(1.1)  # atime has a one-second grain
    tree(dst, top)  # reads every file: atime noise on each head
    write(src, f"{top}/c", "more", 2)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s2"), recursive=True)
    assert_success(replicate(lab_settings, f"node1:{top}@s2", f"node2:{top}", recursive=True))
    for ds in (top, f"{top}/c"):
        assert checksums(dst, ds) == checksums(src, ds)
        assert guid(dst, f"{ds}@s2") == guid(src, f"{ds}@s2")


def test_rollback_destination_says_what_it_discarded(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}"))
    open_up(dst, ds)
    write_kib(dst, ds, "mine", 512)
    snapshot(dst, ds, "mine")
    write_kib(dst, ds, "later", 4)
    snapshot(src, ds, "s2")
    act = replicate(lab_settings, f"node1:{ds}@s2", f"node2:{ds}", rollback_destination=True)
    assert_success(act)
    gone = act.record().result["discarded"][""]
    assert gone["snapshots"] == ["mine"]
    assert gone["bytes"] >= 512 * 1024 + 4096
    assert gone["changes"]  # the head's own change after @mine is named too
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2"]


def test_rollback_destination_discards_nothing_while_the_destination_is_in_use(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str]
) -> None:
    """discard quiets the dataset (unmounts it) before it measures and rolls back: on zfs-fuse a file
    held open refuses the unmount, and then nothing is discarded (a writer could have written meanwhile)."""
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}"))
    open_up(dst, ds)
    Zfs(dst).set(parse_dataset(ds), "atime", "off")  # reading it (tree, below) leaves no noise to settle
    write_kib(dst, ds, "mine", 64)
    snapshot(dst, ds, "mine")
    snapshot(src, ds, "s2")
    before = tree(dst, ds)
    mnt = Zfs(dst).mountpoint(parse_dataset(ds))
    pidfile = f"/tmp/holder-{ds.rpartition('/')[2]}"
    hold = ["sh", "-c", 'echo $$ > "$2"; exec 3<"$1/mine"; exec sleep 60', "sh", str(mnt), pidfile]
    holder = dst.spawn(hold, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while dst.run(["test", "-s", pidfile], check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        text = refused(lab_settings, f"node1:{ds}@s2", f"node2:{ds}", rollback_destination=True)
    finally:
        dst.run(["sh", "-c", 'kill "$(cat "$1")"; rm -f "$1"', "sh", pidfile], check=False)
        holder.kill()
        holder.wait()
    assert "in use" in text, text
    assert tree(dst, ds) == before  # @mine and its data are still there


# --- the destination, between planning and receiving --------------------------------------------------


def test_a_snapshot_made_on_the_destination_after_planning_survives(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    assert_success(replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}"))
    write(src, ds, "b", 16)
    snapshot(src, ds, "s2")
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{ds}@s2", f"node2:{ds}")
        act.suspend()  # planned, the receive not begun (or barely)
        snapshot(dst, ds, "mine")
        mine = guid(dst, f"{ds}@mine")
        sums = checksums(dst, ds)
        act.resume()
        state = act.wait(120)
    assert state in ("failed", "succeeded"), act.record()
    assert ("mine", mine) in (listing(dst, ds) or [])
    if state == "failed":
        assert [s for s, _ in listing(dst, ds) or []] == ["s1", "mine"]
        assert checksums(dst, ds) == sums


# --- cancel restores whole trees -------------------------------------------------------------------


def test_recursive_cancel_mid_stream_restores_the_tree(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    top = new_name(names)
    for ds in (top, f"{top}/a", f"{top}/b"):
        write(src, ds, "data", 2)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    assert_success(replicate(lab_settings, f"node1:{top}@s1", f"node2:{top}", recursive=True))
    write(src, f"{top}/a", "more", 8)
    write(src, f"{top}/b", "more", 8)
    write(src, f"{top}/new", "data", 8)  # a child the stream would create
    Zfs(src).snapshot(parse_snapshot(f"{top}@s2"), recursive=True)
    before = tree(dst, top)
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{top}@s2", f"node2:{top}", recursive=True)
        wait_for_bytes(act, 10 * MiB, timeout=60)  # past the first child
        act.cancel()
        assert act.wait(60) == "cancelled", act.record()
    assert tree(dst, top) == before  # names, GUIDs and data of every dataset; no new child
    assert act.record().result.get("left_alone") == []


def test_recursive_full_cancel_leaves_nothing(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    top = new_name(names)
    for ds in (top, f"{top}/a", f"{top}/b"):
        write(src, ds, "data", 8)
    Zfs(src).snapshot(parse_snapshot(f"{top}@s1"), recursive=True)
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{top}@s1", f"node2:{top}", recursive=True)
        wait_for_bytes(act, 10 * MiB, timeout=60)
        act.cancel()
        assert act.wait(60) == "cancelled", act.record()
    assert tree(dst, top) == {}


# --- whose datasets: destroy only what this replication made -----------------------------------------


def test_cancel_and_failure_never_destroy_a_dataset_someone_else_made(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 16)
    snapshot(src, ds, "s1")
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        act.suspend()  # planned as a full receive into a new dataset...
        write(dst, ds, "theirs", 1)  # ...which somebody else creates meanwhile
        theirs = checksums(dst, ds)
        act.resume()
        assert act.wait(120) == "failed", act.record()
    assert checksums(dst, ds) == theirs
    assert any("left alone" in x for x in act.record().result.get("left_alone", [])), act.record().result


def test_agent_restart_never_destroys_a_dataset_someone_else_made(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    src, dst = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(src, ds, "a", 16)
    snapshot(src, ds, "s1")
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        act.suspend()
        write(dst, ds, "theirs", 1)
        theirs = checksums(dst, ds)
        lab.restart_service("node1", "agent", hard=True)  # the restart re-plans from what is there
        act.resume()
        assert act.wait(120) == "failed", act.record()
    assert checksums(dst, ds) == theirs


# --- one replication per destination, from any source ---------------------------------------------------


def test_two_sources_cannot_receive_into_one_destination(
    nodes: dict[str, SSHHost], lab_settings: Settings, names: list[str], lab: Lab
) -> None:
    a, b, dest = new_name(names), new_name(names), new_name(names)
    write(nodes["node1"], a, "a", 16)
    snapshot(nodes["node1"], a, "s1")
    write(nodes["node3"], b, "b", 2)
    snapshot(nodes["node3"], b, "s1")
    with shaped(lab, "node1", 4):
        act = replicate(lab_settings, f"node1:{a}@s1", f"node2:{dest}")
        wait_for_bytes(act, MiB)
        for target in (dest, f"{dest}/inside"):
            with pytest.raises(AlreadyRunning, match="being received into"):
                replicate(lab_settings, f"node3:{b}@s1", f"node2:{target}")
        with pytest.raises(AlreadyRunning):  # the same source's other dataset too
            replicate(lab_settings, f"node3:{b}@s1", f"node2:{dest}")
        act.cancel()
        assert act.wait(60) == "cancelled"
    assert_success(replicate(lab_settings, f"node3:{b}@s1", f"node2:{dest}"))  # the claim was released
    assert checksums(nodes["node2"], dest) == checksums(nodes["node3"], b)


# --- nobody in ---------------------------------------------------------------------------------------


def test_params_never_choose_how_ssh_runs(lab_settings: Settings, names: list[str]) -> None:
    node = _agent(lab_settings, "node1")
    count = len(node.client.list(limit=None))
    params = {
        "snapshot": "tank/x@s1",
        "source_node": "node1",
        "destination_node": "node2",
        "destination": "tank/x",
    }
    for extra in ({"ssh_config": "/tmp/evil"}, {"ssh_options": ["-oProxyCommand=touch /tmp/pwned"]}):
        with pytest.raises(UsageError, match="not accepted"):
            node.start("replicate", {**params, **extra})
    with pytest.raises(UsageError):
        node.start("replicate", {**params, "cipher": "none"})
    assert len(node.client.list(limit=None)) == count  # nothing stored


def test_node_keys_are_narrow(nodes: dict[str, SSHHost], lab: Lab, lab_settings: Settings) -> None:
    n1 = nodes["node1"]
    peer_argv = ["ssh", "-o", "BatchMode=yes", "node2", "--"]
    for cmd in (
        ["id"],
        ["zfs", "destroy", "-r", "tank"],
        ["zfs", "receive", "-F", "tank/x"],
        ["sh", "-c", "id"],
    ):
        r = n1.run([*peer_argv, *cmd], check=False)
        assert r.returncode == 126 and "refused" in r.err_text, (cmd, r)
    # the peer socket answers the receiving end only: no activity can be started through a node key
    r = n1.run([*peer_argv, "zfs-backend", "rpc", "--peer"], input=b'{"id":1,"op":"list","args":{}}\n')
    assert json.loads(r.text)["error"]["type"] == "ProtocolError"
    r = n1.run([*peer_argv, "zfs-backend", "rpc", "--peer"], input=b'{"id":1,"op":"ping","args":{}}\n')
    assert json.loads(r.text)["result"]["agent"] == "zfs-backend"
    lines = nodes["node2"].run(["cat", "/root/.ssh/authorized_keys"]).text.splitlines()
    node1_line = next(ln for ln in lines if ln.endswith("root@node1"))
    assert node1_line.startswith(f'restrict,from="{lab.node("node1").address}",command="')
    assert "peer-exec" in node1_line
    assert not any(ln.endswith("root@node2") for ln in lines)  # never its own key
    # node1's key from anywhere but node1 (here: the controller) is refused by sshd itself
    key = lab.layout.node(1).dir / "keys" / "id_ed25519"
    r_host = lab.node("node2").address
    r2 = subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={lab.layout.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            f"root@{r_host}", "zfs-backend", "rpc", "--peer",
        ],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert r2.returncode == 255 and b"Permission denied" in r2.stderr, r2
