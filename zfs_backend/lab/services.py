"""A lab node's daemons: zfs-fuse (and its pool), rpcbind and nfs-ganesha, sshd and the node agent.

Each is started inside the node (``node.start_daemon``), its pid recorded in the lab state at once,
and waited for until it answers (its socket, its port, ``zpool list``); a daemon that dies at start
is reported with the tail of its log.
"""

from __future__ import annotations

import os

from ..errors import LabError
from . import nfs
from .node import (
    NODE_CLAIM_LEASE_S,
    NODE_HOME,
    NODE_POOL,
    POOL_DIR,
    exited,
    pid_in_node,
    run_in,
    running,
    start_daemon,
    stop_pid,
    tcp_open,
    wait_for,
)
from .state import LabState, record_pid
from .topology import LabLayout, NodeLayout

__all__ = ["HOST_KEY", "SERVICES", "alive", "log_tail", "start_services", "start_sshd", "stop_service"]

SERVICES = ("zfs-fuse", "sshd", "agent", *nfs.SERVICES)
SSHD_CONFIG = "/etc/ssh/zfs-backend/sshd_config"
NODE_INVENTORY = f"{NODE_HOME}/inventory.yml"  # inside a node: its view of its peers
HOST_KEY = "/etc/ssh/zfs-backend/ssh_host_ed25519_key"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log_tail(node: NodeLayout, service: str) -> str:
    """The last lines of a daemon's log, on one line (the lab dir is removed after a failed up)."""
    try:
        lines = (node.logs / f"{service}.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-3:]) or "(empty log)"


def alive(lay: LabLayout, node: NodeLayout, service: str) -> bool:
    """The recorded pid of ``service`` is alive inside the node."""
    st = LabState.load(lay.state_file)
    pid = st.pids.get(node.name, {}).get(service) if st else None
    return bool(pid) and pid_in_node(lay, node, pid)  # type: ignore[arg-type]


def stop_service(lay: LabLayout, node: NodeLayout, service: str, hard: bool = False) -> None:
    """SIGTERM (SIGKILL when ``hard``) the node's ``service`` and wait until it has fully exited."""
    st = LabState.load(lay.state_file)
    pid = st.pids.get(node.name, {}).get(service) if st else None
    if pid and pid_in_node(lay, node, pid):
        if hard:
            os.kill(pid, 9)
            wait_for(f"{node.name}: {service} exit", lambda: exited(pid), 10)
        else:
            stop_pid(pid)


def start_services(lay: LabLayout, node: NodeLayout, st: LabState, with_agent: bool) -> None:
    """Start whatever of the node's daemons is not running (zfs-fuse and its pool, NFS, sshd, agent)."""
    env = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    if not alive(lay, node, "zfs-fuse"):
        _clear_stale_fuse(lay, node)
        pid = start_daemon(
            lay, node, "zfs-fuse", ["zfs-fuse", "--no-daemon", "--pidfile", "/run/zfs/zfs-fuse.pid"], env
        )
        record_pid(lay.state_file, node.name, "zfs-fuse", pid)
        wait_for(
            f"{node.name}: zfs-fuse",
            lambda: (
                run_in(lay, node, ["zpool", "list", "-H"], check=False).returncode == 0 or not running(pid)
            ),
        )
        if not running(pid):
            raise LabError(f"{node.name}: zfs-fuse exited at start: {log_tail(node, 'zfs-fuse')}")
        if alive(lay, node, nfs.GANESHA_SERVICE):  # its handles on the old FUSE mounts are stale
            stop_service(lay, node, nfs.GANESHA_SERVICE)
    _ensure_pool(lay, node, st)
    _start_nfs(lay, node, env)
    start_sshd(lay, node)
    if with_agent and not alive(lay, node, "agent"):
        # replicas from peers live under the pool (tank/r…, tank/volumes/volume-…), as the role's default
        agent_env = dict(
            env,
            ZFS_BACKEND_HOME=NODE_HOME,
            ZFS_BACKEND_INVENTORY=NODE_INVENTORY,
            ZFS_BACKEND_REPLICA_ROOTS=NODE_POOL,
            ZFS_BACKEND_CLAIM_LEASE_S=str(NODE_CLAIM_LEASE_S),
        )
        # A killed agent leaves its socket file behind: readiness below must see the new one.
        run_in(lay, node, ["rm", "-f", "/run/zfs-backend/agent.sock"], check=False)
        argv = [st.zfs_backend_bin, "agent", *(["--test-kinds"] if st.test_kinds else [])]
        pid = start_daemon(lay, node, "agent", argv, agent_env)
        record_pid(lay.state_file, node.name, "agent", pid)
        wait_for(
            f"{node.name}: agent",
            lambda: (
                run_in(lay, node, ["test", "-S", "/run/zfs-backend/agent.sock"], check=False).returncode == 0
                or not running(pid)
            ),
        )
        if not running(pid):
            raise LabError(f"{node.name}: the agent exited at start: {log_tail(node, 'agent')}")


def start_sshd(lay: LabLayout, node: NodeLayout) -> None:
    """The node's OpenSSH server (all a bare node runs besides its network and root filesystem)."""
    if alive(lay, node, "sshd"):
        return
    env = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    pid = start_daemon(lay, node, "sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG], env)
    record_pid(lay.state_file, node.name, "sshd", pid)
    wait_for(f"{node.name}: sshd", lambda: tcp_open(node.address, 22) or not running(pid))
    if not running(pid):
        raise LabError(f"{node.name}: sshd exited at start: {log_tail(node, 'sshd')}")


def _start_nfs(lay: LabLayout, node: NodeLayout, env: dict[str, str]) -> None:
    """rpcbind and nfs-ganesha with explicit ports (see ``lab/nfs.py``), when they are installed."""
    if not nfs.ganesha_available():
        return
    run_in(lay, node, nfs.prepare_argv())
    daemons = [(nfs.GANESHA_SERVICE, nfs.ganesha_argv(), nfs.PORTS.nfs)]
    if nfs.rpcbind_available():
        daemons.insert(0, (nfs.RPCBIND_SERVICE, nfs.rpcbind_argv(), nfs.PORTS.rpcbind))
    for service, argv, port in daemons:
        if alive(lay, node, service):
            continue
        pid = start_daemon(lay, node, service, argv, env)
        record_pid(lay.state_file, node.name, service, pid)
        wait_for(f"{node.name}: {service}", lambda p=port, i=pid: tcp_open(node.address, p) or not running(i))
        if not running(pid):
            raise LabError(f"{node.name}: {service} exited at start: {log_tail(node, service)}")


def _clear_stale_fuse(lay: LabLayout, node: NodeLayout) -> None:
    """After zfs-fuse died, its FUSE mounts stay behind ("transport endpoint is not connected") and a new
    daemon exits when it meets them: detach them, deepest first, and drop its stale socket."""
    mounts = run_in(lay, node, ["cat", "/proc/mounts"], check=False).stdout.splitlines()
    stale = [m.split()[1] for m in mounts if len(m.split()) > 2 and m.split()[2].startswith("fuse")]
    for mp in sorted(stale, key=len, reverse=True):
        run_in(lay, node, ["umount", "-l", mp], check=False)
    run_in(lay, node, ["rm", "-f", "/run/zfs/zfs-fuse.pid", "/run/zfs/zfs_socket"], check=False)


def _ensure_pool(lay: LabLayout, node: NodeLayout, st: LabState) -> None:
    if run_in(lay, node, ["zpool", "list", "-H", NODE_POOL], check=False).returncode == 0:
        return
    img = f"{POOL_DIR}/{NODE_POOL}.img"
    if run_in(lay, node, ["test", "-f", img], check=False).returncode == 0:
        run_in(lay, node, ["zpool", "import", "-d", POOL_DIR, NODE_POOL])
        return
    run_in(lay, node, ["mkdir", "-p", "-m", "0700", POOL_DIR])
    run_in(lay, node, ["truncate", "-s", str(st.pool_size), img])
    run_in(lay, node, ["zpool", "create", "-f", "-m", f"/{NODE_POOL}", NODE_POOL, img])
