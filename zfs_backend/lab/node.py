"""One lab node: its own root filesystem and hostname, and the daemons running in it.

A node is a network namespace (see ``netns``), a persistent UTS namespace (hostname = node name)
and a persistent mount namespace whose root is an overlay over the host's ``/`` with a per-node
upper directory, entered with ``pivot_root``. Its ``/dev`` is bound from the host (for
``/dev/fuse``); ``/proc``, ``/sys``, ``/run`` and ``/tmp`` are its own. The namespaces are kept alive by
bind mounts of their ``/proc/PID/ns`` files under the lab's ``ns/`` directory, so commands enter a node
with ``nsenter`` and land in its root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import MIN_CLAIM_LEASE_S
from ..errors import LabError
from ..private import private_dir, private_open
from .netns import netns_path
from .topology import LabLayout, NodeLayout

__all__ = [
    "NODE_POOL",
    "POOL_DIR",
    "enter_argv",
    "mount_ns_file",
    "node_pids",
    "pid_in_node",
    "remove_tree",
    "running",
    "setup_root",
    "start_daemon",
    "stop_pid",
    "stop_pids",
    "teardown_ns_files",
    "wait_for",
]

NODE_POOL = "tank"
POOL_DIR = "/var/lib/zfs-lab"  # inside the node: the pool's sparse backing file lives here
NODE_HOME = "/var/lib/zfs-backend"  # inside the node: its own agent state
#: the lab agents' claim lease (``$ZFS_BACKEND_CLAIM_LEASE_S``): the shortest allowed, so that a test of a
#: lapsed claim waits two minutes rather than the default five
NODE_CLAIM_LEASE_S = MIN_CLAIM_LEASE_S

# A constant script; every path reaches it as a positional parameter, never spliced into the text.
_SETUP_ROOT = r"""
set -eu
root=$1 upper=$2 work=$3 home=$4 name=$5 project=$6 hide=$7
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mkdir -p "$root/run/zfs" "$root/run/lock" "$root/run/sshd" "$root/run/zfs-backend" "$root/var/lib/zfs-backend"
chmod 0700 "$root/run/zfs-backend"
mount --bind "$home" "$root/var/lib/zfs-backend"
if [ "$hide" != /var/lib/zfs-backend ] && [ -d "$root$hide" ]; then
    mount -t tmpfs -o mode=0700 tmpfs "$root$hide"
fi
if [ -n "$project" ]; then
    mkdir -p "$root$project"
    mount --rbind "$project" "$root$project"
fi
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
hostname "$name"
"""


def mount_ns_file(layout: LabLayout, node: NodeLayout) -> Path:
    return layout.ns_dir / f"{node.name}.mnt"


def uts_ns_file(layout: LabLayout, node: NodeLayout) -> Path:
    return layout.ns_dir / f"{node.name}.uts"


def enter_argv(layout: LabLayout, node: NodeLayout, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``node`` (its network, mount/root and hostname)."""
    return [
        "nsenter",
        f"--net={netns_path(node.netns)}",
        f"--mount={mount_ns_file(layout, node)}",
        f"--uts={uts_ns_file(layout, node)}",
        "--",
        *argv,
    ]


def _is_mountpoint(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            target = str(path)
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def prepare_ns_dir(layout: LabLayout) -> None:
    """Make ``ns/`` a private bind mount, as persistent namespace files require."""
    private_dir(layout.ns_dir)
    if not _is_mountpoint(layout.ns_dir):
        subprocess.run(["mount", "--bind", str(layout.ns_dir), str(layout.ns_dir)], check=True)
        subprocess.run(["mount", "--make-private", str(layout.ns_dir)], check=True)


def ns_alive(layout: LabLayout, node: NodeLayout) -> bool:
    return _is_mountpoint(mount_ns_file(layout, node)) and _is_mountpoint(uts_ns_file(layout, node))


def setup_root(layout: LabLayout, node: NodeLayout, project_dir: str) -> None:
    """Create the node's persistent mount and UTS namespaces with its own root. Idempotent."""
    if ns_alive(layout, node):
        return
    prepare_ns_dir(layout)
    # The node's directory, its home (its /var/lib/zfs-backend), logs and overlay scratch are root's
    # alone; `upper` is the node's `/` and keeps a root directory's usual 0755.
    for d in (node.dir, node.work, node.root, node.home, node.logs):
        private_dir(d)
    node.upper.mkdir(mode=0o755, exist_ok=True)
    mnt, uts = mount_ns_file(layout, node), uts_ns_file(layout, node)
    for f in (mnt, uts):
        f.touch(mode=0o600, exist_ok=True)
    argv = [
        "nsenter",
        f"--net={netns_path(node.netns)}",
        "unshare",
        f"--mount={mnt}",
        f"--uts={uts}",
        "--propagation",
        "private",
        "sh",
        "-c",
        _SETUP_ROOT,
        "zfs-backend-lab-setup",
        str(node.root),
        str(node.upper),
        str(node.work),
        str(node.home),
        node.name,
        project_dir,
        str(layout.state_dir),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise LabError(f"{node.name}: could not build its root filesystem: {res.stderr.strip()}")


def teardown_ns_files(layout: LabLayout, node: NodeLayout) -> None:
    """Unmount the node's namespace files (every mount stacked on one: an interrupted ``lab up`` can
    leave two) and remove them; a file that stays busy is a ``LabError`` naming it, never a traceback."""
    for f in (mount_ns_file(layout, node), uts_ns_file(layout, node)):
        for _ in range(8):
            if not _is_mountpoint(f):
                break
            subprocess.run(["umount", "-l", str(f)], check=False, capture_output=True)
        try:
            f.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise LabError(
                f"{node.name}: cannot remove {f}: {e.strerror} (still mounted? see `findmnt {f}`)"
            ) from None


def _ns_inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pid_in_node(layout: LabLayout, node: NodeLayout, pid: int) -> bool:
    """True when ``pid`` is alive and lives in this node's mount namespace (not a reused pid)."""
    want = _ns_inode(mount_ns_file(layout, node))
    return want is not None and _ns_inode(f"/proc/{pid}/ns/mnt") == want and not exited(pid)


def running(pid: int) -> bool:
    """Alive and not a zombie. (Right after start the process may still be ``nsenter`` outside the node,
    so membership of the node is not yet a test of life: use this, not ``pid_in_node``, while starting.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def exited(pid: int) -> bool:
    """True once ``pid`` has fully exited: gone, or a zombie whose threads have all finished (a SIGKILLed
    multi-threaded daemon shows its leader as a zombie while other threads still hold its locks)."""
    if running(pid):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def node_pids(layout: LabLayout, node: NodeLayout) -> list[int]:
    """Every process in the node's mount or network namespace."""
    wants = {
        ("mnt", _ns_inode(mount_ns_file(layout, node))),
        ("net", _ns_inode(netns_path(node.netns))),
    }
    wants = {w for w in wants if w[1] is not None}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for kind, ino in wants:
            if _ns_inode(f"/proc/{entry}/ns/{kind}") == ino:
                found.append(int(entry))
                break
    return found


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL. Idempotent."""
    stop_pids([pid], timeout)


def stop_pids(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGTERM all of ``pids`` at once, wait up to ``timeout`` for them, then SIGKILL the rest."""
    live = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            live.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        for pid in list(live):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if exited(pid):
                live.remove(pid)
        if live:
            time.sleep(0.05)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_daemon(
    layout: LabLayout,
    node: NodeLayout,
    name: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
) -> int:
    """Start a long-running process inside the node, detached, logging to the node's log dir (0600)."""
    private_dir(node.logs)
    log = os.fdopen(private_open(node.logs / f"{name}.log", os.O_WRONLY | os.O_APPEND), "ab")
    try:
        proc = subprocess.Popen(
            enter_argv(layout, node, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    finally:
        log.close()
    return proc.pid


def run_in(
    layout: LabLayout, node: NodeLayout, argv: Sequence[str], timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        enter_argv(layout, node, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        raise LabError(f"{node.name}: `{' '.join(argv)}` failed: {res.stderr.strip() or res.stdout.strip()}")
    return res


def wait_for(what: str, probe: object, timeout: float = 15.0, interval: float = 0.1) -> None:
    """Poll ``probe()`` until it returns truthy or ``timeout`` passes (then LabError naming ``what``)."""
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval)
    raise LabError(f"{what} not ready after {timeout:g} s")


def tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def remove_tree(path: Path) -> None:
    """Remove a lab's directory tree without ever following a mount out of it: anything still mounted
    below it is unmounted first, deepest first."""
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(
            (line.split()[4] for line in f if line.split()[4].startswith(str(path) + "/")),
            key=len,
            reverse=True,
        )
    for m in mounts:
        subprocess.run(["umount", "-l", m], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
