"""A Redis server for the jobboard on a loopback port, with its own data directory (private), for the
lab, the tests and the benchmarks: ``RedisServer(dir, port).start()`` / ``.stop()``
(``zfs-backend jobboard up|down``). Debian's ``redis-server`` (installed by ``scripts/bootstrap``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import MissingDependency, ZfsBackendError
from ..private import private_dir

__all__ = ["DEFAULT_PORT", "RedisServer"]

DEFAULT_PORT = 6390


class RedisServer:
    def __init__(self, directory: str | os.PathLike[str], port: int = DEFAULT_PORT) -> None:
        self.dir = Path(directory)
        self.port = int(port)
        self.pid_file = self.dir / "redis.pid"

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

    def _answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def start(self, timeout: float = 15.0) -> str:
        """Start it (idempotent); returns its URL."""
        if self.pid() is not None and self._answers():
            return self.url
        binary = shutil.which("redis-server", path="/usr/bin:/usr/sbin:/usr/local/bin:/bin")
        if binary is None:
            raise MissingDependency("redis-server is not installed (scripts/bootstrap installs it)")
        private_dir(self.dir)
        argv = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "yes",
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
        ]  # fmt: skip
        old = os.umask(0o077)
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=timeout)
        except subprocess.CalledProcessError as e:
            raise ZfsBackendError(f"redis-server: {e.stderr.decode(errors='replace').strip()}") from None
        finally:
            os.umask(old)
        deadline = time.monotonic() + timeout
        while not self._answers():
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
