"""``zfs_backend.private``: state directories created 0700 and files 0600 from the start, whatever the
umask; a directory that exists is never chmodded; a state file found wider is narrowed."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from zfs_backend.private import private_dir, private_file, private_open, private_sqlite


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077, 0o277], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_private_dir_creates_every_missing_parent_0700(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "a" / "b" / "c"
    assert private_dir(target) == [tmp_path / "a", tmp_path / "a" / "b", target]
    for d in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode(d) == 0o700, d
    assert private_dir(target) == []  # idempotent


def test_private_dir_never_chmods_an_existing_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert private_dir(shared / "ours") == [shared / "ours"]
    assert mode(shared) == 0o1777 and mode(shared / "ours") == 0o700
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "f")


def test_private_file_created_0600_and_narrowed(tmp_path: Path, umask: int) -> None:
    f = private_file(tmp_path / "home" / "state")
    assert mode(f) == 0o600 and mode(f.parent) == 0o700
    old = tmp_path / "old.log"
    old.write_text("kept")
    old.chmod(0o644)
    os.close(private_open(old, os.O_WRONLY | os.O_APPEND))
    assert mode(old) == 0o600 and old.read_text() == "kept"
    old.chmod(0o666)
    private_file(old)
    assert mode(old) == 0o600


def test_private_files_refuse_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("")
    target.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError):
        private_file(link)
    with pytest.raises(OSError):
        os.close(private_open(link))
    assert mode(target) == 0o644


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=lambda m: f"umask{m:03o}")
def test_sqlite_sidecars_private(tmp_path: Path, mask: int) -> None:
    # (a umask without owner read/write is left out: sqlite itself cannot create its files then)
    old = os.umask(mask)
    try:
        _sqlite_sidecars_private(tmp_path)
    finally:
        os.umask(old)


def _sqlite_sidecars_private(tmp_path: Path) -> None:
    db_path = private_sqlite(tmp_path / "db" / "x.db")
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    sidecars = [p for p in db_path.parent.iterdir() if p != db_path]
    assert {p.name for p in sidecars} >= {"x.db-wal", "x.db-shm"}
    assert all(mode(p) == 0o600 for p in [db_path, *sidecars])
    db.close()


def test_private_sqlite_narrows_existing_sidecars(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    for p in (db, tmp_path / "x.db-wal", tmp_path / "x.db-journal"):
        p.write_bytes(b"")
        p.chmod(0o644)
    private_sqlite(db)
    assert [mode(p) for p in sorted(tmp_path.iterdir())] == [0o600, 0o600, 0o600]
