"""The controller's footprint: files named like the role's that appeared or changed on the controller."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# What the role writes on a node; none of it may appear on the controller.
ROLE_TOKENS = (
    "zfs-backend",
    "zfs_backend",
    "ganesha",
    "rpcbind",
    "sshd_config",
    "authorized_keys",
    "known_hosts",
    "id_ed25519",
    "zfs-lab",
    "wheelhouse",
    ".ansible",
    "supervisor.pid",
    "/tank",
)
SCAN_ROOTS = ("/etc", "/opt", "/root", "/srv", "/usr/local", "/var/lib", "/var/log", "/run", "/tank")
# Trees that are not the role's business (toolchains, caches, package manager state, other labs' homes).
SKIP = (
    "/root/.pyenv",
    "/root/.rustup",
    "/root/.cargo",
    "/root/.cache",
    "/root/.npm",
    "/root/.m2",
    "/root/.claude",
    "/root/.config",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/lib/docker",
    "/var/lib/zfs-backend-",  # other labs' homes (tests, other engineers)
    "/var/lib/zfs-backend/lab",  # the default lab's state (its nodes' upper dirs): not the role's
    "/etc/libvirt",  # the Vagrant tier's VMs (zfs-backend-vagrant_*) live here
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/log/libvirt",
)


# What marks a directory as another zfs-backend home (a controller's state: another test run's or another
# engineer's lab, wherever its --home put it). The default home is still scanned (beside its lab): a role
# task run on the controller by mistake would write its agent's state there.
HOME_MARKS = ("lab/nodes", "lab/ssh", "volumes.db", "flows.db")
DEFAULT_HOME = "/var/lib/zfs-backend"


def _other_home(path: str) -> bool:
    return path != DEFAULT_HOME and any(os.path.exists(os.path.join(path, mark)) for mark in HOME_MARKS)


def controller_changes(since: float, allowed: Path) -> list[str]:
    """Paths on the controller, outside ``allowed``, modified after ``since`` and named like the role's
    files (the machine is shared: unrelated changes by others are not the role's)."""
    found = []
    for root in SCAN_ROOTS:
        if not os.path.exists(root):
            continue
        dev = os.stat(root).st_dev
        for dirpath, dirnames, filenames in os.walk(root):
            keep = []
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if (
                    full.startswith(SKIP)
                    or full.startswith(str(allowed))
                    or os.path.ismount(full)
                    or _other_home(full)
                ):
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in [*filenames, *dirnames]:
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if (
                    st.st_dev == dev
                    and max(st.st_mtime, st.st_ctime) > since
                    and any(t in full for t in ROLE_TOKENS)
                ):
                    found.append(full)
    return found


def git_status() -> str:
    """Files in the checkout that git does not know and does not ignore (what a leak would add)."""
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "--others", "--exclude-standard"], capture_output=True, text=True
    )
    return res.stdout if res.returncode == 0 else "(not a git checkout)"
