"""The agent's files and directories: its log, lock and socket directory are created private (0700
directories, 0600 files) whatever the umask, and a directory that exists already is never chmodded."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.agent.daemon import _prepare_socket_path, _single_instance
from zfs_backend.agent.logs import setup_logging


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    log = logging.getLogger("zfs_backend")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.propagate = True


def test_log_created_private(tmp_path: Path, open_umask: None, restore_logging: None) -> None:
    path = tmp_path / "home" / "agent" / "agent.log"
    setup_logging(path, stderr=False).info("hello")
    assert mode(tmp_path / "home") == mode(path.parent) == 0o700
    assert mode(path) == 0o600 and "hello" in path.read_text()


def test_existing_log_narrowed_its_directory_untouched(tmp_path: Path, restore_logging: None) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    d.chmod(0o755)
    (d / "agent.log").write_text("")
    (d / "agent.log").chmod(0o644)
    setup_logging(d / "agent.log", stderr=False)
    assert mode(d) == 0o755 and mode(d / "agent.log") == 0o600


def test_socket_dir_created_private(tmp_path: Path, open_umask: None) -> None:
    sock = tmp_path / "run" / "zfs-backend" / "agent.sock"
    _prepare_socket_path(sock)
    assert mode(tmp_path / "run") == mode(sock.parent) == 0o700


@pytest.mark.parametrize("existing", [0o755, 0o711, 0o1777])
def test_existing_socket_dir_not_chmodded(tmp_path: Path, existing: int) -> None:
    d = tmp_path / "run"
    d.mkdir()
    d.chmod(existing)
    _prepare_socket_path(d / "agent.sock")
    assert mode(d) == existing


def test_lock_private_existing_dir_untouched(tmp_path: Path, open_umask: None) -> None:
    fd = _single_instance(tmp_path / "new" / "activities.db.lock")
    os.close(fd)
    assert mode(tmp_path / "new") == 0o700 and mode(tmp_path / "new" / "activities.db.lock") == 0o600
    d = tmp_path / "existing"
    d.mkdir()
    d.chmod(0o755)
    os.close(_single_instance(d / "activities.db.lock"))
    assert mode(d) == 0o755 and mode(d / "activities.db.lock") == 0o600
