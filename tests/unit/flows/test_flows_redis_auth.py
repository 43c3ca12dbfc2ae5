"""The jobboard's password: created private, read only from a file that is the caller's own and nobody
else's to read, refused with one line naming the file otherwise; never in the jobboard's URL."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError
from zfs_backend.flows.jobboard import _redis_conf
from zfs_backend.flows.redis_auth import ensure_password, read_password


def test_created_private_and_read_back(tmp_path: Path) -> None:
    f = tmp_path / "jobboard" / "password"
    pw = ensure_password(f)
    assert len(pw) >= 32 and pw.isalnum()
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f.parent).st_mode) == 0o700
    assert ensure_password(f) == pw == read_password(f)  # kept: clients keep working across restarts


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620])
def test_a_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "password"
    f.write_text("s3cretpassword0123456789abcdef\n")
    os.chmod(f, mode)
    with pytest.raises(ConfigError) as e:
        read_password(f)
    msg = str(e.value)
    assert str(f) in msg and "\n" not in msg and oct(mode)[2:] in msg


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "password"
    f.write_text("s3cretpassword0123456789abcdef\n")
    os.chmod(f, 0o600)
    os.chown(f, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534") as e:
        read_password(f)
    assert str(f) in str(e.value)


def test_missing_empty_symlink_and_odd_contents_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jobboard up"):
        read_password(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    with pytest.raises(ConfigError, match="empty"):
        read_password(empty)
    real = tmp_path / "real"
    real.write_text("s3cretpassword0123456789abcdef\n")
    os.chmod(real, 0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_password(link)
    odd = tmp_path / "odd"
    odd.write_text("two words\nrequirepass x\n")
    os.chmod(odd, 0o600)
    with pytest.raises(ConfigError, match="one word"):
        read_password(odd)


def test_the_password_file_setting(tmp_path: Path) -> None:
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path)})
    assert s.jobboard_password_file == tmp_path / "jobboard" / "password"
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path), "ZFS_BACKEND_JOBBOARD_PASSWORD_FILE": "/etc/zb/pw"})
    assert s.jobboard_password_file == Path("/etc/zb/pw")


def test_the_url_carries_no_password() -> None:
    assert _redis_conf("redis://127.0.0.1:6390/3", "pw")["password"] == "pw"
    with pytest.raises(ConfigError, match="password file"):
        _redis_conf("redis://:secret@127.0.0.1:6390/0", "pw")


def test_the_conductor_refuses_a_readable_password_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zfs_backend.cli.main import main

    f = tmp_path / "pw"
    f.write_text("s3cretpassword0123456789abcdef\n")
    os.chmod(f, 0o644)
    monkeypatch.setenv("ZFS_BACKEND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZFS_BACKEND_JOBBOARD", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ZFS_BACKEND_JOBBOARD_PASSWORD_FILE", str(f))
    rc = main(["conductor", "--max-jobs", "1"])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1 and str(f) in err and "Traceback" not in err, err
