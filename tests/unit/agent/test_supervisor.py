"""The supervised daemon mode: idempotent start, restart of a child that dies, clean stop (real processes)."""

import os
import signal
import sys
from pathlib import Path

import pytest
from polling import until

from zfs_backend.agent import supervisor
from zfs_backend.config import load_env_file
from zfs_backend.errors import ConfigError


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.fixture
def spec(tmp_path: Path):
    s = supervisor.Supervised(
        argv=[
            sys.executable,
            "-c",
            "import os, time; print('child', os.environ['MARK'], flush=True); time.sleep(600)",
        ],
        pidfile=tmp_path / "run" / "sup.pid",
        log=tmp_path / "log" / "sup.log",
        env={"MARK": "m1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    yield s
    supervisor.stop(s.pidfile, timeout=30)


def test_start_is_idempotent_and_stop_removes_everything(spec):
    assert supervisor.status(spec.pidfile) is None
    first = supervisor.start(spec)
    assert first.started and first.pid > 0
    assert supervisor.status(spec.pidfile) == first.pid
    assert oct(spec.pidfile.stat().st_mode & 0o777) == "0o600"
    again = supervisor.start(spec)
    assert (again.started, again.pid) == (False, first.pid)
    child = until("child started", lambda: _children(first.pid), 30, interval=0.05)[0]
    until("child's output in the log", lambda: "child m1" in spec.log.read_text(), 30, interval=0.05)
    assert supervisor.stop(spec.pidfile) == first.pid
    assert supervisor.status(spec.pidfile) is None
    assert not spec.pidfile.exists()
    until("child stopped", lambda: not os.path.exists(f"/proc/{child}") or _zombie(child), 30, interval=0.05)
    assert supervisor.stop(spec.pidfile) is None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_child_that_dies_is_restarted(spec):
    res = supervisor.start(spec)
    child = until("child started", lambda: _children(res.pid), 30, interval=0.05)[0]
    os.kill(child, signal.SIGKILL)
    new = until("child restarted", lambda: [c for c in _children(res.pid) if c != child], 30, interval=0.05)[
        0
    ]
    assert new != child
    assert supervisor.status(spec.pidfile) == res.pid
    assert "restarting in" in spec.log.read_text()


def test_a_stale_pidfile_is_not_running(tmp_path: Path):
    pidfile = tmp_path / "sup.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live pid, but nobody holds the lock
    assert supervisor.status(pidfile) is None


def test_env_file(tmp_path: Path):
    f = tmp_path / "agent.env"
    f.write_text("# comment\n\nZFS_BACKEND_HOME=/var/lib/zfs-backend\nA_B='x y'\nC=\"q\"\n")
    assert load_env_file(f) == {"ZFS_BACKEND_HOME": "/var/lib/zfs-backend", "A_B": "x y", "C": "q"}
    f.write_text("export X=1\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_env_file(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_env_file(tmp_path / "missing")
