"""The zfs layer against a real zfs-fuse 0.7, in a private mount namespace.

The fixture starts its own zfs-fuse daemon inside ``unshare --mount`` with private tmpfs on
``/run``, ``/etc/zfs`` and ``/var/lib/zfs`` (so it never sees the lab's daemons or pools), creates a
throw-away pool on a sparse file, and reaches it with a Host that prefixes every argv with
``nsenter -t PID -m --``. Needs root, /dev/fuse, zfs-fuse, unshare and nsenter.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from polling import NotYet, eventually

from zfs_backend.errors import (
    DatasetExists,
    DatasetHasDependents,
    DatasetNotFound,
    UnsupportedFeature,
)
from zfs_backend.hosts.base import DEFAULT_TIMEOUT, CommandResult
from zfs_backend.hosts.local import LocalHost
from zfs_backend.zfs import RecvSpec, SendSpec, Zfs, probe
from zfs_backend.zfs.names import DatasetName

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.lab]

_BINS = ("zfs-fuse", "zfs", "zpool", "unshare", "nsenter")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount namespace, zfs-fuse)"
    if not Path("/dev/fuse").exists():
        return "needs /dev/fuse"
    for b in _BINS:
        if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"needs {b} (apt-get install zfs-fuse util-linux)"
    return None


_SKIP = _skip_reason()
if _SKIP:
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=_SKIP)]

# Runs inside `unshare --mount`: private /run, /etc/zfs, /var/lib/zfs, then zfs-fuse in the
# foreground (exec: the unshare'd pid IS the daemon, so nsenter -t PID lands in its namespace).
_DAEMON_SCRIPT = """
set -e
mount --make-rprivate /
mount -t tmpfs zt-run /run
mkdir -p /run/zfs /run/lock /etc/zfs /var/lib/zfs
mount -t tmpfs zt-etc /etc/zfs
mount -t tmpfs zt-var /var/lib/zfs
exec zfs-fuse --no-daemon --pidfile /run/zfs/zfs-fuse.pid
"""


class NsHost(LocalHost):
    """Runs argv inside the mount namespace of ``pid``."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="zt-ns")
        self._prefix = ["nsenter", "-t", str(pid), "-m", "--"]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> CommandResult:
        return super().run([*self._prefix, *argv], input=input, timeout=timeout, check=check)

    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        return [*self._prefix, *super().stream_argv(argv)]


@dataclass
class Env:
    host: NsHost
    zfs: Zfs
    pool: str
    mnt: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("zfslab")
    img = work / "pool.img"
    mnt = work / "mnt"
    mnt.mkdir()
    with img.open("wb") as f:
        f.truncate(512 << 20)
    daemon = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _DAEMON_SCRIPT],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    host = NsHost(daemon.pid)
    pool = "zt" + secrets.token_hex(3)
    try:

        def answers() -> None:
            if daemon.poll() is not None:
                err = daemon.stderr.read().decode() if daemon.stderr else ""
                pytest.fail(f"zfs-fuse exited {daemon.returncode}: {err}")
            if host.run(["zpool", "list"], check=False).returncode != 0:
                raise NotYet("zfs-fuse did not answer within 15 s")

        eventually(answers, 15, interval=0.2, retry=NotYet)
        host.run(["zpool", "create", "-f", "-m", str(mnt / pool), pool, str(img)])
        yield Env(host, Zfs(host), pool, mnt)
    finally:
        host.run(["zpool", "destroy", "-f", pool], check=False, timeout=60)
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        img.unlink(missing_ok=True)


def _write(env: Env, ds: DatasetName, fname: str, mib: int) -> None:
    mp = env.zfs.mountpoint(ds)
    assert mp is not None
    env.host.run(["dd", "if=/dev/urandom", f"of={mp}/{fname}", "bs=1M", f"count={mib}", "conv=fsync"])


def _pipe(env: Env, send: list[str], recv: list[str]) -> int:
    """Run send | recv through a relay that counts the bytes; return the stream size."""
    s = env.host.spawn(send, stdout=subprocess.PIPE)
    r = env.host.spawn(recv, stdin=subprocess.PIPE)
    assert s.stdout is not None and r.stdin is not None
    n = 0
    while chunk := s.stdout.read(1 << 20):
        n += len(chunk)
        r.stdin.write(chunk)
    r.stdin.close()
    s_rc, r_rc = s.wait(60), r.wait(60)
    s_err = s.stderr.read().decode() if s.stderr else ""
    r_err = r.stderr.read().decode() if r.stderr else ""
    assert (s_rc, r_rc) == (0, 0), f"send rc {s_rc}: {s_err} / recv rc {r_rc}: {r_err}"
    return n


def test_dialect_probe_says_zfs_fuse(env: Env) -> None:
    d = probe(env.host)
    assert d.name == "zfs-fuse"
    assert not any(
        (
            d.resumable_receive,
            d.send_estimate,
            d.zvols,
            d.written_property,
            d.holds,
            d.parsable_list,
            d.zpool_list_parsable,
        )
    )
    assert env.zfs.dialect == d


def test_pool_capacity(env: Env) -> None:
    cap = env.zfs.pool_capacity(env.pool)
    assert not cap.exact
    assert 400 << 20 < cap.size <= 512 << 20
    assert abs(cap.allocated + cap.free - cap.size) <= 0.02 * cap.size


def test_lifecycle_send_recv_rollback_clone(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    z = env.zfs
    root = DatasetName(env.pool)
    src, dst, cl = root.child("src"), root.child("dst"), root.child("clone")

    z.create(src, {"com.example:role": "source"})
    assert z.exists(src) and z.get(src, ["com.example:role"]) == {"com.example:role": "source"}
    with pytest.raises(DatasetExists):
        z.create(src)

    _write(env, src, "f1", 3)
    z.snapshot(src.snapshot("s1"))
    _write(env, src, "f2", 2)
    z.snapshot(src.snapshot("s2"))

    snaps = z.list_snapshots(src)
    assert [s.snap for s in snaps] == ["s1", "s2"]
    assert snaps[0].createtxg < snaps[1].createtxg
    assert snaps[0].guid != snaps[1].guid and all(s.guid > 0 for s in snaps)
    assert snaps[1].referenced > snaps[0].referenced >= 3 << 20
    (src_ds,) = [d for d in z.list_datasets(root) if d.name == src]
    assert src_ds.createtxg < snaps[0].createtxg and src_ds.mounted is True

    # estimates: no send -nvP here; the space heuristic vs the real stream size
    full, incr = SendSpec(snaps[0].name), SendSpec(snaps[1].name, incremental_from=snaps[0].name)
    assert z.estimate_send_size(full) is None
    est_full, est_incr = z.estimate_send_size_from_space(full), z.estimate_send_size_from_space(incr)

    n_full = _pipe(env, z.send_argv(full), z.recv_argv(RecvSpec(dst)))
    n_incr = _pipe(env, z.send_argv(incr), z.recv_argv(RecvSpec(dst)))
    assert 0.8 * n_full <= est_full <= 1.25 * n_full, (est_full, n_full)
    assert 0.8 * n_incr <= est_incr <= 1.25 * n_incr, (est_incr, n_incr)
    assert [s.guid for s in z.list_snapshots(dst)] == [s.guid for s in snaps]  # GUIDs survive send

    # destroy right after a receive: zfs-fuse may say "busy" for ~1 s; destroy retries
    with caplog.at_level(logging.INFO, logger="zfs_backend.zfs"):
        z.destroy(dst, recursive=True, deadline=15.0)
    assert not z.exists(dst)
    with pytest.raises(DatasetNotFound):
        z.destroy(dst)
    with pytest.raises(DatasetNotFound):
        z.list_snapshots(dst)

    # rollback: refused while a newer snapshot exists, then destroys it with destroy_newer
    _write(env, src, "f3", 1)
    z.snapshot(src.snapshot("s3"))
    with pytest.raises(DatasetHasDependents):
        z.rollback(src.snapshot("s2"))
    z.rollback(src.snapshot("s2"), destroy_newer=True)
    assert not z.exists(src.snapshot("s3"))
    assert [s.snap for s in z.list_snapshots(src)] == ["s1", "s2"]

    # clone, promote, and the dependents error
    # (a user property: zfs-fuse stores readonly=on but `get` shows the mount's "off, temporary")
    z.clone(src.snapshot("s2"), cl, {"com.example:role": "clone"})
    assert z.get(cl, ["origin", "com.example:role"]) == {"origin": f"{src}@s2", "com.example:role": "clone"}
    (cl_ds,) = [d for d in z.list_datasets(root) if d.name == cl]
    assert cl_ds.origin == src.snapshot("s2")
    with pytest.raises(DatasetHasDependents):
        z.destroy(src.snapshot("s2"))
    z.promote(cl)
    assert z.get(src, ["origin"])["origin"] == f"{cl}@s2"
    z.promote(src)
    z.destroy(cl)
    z.destroy(src, recursive=True, deadline=15.0)
    assert not z.exists(src)


def test_holds_unsupported(env: Env) -> None:
    z = env.zfs
    ds = DatasetName(env.pool).child("h")
    z.create(ds)
    z.snapshot(ds.snapshot("s"))
    with pytest.raises(UnsupportedFeature):
        z.holds(ds.snapshot("s"))
    z.destroy(ds, recursive=True, deadline=15.0)
