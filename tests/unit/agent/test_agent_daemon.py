"""The agent as a real subprocess on a unix socket in tmp_path; clients over the socket and over the
``rpc`` bridge (the same path SSH uses, minus ssh)."""

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from polling import NotYet, eventually, until

from zfs_backend.activity import ActivityStore
from zfs_backend.agent.manager import ActivityManager
from zfs_backend.errors import (
    ActivityNotFound,
    AgentUnavailable,
    InvalidTransition,
    ProtocolError,
    UsageError,
)
from zfs_backend.rpc import AgentClient, CommandTransport, Node, RemoteActivity
from zfs_backend.zfs import lzc

sys.path.insert(0, str(Path(__file__).parents[1] / "activity"))  # --import-mode=importlib
from pipeline_helpers import MiB, expected_bytes, pipeline_params


class Agent:
    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.sock = tmp_path / "run" / "zfs-backend" / "agent.sock"
        self.env = {
            **os.environ,
            "ZFS_BACKEND_HOME": str(self.home),
            "ZFS_BACKEND_AGENT_SOCKET": str(self.sock),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-m", "zfs_backend.agent", "run", "--test-kinds"],
            env=self.env,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> None:
            try:
                Node.local(socket_path=self.sock).ping()
            except AgentUnavailable:
                assert proc.poll() is None, "agent exited"
                raise NotYet("agent did not come up") from None

        eventually(up, 15, interval=0.05, retry=NotYet)

    def kill(self, sig=signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def bridge_argv(self) -> list[str]:
        return [
            "env",
            f"ZFS_BACKEND_AGENT_SOCKET={self.sock}",
            sys.executable,
            "-m",
            "zfs_backend.agent",
            "rpc",
        ]

    def peer_exec_argv(self, peer: str, command: str = "zfs-backend rpc --peer") -> list[str]:
        """What sshd runs for a peer node's key: ``peer-exec --peer NODE`` with the peer's command."""
        return [
            "env",
            f"ZFS_BACKEND_AGENT_SOCKET={self.sock}",
            f"SSH_ORIGINAL_COMMAND={command}",
            sys.executable,
            "-m",
            "zfs_backend.cli.main",
            "peer-exec",
            "--peer",
            peer,
        ]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def agent(tmp_path):
    a = Agent(tmp_path)
    a.start()
    yield a
    a.stop()


def test_socket_modes_ping_and_errors(agent):
    assert stat.S_IMODE(os.stat(agent.sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(agent.sock.parent).st_mode) == 0o700
    db = agent.home / "agent" / "activities.db"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    node = Node.local(socket_path=agent.sock)
    info = node.ping()
    assert info["agent"] == "zfs-backend" and info["protocol"] == 1
    assert info["libzfs_core"] is lzc.available()  # whether the agent itself goes through pyzfs
    assert "pipeline" in node.client.kinds()
    with pytest.raises(ActivityNotFound, match="no activity act-nope"):
        node.get("act-nope")
    with pytest.raises(UsageError, match="unknown activity kind"):
        node.start("frobnicate", {})
    assert (agent.home / "agent" / "agent.log").read_text().count('"msg": "agent started"') == 1
    agent.stop()
    with pytest.raises(AgentUnavailable, match="no agent at"):
        node.list()


def test_bridge_reports_agent_down_in_one_line(tmp_path):
    a = Agent(tmp_path)  # never started
    client = AgentClient(CommandTransport(a.bridge_argv()))
    with pytest.raises(AgentUnavailable, match="no agent at"):
        client.ping()


def _observe(node_factory, aid, stop, seen, errors):
    node = node_factory()
    while not stop.is_set():
        try:
            seen.append(node.get(aid).progress)
        except AgentUnavailable:
            errors.append(1)
        time.sleep(0.05)


def test_sigkill_agent_mid_stream_then_carry_on(agent, tmp_path):
    out = tmp_path / "out.bin"
    total = 24 * MiB
    node = Node.local(socket_path=agent.sock)
    act = node.start("pipeline", pipeline_params(out, total, bwlimit_bps=8 * MiB))
    assert act.self_restarting
    stop = threading.Event()
    seen: list = []
    down: list = []
    t = threading.Thread(
        target=_observe, args=(lambda: Node.local(socket_path=agent.sock), act.id, stop, seen, down)
    )
    t.start()
    until("6 MiB moved", lambda: act.progress[0] >= 6 * MiB, 20, interval=0.05)
    agent.kill(signal.SIGKILL)
    time.sleep(0.5)
    agent.start()
    assert act.wait(60) == "succeeded", act.error
    stop.set()
    t.join()
    assert act.progress == (total, total) and act.status == 0
    assert out.read_bytes() == expected_bytes(total)
    assert down, "the observer should have seen the agent down"
    ns = [n for n, _ in seen]
    assert ns == sorted(ns), "progress went backwards"
    assert all(m in (0, total) for _, m in seen)


def test_sigterm_detaches_and_next_start_carries_on(agent, tmp_path):
    out = tmp_path / "out.bin"
    total = 16 * MiB
    node = Node.local(socket_path=agent.sock)
    act = node.start("pipeline", pipeline_params(out, total, bwlimit_bps=8 * MiB))
    while act.progress[0] < 2 * MiB:
        time.sleep(0.05)
    agent.kill(signal.SIGTERM)  # clean shutdown
    st = ActivityStore(agent.home / "agent" / "activities.db")
    rec = st.get(act.id)
    assert rec.state == "running"  # left non-terminal on purpose
    n_at_stop = rec.progress.done
    st.close()
    agent.start()
    assert act.wait(60) == "succeeded", act.error
    assert act.progress[0] >= n_at_stop
    assert out.read_bytes() == expected_bytes(total)


def test_twenty_concurrent_through_the_agent(agent, tmp_path):
    node = Node.local(socket_path=agent.sock)
    acts = [node.start("pipeline", pipeline_params(tmp_path / f"o{i}", MiB + i)) for i in range(20)]
    bad = node.start(
        "pipeline", {"producer": {"argv": ["false"]}, "consumer": {"argv": ["cat"]}, "restart": "none"}
    )
    assert bad.wait(30) == "failed"
    for i, a in enumerate(acts):
        assert a.wait(60) == "succeeded", a.error
        assert a.progress == (MiB + i, MiB + i)
    assert len(node.list("succeeded")) == 20
    assert [a.id for a in node.list("failed")] == [bad.id]


# -- the local activity and the remote handle behave the same ---------------------------------------
@pytest.fixture(params=["local", "remote"])
def api(request, tmp_path):
    """start(kind, params) -> BackendActivity, in-process (LocalActivity) or via the rpc bridge."""
    if request.param == "local":
        st = ActivityStore(tmp_path / "local.db")
        mgr = ActivityManager(st, node="test", test_kinds=True)

        def start_local(kind, params):
            rec = mgr.start(kind, params)
            return mgr._live[rec.id]

        yield start_local
        mgr.shutdown(5)
        st.close()
    else:
        a = Agent(tmp_path)
        a.start()
        node = Node(AgentClient(CommandTransport(a.bridge_argv())), "bridged")
        yield node.start
        node.close()
        a.stop()


def test_same_behaviour_local_and_remote(api, tmp_path):
    out = tmp_path / "same.bin"
    total = 32 * MiB
    act = api(
        "pipeline",
        pipeline_params(out, total, bwlimit_bps=8 * MiB, rollback={"argv": ["rm", "-f", str(out)]}),
    )
    assert act.kind == "pipeline" and act.id.startswith("act-") and act.self_restarting
    while act.progress[0] == 0:
        time.sleep(0.05)
    assert act.state == "running" and act.status is None
    with pytest.raises(InvalidTransition, match=f"^cannot resume activity {act.id}: it is running$"):
        act.resume()
    act.suspend()
    assert act.state == "suspended"
    n0 = act.progress[0]
    time.sleep(0.8)
    assert act.progress[0] == n0
    with pytest.raises(InvalidTransition, match="cannot suspend"):
        act.suspend()
    act.resume()
    assert act.state == "running"
    act.cancel()
    assert act.wait(20) == "cancelled"
    assert act.status == 130 and not out.exists()
    with pytest.raises(InvalidTransition, match=f"cannot cancel activity {act.id}: it is cancelled"):
        act.cancel()
    d = act.to_dict()
    assert d["state"] == "cancelled" and d["progress"]["total"] == total
    assert isinstance(act.resources().elapsed_s, float)
    if isinstance(act, RemoteActivity):
        assert act.record() == act.client.get(act.id)


def test_bridge_session_survives_agent_restart(agent, tmp_path):
    node = Node(AgentClient(CommandTransport(agent.bridge_argv())), "bridged")
    pid1 = node.ping()["pid"]
    for _ in range(20):  # many requests, one session
        node.list()
    transport = node.client.transport
    assert isinstance(transport, CommandTransport)
    proc = transport._proc
    act = node.start("pipeline", pipeline_params(tmp_path / "o", 32 * MiB, bwlimit_bps=4 * MiB))
    agent.kill(signal.SIGKILL)
    agent.start()
    time.sleep(0.3)
    act.suspend()  # a mutating op right after the restart goes through a fresh session
    assert transport._proc is not proc
    assert node.ping()["pid"] != pid1
    assert act.state == "suspended"
    act.cancel()
    assert act.wait(20) == "cancelled"


def test_test_kinds_only_when_asked(tmp_path):
    st = ActivityStore(tmp_path / "a.db")
    plain = ActivityManager(st, node="test")
    assert "pipeline" not in plain.kinds() and "replicate" in plain.kinds()
    with pytest.raises(UsageError, match="--test-kinds"):
        plain.start("pipeline", pipeline_params(tmp_path / "o", MiB))
    assert st.list() == []
    assert "pipeline" in ActivityManager(st, node="test", test_kinds=True).kinds()
    st.close()


def test_the_peer_socket_answers_only_what_peers_may_ask(agent):
    peer = Node(AgentClient(CommandTransport(agent.peer_exec_argv("node2"))), "node1")
    assert peer.ping()["agent"] == "zfs-backend"
    assert peer.client.call("recv.status") == []
    for op in ("list", "kinds", "start", "shutdown", "grant.add", "grant.list", "recv.fence", "set", "holds"):
        with pytest.raises(ProtocolError, match="not allowed here"):
            peer.client.call(op)
    assert stat.S_IMODE(os.stat(agent.sock.with_name("peer.sock")).st_mode) == 0o600
    with pytest.raises(ProtocolError, match="bad arguments"):
        peer.client.call("recv.begin", dataset="tank/x")
    peer.close()


def test_set_bwlimit_over_the_socket_and_the_bridge(agent, tmp_path):
    """``set`` changes a running activity's limit at once (the record's events say so); refused with
    one typed error for an unknown key, an absurd rate, an unknown or finished activity."""
    node = Node.local(socket_path=agent.sock)
    out = tmp_path / "out.bin"
    act = node.start("pipeline", pipeline_params(out, 24 * MiB, bwlimit_bps=MiB))
    bridged = Node(AgentClient(CommandTransport(agent.bridge_argv())), "bridge")
    bridged.get(act.id).set_bwlimit(64 * MiB)
    assert any(e["detail"] == f"bwlimit set to {64 * MiB} bytes/s" for e in act.events())
    with pytest.raises(UsageError, match="bwlimit"):
        node.client.set_bwlimit(act.id, 5)
    with pytest.raises(UsageError, match="set takes bwlimit_bps"):
        node.client.call("set", id=act.id, rate=5)
    with pytest.raises(ActivityNotFound):
        node.client.set_bwlimit("act-nope", MiB)
    assert act.wait(60) == "succeeded"
    assert out.read_bytes() == expected_bytes(24 * MiB)
    with pytest.raises(InvalidTransition):
        node.client.set_bwlimit(act.id, MiB)
    bridged.close()
    node.close()
