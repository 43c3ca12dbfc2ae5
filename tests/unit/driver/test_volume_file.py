"""The driver's root operations on a ``volume`` file (``zfs-backend volume-file``) on real files: a
regular file is sized and given its owner and mode; a symbolic link, FIFO, directory or device a
client planted under that name is refused and neither it nor what it points at is touched."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from zfs_backend.driver.errors import UnsafeVolumeFile
from zfs_backend.driver.volume_file import main, set_access, truncate

ROOT = os.geteuid() == 0


@pytest.fixture
def volume_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tank" / "volumes" / "volume-a"
    d.mkdir(parents=True)
    return d


def test_truncate_creates_then_resizes_a_sparse_file(volume_dir: Path) -> None:
    assert truncate(str(volume_dir), 1 << 20) == {"size": 1 << 20, "created": True}
    f = volume_dir / "volume"
    assert f.stat().st_size == 1 << 20 and f.stat().st_blocks * 512 < 1 << 20
    assert truncate(str(volume_dir), 2 << 20) == {"size": 2 << 20, "created": False}
    assert f.stat().st_size == 2 << 20


@pytest.mark.skipif(not ROOT, reason="chown needs root")
def test_access_sets_owner_and_mode_only_when_different(volume_dir: Path) -> None:
    truncate(str(volume_dir), 4096)
    assert set_access(str(volume_dir), 65534, 65534, 0o660) == {"changed": ["owner", "mode"]}
    st = (volume_dir / "volume").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o660)
    assert set_access(str(volume_dir), 65534, 65534, 0o660) == {"changed": []}
    assert set_access(str(volume_dir), 65534, 65534, 0o666) == {"changed": ["mode"]}


def planted(volume_dir: Path, kind: str, target: Path) -> None:
    v = volume_dir / "volume"
    if kind == "symlink":
        v.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(v)
    elif kind == "directory":
        v.mkdir()
    elif kind == "device":
        os.mknod(v, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "device"])
def test_anything_but_a_regular_file_is_refused_and_untouched(
    volume_dir: Path, tmp_path: Path, kind: str
) -> None:
    if kind == "device" and not ROOT:
        pytest.skip("mknod needs root")
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0:root:/root:/bin/bash\n")
    target.chmod(0o644)
    planted(volume_dir, kind, target)
    before = os.lstat(volume_dir / "volume")
    for op in (
        lambda: truncate(str(volume_dir), 1 << 30),
        lambda: set_access(str(volume_dir), 4242, 4242, 0o666),
    ):
        with pytest.raises(UnsafeVolumeFile, match=r"refusing to touch .*/volume: it is a") as e:
            op()
        assert "\n" not in str(e.value)
    after = os.lstat(volume_dir / "volume")
    assert (after.st_mode, after.st_uid, after.st_size, after.st_ino) == (
        before.st_mode,
        before.st_uid,
        before.st_size,
        before.st_ino,
    )
    t = target.stat()
    assert target.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert (stat.S_IMODE(t.st_mode), t.st_uid) == (0o644, os.geteuid())


def test_a_symlinked_volume_directory_is_refused(tmp_path: Path, volume_dir: Path) -> None:
    link = tmp_path / "tank" / "volumes" / "volume-b"
    link.symlink_to(volume_dir)
    with pytest.raises(UnsafeVolumeFile, match="cannot open the volume directory"):
        truncate(str(link), 4096)
    assert not (volume_dir / "volume").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["chmod", "/x"],
        ["truncate", "/x"],
        ["truncate", "relative", "1"],
        ["truncate", "/x/../etc", "1"],
        ["truncate", "/x", "-1"],
        ["truncate", "/x", "1e3"],
        ["access", "/x", "0", "0", "999"],
        ["access", "/x", "-1", "0", "660"],
    ],
)
def test_bad_arguments_are_one_line_errors(argv: list[str]) -> None:
    out = io.StringIO()
    assert main(argv, out) == 2
    answer = json.loads(out.getvalue())
    assert answer["type"] == "UsageError" and "\n" not in answer["error"]


def test_the_command_answers_json(volume_dir: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["truncate", str(volume_dir), "8192"], out) == 0
    assert json.loads(out.getvalue()) == {"size": 8192, "created": True}
    os.unlink(volume_dir / "volume")
    (tmp_path / "target").write_text("keep")
    os.symlink(tmp_path / "target", volume_dir / "volume")
    out = io.StringIO()
    assert main(["truncate", str(volume_dir), "0"], out) == 1
    assert json.loads(out.getvalue())["type"] == "UnsafeVolumeFile"
    assert (tmp_path / "target").read_text() == "keep"
