"""snapshot_replicate between the Vagrant tier's OpenZFS VMs, deployed by ``ansible/site.yml`` (the lab
nodes' role): the agents run as systemd units, the nodes' keys are narrow (``peer-exec --peer``), the
controller's key logs in only from the host, and every node-to-node stream runs under a grant the
controller obtained from the destination's agent.

Covered here, each on OpenZFS 2.x: full then incremental then ``--intermediates``; a recursive tree;
``n == m`` when a replication succeeds (although ``send -nvP`` is off by up to ~1.2 % here); a stream
without a grant refused by the destination VM, then the same replication under the controller's grant;
suspend that tears the pipeline down (no ``zfs send``/``zfs recv``/``ssh`` left on either VM, the
destination keeping its receive token) and resume that finishes from the token, ``n`` counting on;
cancel while suspended so, which discards the partial receive (``recv -A``); cancel, which discards the
partial receive and leaves the destination as it was; the source's agent SIGKILLed mid-transfer
(systemd restarts it), after which the activity finishes by itself from the receive token. The streams
of issue 21 (``-L -c -e``, bookmarks as bases, the stale-token fallback, a tree in parallel):
test_replication_openzfs_streams.py.

The VMs are emulated (TCG): small data, ``bwlimit`` to keep a transfer running long enough to act on,
generous timeouts, no timing assertions.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.activity.core import BackendActivity
from zfs_backend.config import Settings
from zfs_backend.errors import AgentUnavailable, NotGranted
from zfs_backend.hosts import SSHHost
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from replication_vm import (
    MiB,
    T,
    assert_success,
    checksums,
    listing,
    new_name,
    replicate,
    snapshot,
    stream_processes,
    wait_for_bytes,
    write,
)

# --- the happy paths -------------------------------------------------------------------------------


def test_full_incremental_and_intermediates(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 8)
    snapshot(src, ds, "s1")
    act = replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}")
    assert act.kind == "replicate" and act.node == src.name
    assert_success(act)
    assert checksums(dst, ds) == checksums(src, ds)
    assert listing(dst, ds) == listing(src, ds)
    assert 8 * MiB <= act.progress[0] <= 8 * MiB * 1.05 + MiB

    write(src, ds, "b", 2)
    snapshot(src, ds, "s2")
    act = replicate(settings, agents, f"{src.name}:{ds}@s2", f"{dst.name}:{ds}")
    assert_success(act)
    assert act.progress[0] <= 2 * MiB * 1.05 + MiB  # an incremental: the change, not the dataset
    assert checksums(dst, ds) == checksums(src, ds)
    assert listing(dst, ds) == listing(src, ds)

    for s in ("s3", "s4"):
        write(src, ds, s, 1)
        snapshot(src, ds, s)
    act = replicate(settings, agents, f"{src.name}:{ds}@s4", f"{dst.name}:{ds}", intermediates=True)
    assert_success(act)
    assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2", "s3", "s4"]
    assert listing(dst, ds) == listing(src, ds)
    assert checksums(dst, ds) == checksums(src, ds)


def test_recursive_tree(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    top = new_name(names)
    write(src, top, "a", 2)
    write(src, f"{top}/child", "b", 2)
    snapshot(src, top, "s1", recursive=True)
    act = replicate(settings, agents, f"{src.name}:{top}@s1", f"{dst.name}:{top}", recursive=True)
    assert_success(act)
    for ds in (top, f"{top}/child"):
        assert checksums(dst, ds) == checksums(src, ds)
        assert listing(dst, ds) == listing(src, ds)
    write(src, f"{top}/child", "c", 1)
    snapshot(src, top, "s2", recursive=True)
    act = replicate(settings, agents, f"{src.name}:{top}@s2", f"{dst.name}:{top}", recursive=True)
    assert_success(act)
    for ds in (top, f"{top}/child"):
        assert checksums(dst, ds) == checksums(src, ds)
        assert [s for s, _ in listing(dst, ds) or []] == ["s1", "s2"]


# --- grants: the destination VM takes a peer's stream only under the controller's grant -------------


class _NoGrant:
    """A source agent session that starts its activity without the grant the controller obtained: what a
    peer acting on its own would do."""

    def __init__(self, node: Any) -> None:
        self._node = node

    def start(self, kind: str, params: dict[str, Any]) -> BackendActivity:
        return self._node.start(kind, {k: v for k, v in params.items() if k != "grant"})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


def test_without_a_grant_the_destination_refuses_and_with_it_replicates(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    zd = Zfs(dst, timeout=T)

    # the source's own node key, straight at the destination's sshd: peer-exec refuses a bare receive
    send = shlex.join(["zfs", "send", f"{ds}@s1"])
    recv = shlex.join(["zfs", "receive", "-s", ds])
    script = f"{send} | ssh {shlex.quote(dst.name)} {shlex.quote(recv)}"
    raw = src.run(["sh", "-c", script], timeout=T, check=False)
    assert raw.returncode != 0
    assert "refused" in raw.err_text, raw.err_text
    assert not zd.exists(parse_dataset(ds))

    # the source's agent starting the replication without the controller's grant: refused at the start
    src_name = src.name
    with pytest.raises(NotGranted):
        replicate(
            settings,
            agents,
            f"{src.name}:{ds}@s1",
            f"{dst.name}:{ds}",
            wrap=lambda node: _NoGrant(node) if getattr(node, "name", None) == src_name else node,
        )
    assert not zd.exists(parse_dataset(ds))  # no dataset, so no partial receive either

    # the controller's grant: the same replication works
    assert_success(replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}"))
    assert listing(dst, ds) == listing(src, ds)
    assert checksums(dst, ds) == checksums(src, ds)


# --- steering mid-transfer on OpenZFS: resumable receives ------------------------------------------


def _suspended(act: BackendActivity) -> None:
    act.suspend()
    deadline = time.monotonic() + T
    while act.state != "suspended" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert act.state == "suspended", act.record()


def test_suspend_stops_the_transfer_and_resume_finishes_it(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 16)
    snapshot(src, ds, "s1")
    act = replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}", bwlimit="1M")
    try:
        wait_for_bytes(act, 2 * MiB)
        _suspended(act)
        n1 = act.progress[0]
        time.sleep(5)
        assert act.progress[0] - n1 <= 2 * MiB  # at most the chunk in flight lands, then nothing moves
        act.resume()
        assert_success(act)
    finally:
        if act.state not in ("succeeded", "failed", "cancelled"):
            act.cancel()
    assert checksums(dst, ds) == checksums(src, ds)
    assert listing(dst, ds) == listing(src, ds)
    assert Zfs(dst, timeout=T).resume_token(parse_dataset(ds)) is None


def _torn_down(src: SSHHost, dst: SSHHost, ds: str) -> str:
    """No stream process left on either VM (not ``zfs send``, not ``zfs recv``, not the ``ssh`` whose
    command line carries it); the destination's receive token."""
    deadline = time.monotonic() + 120
    left = {h.name: stream_processes(h) for h in (src, dst)}
    while any(left.values()) and time.monotonic() < deadline:
        time.sleep(2)
        left = {h.name: stream_processes(h) for h in (src, dst)}
    assert not any(left.values()), left
    tok = Zfs(dst, timeout=T).resume_token(parse_dataset(ds))
    assert tok is not None
    return tok


def test_suspend_tears_the_pipeline_down_and_resume_starts_from_the_token(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 16)
    snapshot(src, ds, "s1")
    act = replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}", bwlimit="1M")
    try:
        wait_for_bytes(act, 2 * MiB)
        _suspended(act)
        _torn_down(src, dst, ds)
        n1 = act.progress[0]
        time.sleep(5)
        assert act.state == "suspended" and act.progress[0] == n1  # nothing moves, nothing restarts
        act.resume()
        assert_success(act)
    finally:
        if act.state not in ("succeeded", "failed", "cancelled"):
            act.cancel()
            act.wait(T)
    n, m = act.progress
    assert n == m >= n1
    # the stream's bytes, counted on from what the token held: neither the resumed part alone nor the
    # whole stream twice
    assert 16 * MiB <= n <= 16 * MiB * 1.05 + MiB
    assert checksums(dst, ds) == checksums(src, ds)
    assert listing(dst, ds) == listing(src, ds)
    assert Zfs(dst, timeout=T).resume_token(parse_dataset(ds)) is None


def test_cancel_while_suspended_discards_the_partial_receive(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    assert_success(replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}"))
    write(src, ds, "b", 16)
    snapshot(src, ds, "s2")
    before, sums = listing(dst, ds), checksums(dst, ds)
    act = replicate(settings, agents, f"{src.name}:{ds}@s2", f"{dst.name}:{ds}", bwlimit="1M")
    try:
        wait_for_bytes(act, 2 * MiB)
        _suspended(act)
        _torn_down(src, dst, ds)
    finally:
        act.cancel()
    assert act.wait(T) == "cancelled", act.record()
    assert Zfs(dst, timeout=T).resume_token(parse_dataset(ds)) is None  # recv -A
    assert listing(dst, ds) == before
    assert checksums(dst, ds) == sums


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_cancel_discards_the_partial_receive(
    vm_pair: tuple[SSHHost, SSHHost],
    settings: Settings,
    agents: dict[str, Any],
    names: list[str],
    incremental: bool,
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 2 if incremental else 16)
    snapshot(src, ds, "s1")
    target = "s1"
    if incremental:
        assert_success(replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}"))
        write(src, ds, "b", 16)
        snapshot(src, ds, "s2")
        target = "s2"
    before, sums = listing(dst, ds), checksums(dst, ds)
    act = replicate(settings, agents, f"{src.name}:{ds}@{target}", f"{dst.name}:{ds}", bwlimit="1M")
    wait_for_bytes(act, 2 * MiB)
    act.cancel()
    assert act.wait(T) == "cancelled", act.record()
    assert act.status not in (None, 0)
    zd = Zfs(dst, timeout=T)
    assert listing(dst, ds) == before
    assert checksums(dst, ds) == sums
    if incremental:
        assert zd.resume_token(parse_dataset(ds)) is None  # recv -A: no partial state kept
    else:
        assert not zd.exists(parse_dataset(ds))  # a cut full receive, aborted, leaves nothing


# --- faults: the activity finishes by itself ---------------------------------------------------------


def agent_pid(host: SSHHost) -> int:
    out = host.run(["systemctl", "show", "-p", "MainPID", "--value", "zfs-backend-agent"], timeout=T).text
    return int(out.strip() or 0)


def state_across_restart(act: BackendActivity, timeout: float = T) -> str:
    """The activity's state once its agent answers again: while systemd restarts it (``RestartSec``, then
    the agent's start, tens of seconds under TCG) the client's session is lost and a read fails with
    ``AgentUnavailable``; the next read reconnects to the new agent."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return act.state
        except AgentUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_agent_sigkill_mid_transfer_finishes_from_the_token(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, agents: dict[str, Any], names: list[str]
) -> None:
    """The source's agent (the systemd unit, ``Restart=always``, ``KillMode=mixed``: the unit's other
    processes go with it) SIGKILLed mid-transfer: systemd starts it again and the activity finishes by
    itself from the destination's receive token, every byte accounted for (``n == m``), data equal."""
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 16)
    snapshot(src, ds, "s1")
    act = replicate(settings, agents, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}", bwlimit="1M")
    try:
        n0 = wait_for_bytes(act, 2 * MiB)
        pid = agent_pid(src)
        assert pid > 0
        src.run(["kill", "-KILL", str(pid)], timeout=T)
        state_across_restart(act)  # the new agent answers (it carried the activity on)
        assert act.wait(T) == "succeeded", act.record()
    finally:
        if state_across_restart(act) not in ("succeeded", "failed", "cancelled"):
            act.cancel()
            act.wait(T)
    assert agent_pid(src) not in (0, pid)  # a new agent finished it
    n, m = act.progress
    assert n == m >= n0
    assert checksums(dst, ds) == checksums(src, ds)
    assert listing(dst, ds) == listing(src, ds)
    assert Zfs(dst, timeout=T).resume_token(parse_dataset(ds)) is None
