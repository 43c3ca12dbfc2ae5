"""The project's own redis-server (``zfs-backend jobboard up``): started from a 0600 config file with
``requirepass`` (never on its command line, where ``ps`` shows it), bound to loopback only; a client
without the password is refused, the jobboard with it connects. A real redis-server, no lab."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError
from zfs_backend.flows.jobboard import jobboard
from zfs_backend.flows.persistence import backend
from zfs_backend.flows.redis_server import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "home" / "jobboard", free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_started_with_a_private_config_and_a_password(server: RedisServer) -> None:
    pw = server.password_file.read_text().strip()
    for f in (server.password_file, server.conf_file):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    assert f"requirepass {pw}\n" in server.conf_file.read_text()
    pid = server.pid()
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert pw.encode() not in cmdline


def test_a_client_without_the_password_is_refused(server: RedisServer) -> None:
    # as a local user would: a plain connection, a write, then a guessed password
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"SET zfs_backend:x edited\r\n")
        assert s.recv(256).startswith(b"-NOAUTH")
        s.sendall(b"AUTH guess\r\n")
        assert s.recv(256).startswith(b"-WRONGPASS")
    pw = server.password_file.read_text().strip()
    ok = redis.Redis(host="127.0.0.1", port=server.port, password=pw, socket_timeout=5)
    assert ok.ping()
    assert ok.config_get("bind")["bind"] == "127.0.0.1"
    assert ok.config_get("protected-mode")["protected-mode"] == "yes"


def test_start_is_idempotent_and_keeps_the_password(server: RedisServer) -> None:
    pw = server.password_file.read_text()
    pid = server.pid()
    assert server.start() == server.url
    assert server.pid() == pid and server.password_file.read_text() == pw


def test_the_jobboard_connects_with_the_password_file_only(server: RedisServer, tmp_path: Path) -> None:
    env = {
        "ZFS_BACKEND_HOME": str(tmp_path / "home"),
        "ZFS_BACKEND_JOBBOARD": server.url,
    }
    s = load_settings(env)
    assert s.jobboard_password_file == server.password_file  # the default: where `jobboard up` writes it
    with backend(s) as be, jobboard(s, be) as board:
        assert list(board.iterjobs()) == []
    os.chmod(server.password_file, 0o644)
    try:
        with pytest.raises(ConfigError, match="readable"), backend(s) as be, jobboard(s, be):
            pass
    finally:
        os.chmod(server.password_file, 0o600)
    other = tmp_path / "other"
    other.write_text("notthepassword0123456789\n")
    os.chmod(other, 0o600)
    s2 = load_settings({**env, "ZFS_BACKEND_JOBBOARD_PASSWORD_FILE": str(other)})
    with (
        pytest.raises(ConfigError, match="invalid username-password") as e,
        backend(s2) as be,
        jobboard(s2, be),
    ):
        pass
    assert "\n" not in str(e.value)


def test_a_server_left_without_a_password_is_restarted_with_one(tmp_path: Path) -> None:
    """An older version's server (no requirepass) running in the directory is not trusted as it is."""
    import subprocess

    d = tmp_path / "jobboard"
    d.mkdir(mode=0o700)
    port = free_port()
    old = RedisServer(d, port)
    subprocess.run(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d), "--daemonize", "yes",
         "--pidfile", str(old.pid_file), "--save", ""],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    try:
        for _ in range(100):
            if old.pid() is not None:
                break
            time.sleep(0.05)
        assert old.start() == old.url
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(256).startswith(b"-NOAUTH")
    finally:
        old.stop()
