"""The agent's peer check (``AgentServer.peer_allowed``, ``SO_PEERCRED``): a client whose uid is neither
root nor the agent's own is answered "permission denied" and nothing it sends is served.

The socket is 0600 in a 0700 directory, so nobody else can even connect; to reach the check itself this
test starts a throwaway agent (as root) with its socket in a directory it made 0755 and widens the
socket to 0666, then connects from a forked child that dropped to uid/gid 65534. Needs root: skipped
otherwise, and failed under CI (``CI`` set), where it must run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from polling import NotYet, eventually

from zfs_backend.errors import AgentUnavailable
from zfs_backend.rpc import Node

NOBODY = 65534


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        msg = "the agent peer-uid test needs root (it drops a child to uid 65534)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def open_agent(root: None, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """An agent whose socket uid 65534 can reach: (socket path, process)."""
    run = Path(tempfile.mkdtemp(prefix="zb-peer-", dir="/tmp"))
    run.chmod(0o755)
    sock = run / "agent.sock"
    env = {**os.environ, "ZFS_BACKEND_HOME": str(tmp_path / "home"), "ZFS_BACKEND_AGENT_SOCKET": str(sock)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zfs_backend.agent"],
        env=env,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def up() -> None:
            try:
                Node.local(socket_path=sock).ping()
            except AgentUnavailable:
                assert proc.poll() is None, "agent exited"
                raise NotYet("agent did not come up") from None

        eventually(up, 30, interval=0.05, retry=NotYet)
        assert stat.S_IMODE(run.stat().st_mode) == 0o755  # the agent did not chmod a directory it found
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        sock.chmod(0o666)
        yield sock, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(run, ignore_errors=True)


def as_uid(uid: int, fn: Callable[[], object]) -> dict[str, object]:
    """Run ``fn`` in a forked child that dropped to ``uid`` (no supplementary groups); returns
    ``{"uid": ..., "result": ...}`` or ``{"uid": ..., "error": "Type: message"}``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, always _exit
        out: dict[str, object] = {}
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out["uid"] = os.getuid()
            out["result"] = fn()
        except BaseException as e:
            out["error"] = f"{type(e).__name__}: {e}"
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    result: dict[str, object] = json.loads(raw)
    return result


def exchange(sock: Path, lines: list[dict[str, object]]) -> list[object]:
    """Send ``lines`` at once, then read until the agent hangs up: the response lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(sock))
        s.sendall(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(x) for x in data.splitlines() if x.strip()]


def test_non_root_peer_refused_and_nothing_served(
    open_agent: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    sock, proc = open_agent
    start = {"kind": "pipeline", "params": {"producer": {"argv": ["true"]}, "consumer": {"argv": ["true"]}}}
    requests: list[dict[str, object]] = [
        {"id": 1, "op": "ping", "args": {}},
        {"id": 2, "op": "start", "args": start},
        {"id": 3, "op": "shutdown", "args": {}},
    ]
    seen = as_uid(NOBODY, lambda: exchange(sock, requests))
    # one answer, to no request (id null): the refusal; then the agent hung up without serving a line
    refusal = {"id": None, "error": {"type": "AgentUnavailable", "message": "permission denied"}}
    assert seen == {"uid": NOBODY, "result": [refusal]}
    # the project's own client, as that uid, is told so in one line, every time
    for _ in range(20):
        assert as_uid(NOBODY, lambda: Node.local(socket_path=sock).ping()) == {
            "uid": NOBODY,
            "error": "AgentUnavailable: permission denied",
        }
    # nothing was served: no shutdown, no activity
    assert proc.poll() is None
    node = Node.local(socket_path=sock)
    assert node.ping()["agent"] == "zfs-backend"
    assert node.list() == []
    # the same client as root, from a child like the refused ones, is served (the uid is refused)
    assert as_uid(0, lambda: Node.local(socket_path=sock).ping()["agent"]) == {
        "uid": 0,
        "result": "zfs-backend",
    }
