"""A Redis server for the jobboard on a loopback port, with its own data directory (private), for the
lab, the tests and the benchmarks: ``RedisServer(dir, port).start()`` / ``.stop()``
(``zfs-backend jobboard up|down``). Debian's ``redis-server`` (installed by ``scripts/bootstrap``).

It requires a password (``requirepass``): ``dir/password`` (0600, kept across restarts; see
:mod:`.redis_auth`), which every client reads (``Settings.jobboard_password_file``). The server is started
from ``dir/redis.conf``, written 0600, never with the password on its command line (which ``ps`` shows
to every local user); it binds 127.0.0.1 only, in protected mode. A server found running in ``dir``
that does not take the password (started by an older version, without one) is stopped and started
again with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError, MissingDependency, ZfsBackendError
from ..private import private_dir, private_file
from .redis_auth import ensure_password

__all__ = ["DEFAULT_PORT", "RedisServer"]

DEFAULT_PORT = 6390
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+-]+")  # quoted in redis.conf: no quote, space or backslash


class RedisServer:
    def __init__(self, directory: str | os.PathLike[str], port: int = DEFAULT_PORT) -> None:
        self.dir = Path(directory)
        self.port = int(port)
        self.pid_file = self.dir / "redis.pid"
        self.conf_file = self.dir / "redis.conf"
        self.password_file = self.dir / "password"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _answers(self, password: str) -> bool:
        """It answers PING after AUTH with ``password``."""
        auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password.encode())
        want = b"+OK\r\n+PONG\r\n"
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s,
        ):
            s.sendall(auth)
            got = b""
            while len(got) < len(want) and b"-" not in got[:1]:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            return got.startswith(want)
        return False

    def _config(self, password: str) -> str:
        for p in (self.dir, self.pid_file):
            if not _SAFE_PATH.fullmatch(str(p)):
                raise ConfigError(f"jobboard directory {self.dir}: only [A-Za-z0-9_./+-] in its path")
        return "\n".join(
            [
                "# written by zfs-backend jobboard up (flows/redis_server.py): private, holds the password",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"port {self.port}",
                f'dir "{self.dir}"',
                f'pidfile "{self.pid_file}"',
                f'logfile "{self.dir / "redis.log"}"',
                "daemonize yes",
                'save ""',
                "appendonly yes",
                "appendfsync everysec",
                f"requirepass {password}",
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> str:
        """Start it (idempotent); returns its URL."""
        private_dir(self.dir)
        password = ensure_password(self.password_file)
        if self.pid() is not None:
            if self._answers(password):
                return self.url
            self.stop()  # ours (its pid file is in our directory) but without this password: restart it
        binary = shutil.which("redis-server", path="/usr/bin:/usr/sbin:/usr/local/bin:/bin")
        if binary is None:
            raise MissingDependency("redis-server is not installed (scripts/bootstrap installs it)")
        private_file(self.conf_file)
        fd = os.open(self.conf_file, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, self._config(password).encode())
        finally:
            os.close(fd)
        argv = [binary, str(self.conf_file)]
        old = os.umask(0o077)
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=timeout)
        except subprocess.CalledProcessError as e:
            raise ZfsBackendError(f"redis-server: {e.stderr.decode(errors='replace').strip()}") from None
        finally:
            os.umask(old)
        deadline = time.monotonic() + timeout
        while not self._answers(password):
            if time.monotonic() > deadline:
                raise ZfsBackendError(
                    f"redis-server on 127.0.0.1:{self.port} did not answer (see {self.dir}/redis.log)"
                )
            time.sleep(0.05)
        return self.url

    def stop(self, timeout: float = 10.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return True
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        return True
