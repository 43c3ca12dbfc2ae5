"""Bring the simulated lab up and down, report on it, and act on its nodes.

State (``lab.json``) records every process the lab started, by pid, so ``down`` stops exactly those;
``down`` also finds leftovers by namespace and by name, so it cleans up after a half-failed ``up``
or a crashed daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import LabError, MissingDependency, NotRoot, UnknownNode
from . import access, netns, nfs
from .node import (
    NODE_HOME,
    NODE_POOL,
    POOL_DIR,
    enter_argv,
    exited,
    node_pids,
    ns_alive,
    pid_in_node,
    run_in,
    setup_root,
    start_daemon,
    stop_pid,
    stop_pids,
    tcp_open,
    teardown_ns_files,
    wait_for,
)
from .topology import LabLayout, NodeLayout, index_of, plan_nodes

__all__ = ["SERVICES", "Lab", "NodeStatus"]

SERVICES = ("zfs-fuse", "sshd", "agent", *nfs.SERVICES)
SSHD_CONFIG = "/etc/ssh/zfs-backend/sshd_config"
NODE_INVENTORY = f"{NODE_HOME}/inventory.yml"  # inside a node: its view of its peers
HOST_KEY = "/etc/ssh/zfs-backend/ssh_host_ed25519_key"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class NodeStatus:
    name: str
    address: str
    link_up: bool
    services: dict[str, bool]
    pool_size: int | None = None
    pool_used: int | None = None
    shaped_bps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "link_up": self.link_up,
            "services": self.services,
            "pool": {"name": NODE_POOL, "size": self.pool_size, "used": self.pool_used},
            "shaped_bps": self.shaped_bps,
        }


@dataclass
class LabState:
    network: str
    pool_size: int
    project_dir: str
    zfs_backend_bin: str
    nodes: list[str]
    agents: bool = True
    pids: dict[str, dict[str, int]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise LabError(f"lab state {path} is unreadable ({e}); run `zfs-backend lab down`") from e

    def save(self, path: Path) -> None:
        access.write_private(path, json.dumps(self.__dict__, indent=2) + "\n", 0o600)


def _parse_human(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
    text = text.strip()
    if text and text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(float(text))


def _running(pid: int) -> bool:
    """Alive and not a zombie. (Right after start the process may still be ``nsenter`` outside the node,
    so membership of the node is not yet a test of life.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _log_tail(node: NodeLayout, service: str) -> str:
    """The last lines of a daemon's log, on one line (the lab dir is removed after a failed up)."""
    try:
        lines = (node.logs / f"{service}.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-3:]) or "(empty log)"


def _project_dir() -> str:
    """The directory nodes must see to run this installation's ``zfs-backend`` (bound into each node)."""
    pkg_root = Path(__file__).resolve().parents[2]
    prefix = Path(sys.prefix).resolve()
    return str(pkg_root) if prefix.is_relative_to(pkg_root) else str(prefix)


def _zfs_backend_bin() -> str:
    candidate = Path(sys.prefix) / "bin" / "zfs-backend"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("zfs-backend")
    return found or str(candidate)


class Lab:
    """The lab under ``settings.lab_dir``."""

    def __init__(self, settings: Settings, network: str | None = None) -> None:
        self.settings = settings
        state = LabState.load(settings.lab_dir / "lab.json")
        net = network or (state.network if state else settings.lab_network)
        self.layout = LabLayout.for_dir(settings.lab_dir, net)

    # ---- queries -------------------------------------------------------------------------------

    @property
    def state(self) -> LabState | None:
        return LabState.load(self.layout.state_file)

    def is_up(self) -> bool:
        return self.state is not None

    def nodes(self) -> list[NodeLayout]:
        st = self.state
        if st is None:
            return []
        return [self.layout.node(index_of(n)) for n in st.nodes]

    def node(self, name: str) -> NodeLayout:
        st = self.state
        if st is None:
            raise LabError("the lab is not up: run `zfs-backend lab up`")
        if name not in st.nodes:
            raise UnknownNode(f"unknown node {name!r}; the lab has: {', '.join(st.nodes)}")
        return self.layout.node(index_of(name))

    def status(self) -> list[NodeStatus]:
        st = self.state
        if st is None:
            return []
        out = []
        for node in self.nodes():
            services = {s: bool(st.pids.get(node.name, {}).get(s)) for s in SERVICES}
            for s, pid in st.pids.get(node.name, {}).items():
                services[s] = pid_in_node(self.layout, node, pid)
            ns = NodeStatus(node.name, node.address, netns.link_is_up(node), services)
            if services.get("zfs-fuse"):
                res = run_in(
                    self.layout, node, ["zpool", "list", "-H", "-o", "size,alloc", NODE_POOL], check=False
                )
                if res.returncode == 0 and res.stdout.split():
                    size, alloc = res.stdout.split()[:2]
                    ns.pool_size, ns.pool_used = _parse_human(size), _parse_human(alloc)
            ns.shaped_bps = netns.shaped_rate(node)
            out.append(ns)
        return out

    # ---- up ------------------------------------------------------------------------------------

    @staticmethod
    def preflight() -> None:
        if os.geteuid() != 0:
            raise NotRoot("the lab needs root (namespaces, mounts, bridges): run as root")
        if not Path("/dev/fuse").exists():
            raise MissingDependency("/dev/fuse is missing: zfs-fuse needs FUSE")
        for binary, pkg in (
            ("zfs-fuse", "zfs-fuse"),
            ("zpool", "zfs-fuse"),
            ("sshd", "openssh-server"),
            ("ssh", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
            ("nsenter", "util-linux"),
            ("unshare", "util-linux"),
        ):
            if shutil.which(binary, path=_PATH) is None:
                raise MissingDependency(f"{binary} not found: install the Debian package {pkg}")

    def up(
        self,
        nodes: int = 2,
        pool_size: int = 1 << 30,
        on_step: Callable[[str], None] | None = None,
        with_agent: bool = True,
    ) -> bool:
        """Bring the lab up. Returns False (and changes nothing) when it is already running."""
        say = on_step or (lambda _msg: None)
        self.preflight()
        st = self.state
        if st is not None:
            if len(st.nodes) != nodes:
                raise LabError(
                    f"the lab is already up with {len(st.nodes)} nodes; run `zfs-backend lab down` "
                    f"before asking for {nodes}"
                )
            self.repair(on_step=say)
            return False
        netns.check_range_free(self.layout)
        plan = plan_nodes(self.layout, nodes)
        self.layout.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.layout.state_dir, 0o700)
        st = LabState(
            network=str(self.layout.network),
            pool_size=pool_size,
            project_dir=_project_dir(),
            zfs_backend_bin=_zfs_backend_bin(),
            nodes=[n.name for n in plan],
            agents=with_agent,
        )
        st.save(self.layout.state_file)
        try:
            say(f"network {self.layout.network} on bridge {self.layout.bridge}")
            netns.create_bridge(self.layout)
            self._write_access(plan, st)
            self._parallel(plan, lambda n: self._bring_up_node(n, st, say, with_agent))
            access.write_inventory(
                self.layout.inventory,
                plan,
                key=self.layout.client_key,
                known_hosts=self.layout.known_hosts,
                zfs_backend_bin=st.zfs_backend_bin,
                ssh_config=self.layout.ssh_config,
            )
        except BaseException:
            say("bring-up failed; cleaning up")
            self.down()
            raise
        return True

    def _parallel(self, plan: Sequence[NodeLayout], fn: Callable[[NodeLayout], None]) -> None:
        errors: list[BaseException] = []

        def run(n: NodeLayout) -> None:
            try:
                fn(n)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(n,), name=f"lab-{n.name}") for n in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _write_access(self, plan: list[NodeLayout], st: LabState) -> None:
        """Keys, known_hosts and configs for the controller and for every node (node-to-node SSH)."""
        lay = self.layout
        lay.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        access.ensure_keypair(lay.client_key, "zfs-backend-controller")
        keys: dict[str, access.NodeKeys] = {}
        for n in plan:
            keydir = n.dir / "keys"
            keys[n.name] = access.NodeKeys(
                host_key=access.ensure_keypair(keydir / "ssh_host_ed25519_key", f"{n.name}-host"),
                client_key=access.ensure_keypair(keydir / "id_ed25519", f"root@{n.name}"),
            )
        known = access.known_hosts_text(plan, keys)
        access.write_private(lay.known_hosts, known, 0o644)
        access.write_private(lay.ssh_config, access.ssh_client_config(plan, lay.client_key, lay.known_hosts))
        ctrl_pub = " ".join(Path(f"{lay.client_key}.pub").read_text().split()[0:2])
        authorized = ctrl_pub + " zfs-backend-controller\n"
        authorized += "".join(f"{keys[n.name].client_pub_line()} root@{n.name}\n" for n in plan)
        try:
            base_hosts = Path("/etc/hosts").read_text()
        except OSError:
            base_hosts = "127.0.0.1 localhost\n"
        lab_hosts = "".join(f"{n.address} {n.name}\n" for n in plan)
        for n in plan:
            up = n.upper
            (up / "root").mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(up / "root", 0o700)
            ssh = up / "root" / ".ssh"
            ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
            k = keys[n.name]
            access.write_private(ssh / "authorized_keys", authorized)
            access.write_private(ssh / "id_ed25519", k.client_key.read_text())
            access.write_private(ssh / "id_ed25519.pub", Path(f"{k.client_key}.pub").read_text(), 0o644)
            access.write_private(ssh / "known_hosts", known, 0o644)
            access.write_private(
                ssh / "config",
                access.ssh_client_config(plan, Path("/root/.ssh/id_ed25519"), Path("/root/.ssh/known_hosts")),
            )
            etc_ssh = up / "etc" / "ssh" / "zfs-backend"
            access.write_private(etc_ssh / "ssh_host_ed25519_key", k.host_key.read_text())
            access.write_private(
                etc_ssh / "ssh_host_ed25519_key.pub", Path(f"{k.host_key}.pub").read_text(), 0o644
            )
            access.write_private(etc_ssh / "sshd_config", access.sshd_config(n, HOST_KEY), 0o644)
            access.write_private(up / "etc" / "hosts", base_hosts.rstrip("\n") + "\n" + lab_hosts, 0o644)
            access.write_private(up / "etc" / "hostname", n.name + "\n", 0o644)
            # Plain shell start-up files: the host's (pyenv hooks, prompts…) would run on every SSH
            # command and stall when an SSH session is killed mid-login (a cancel, a link cut).
            for rc in (".bashrc", ".profile"):
                access.write_private(up / "root" / rc, "# lab node: nothing to set up\n", 0o644)
            # The node's own inventory (its agent reaches peers by name), in its private home
            access.write_inventory(
                n.home / "inventory.yml",
                plan,
                key=Path("/root/.ssh/id_ed25519"),
                known_hosts=Path("/root/.ssh/known_hosts"),
                zfs_backend_bin=st.zfs_backend_bin,
            )

    def _bring_up_node(
        self, node: NodeLayout, st: LabState, say: Callable[[str], None], with_agent: bool
    ) -> None:
        netns.create_node_link(self.layout, node)
        setup_root(self.layout, node, st.project_dir)
        self._start_services(node, st, with_agent)
        say(f"{node.name} up at {node.address}: zfs-fuse, pool {NODE_POOL}, sshd" + (", agent" * with_agent))

    def _record_pid(self, node: NodeLayout, service: str, pid: int) -> None:
        with _STATE_LOCK:
            st = self.state
            assert st is not None
            st.pids.setdefault(node.name, {})[service] = pid
            st.save(self.layout.state_file)

    def _alive(self, node: NodeLayout, service: str) -> bool:
        st = self.state
        pid = st.pids.get(node.name, {}).get(service) if st else None
        return bool(pid) and pid_in_node(self.layout, node, pid)  # type: ignore[arg-type]

    def _start_services(self, node: NodeLayout, st: LabState, with_agent: bool) -> None:
        lay = self.layout
        env = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        if not self._alive(node, "zfs-fuse"):
            self._clear_stale_fuse(node)
            pid = start_daemon(
                lay, node, "zfs-fuse", ["zfs-fuse", "--no-daemon", "--pidfile", "/run/zfs/zfs-fuse.pid"], env
            )
            self._record_pid(node, "zfs-fuse", pid)
            wait_for(
                f"{node.name}: zfs-fuse",
                lambda: (
                    run_in(lay, node, ["zpool", "list", "-H"], check=False).returncode == 0
                    or not _running(pid)
                ),
            )
            if not _running(pid):
                raise LabError(f"{node.name}: zfs-fuse exited at start: {_log_tail(node, 'zfs-fuse')}")
            if self._alive(node, nfs.GANESHA_SERVICE):  # its handles on the old FUSE mounts are stale
                self.stop_service(node.name, nfs.GANESHA_SERVICE)
        self._ensure_pool(node, st)
        self._start_nfs(node, env)
        if not self._alive(node, "sshd"):
            pid = start_daemon(lay, node, "sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG], env)
            self._record_pid(node, "sshd", pid)
            wait_for(f"{node.name}: sshd", lambda: tcp_open(node.address, 22) or not _running(pid))
            if not _running(pid):
                raise LabError(f"{node.name}: sshd exited at start: {_log_tail(node, 'sshd')}")
        if with_agent and not self._alive(node, "agent"):
            agent_env = dict(env, ZFS_BACKEND_HOME=NODE_HOME, ZFS_BACKEND_INVENTORY=NODE_INVENTORY)
            # A killed agent leaves its socket file behind: readiness below must see the new one.
            run_in(lay, node, ["rm", "-f", "/run/zfs-backend/agent.sock"], check=False)
            pid = start_daemon(lay, node, "agent", [st.zfs_backend_bin, "agent"], agent_env)
            self._record_pid(node, "agent", pid)
            wait_for(
                f"{node.name}: agent",
                lambda: (
                    run_in(lay, node, ["test", "-S", "/run/zfs-backend/agent.sock"], check=False).returncode
                    == 0
                    or not _running(pid)
                ),
            )
            if not _running(pid):
                raise LabError(f"{node.name}: the agent exited at start: {_log_tail(node, 'agent')}")

    def _start_nfs(self, node: NodeLayout, env: dict[str, str]) -> None:
        """rpcbind and nfs-ganesha with explicit ports (see ``lab/nfs.py``), when they are installed."""
        if not nfs.ganesha_available():
            return
        lay = self.layout
        run_in(lay, node, nfs.prepare_argv())
        daemons = [(nfs.GANESHA_SERVICE, nfs.ganesha_argv(), nfs.PORTS.nfs)]
        if nfs.rpcbind_available():
            daemons.insert(0, (nfs.RPCBIND_SERVICE, nfs.rpcbind_argv(), nfs.PORTS.rpcbind))
        for service, argv, port in daemons:
            if self._alive(node, service):
                continue
            pid = start_daemon(lay, node, service, argv, env)
            self._record_pid(node, service, pid)
            wait_for(
                f"{node.name}: {service}", lambda p=port, i=pid: tcp_open(node.address, p) or not _running(i)
            )
            if not _running(pid):
                raise LabError(f"{node.name}: {service} exited at start: {_log_tail(node, service)}")

    def _clear_stale_fuse(self, node: NodeLayout) -> None:
        """After zfs-fuse died, its FUSE mounts stay behind ("transport endpoint is not connected") and a new
        daemon exits when it meets them: detach them, deepest first, and drop its stale socket."""
        lay = self.layout
        mounts = run_in(lay, node, ["cat", "/proc/mounts"], check=False).stdout.splitlines()
        stale = [m.split()[1] for m in mounts if len(m.split()) > 2 and m.split()[2].startswith("fuse")]
        for mp in sorted(stale, key=len, reverse=True):
            run_in(lay, node, ["umount", "-l", mp], check=False)
        run_in(lay, node, ["rm", "-f", "/run/zfs/zfs-fuse.pid", "/run/zfs/zfs_socket"], check=False)

    def _ensure_pool(self, node: NodeLayout, st: LabState) -> None:
        lay = self.layout
        if run_in(lay, node, ["zpool", "list", "-H", NODE_POOL], check=False).returncode == 0:
            return
        img = f"{POOL_DIR}/{NODE_POOL}.img"
        if run_in(lay, node, ["test", "-f", img], check=False).returncode == 0:
            run_in(lay, node, ["zpool", "import", "-d", POOL_DIR, NODE_POOL])
            return
        run_in(lay, node, ["mkdir", "-p", POOL_DIR])
        run_in(lay, node, ["truncate", "-s", str(st.pool_size), img])
        run_in(lay, node, ["zpool", "create", "-f", "-m", f"/{NODE_POOL}", NODE_POOL, img])

    def repair(self, on_step: Callable[[str], None] | None = None) -> list[str]:
        """Restart any dead daemon of a running lab (its pool is re-imported). Returns what was restarted."""
        st = self.state
        if st is None:
            raise LabError("the lab is not up: run `zfs-backend lab up`")
        restarted = []
        with_agent = st.agents
        for node in self.nodes():
            if not ns_alive(self.layout, node):
                raise LabError(f"{node.name}: its namespaces are gone; run `zfs-backend lab down` then `up`")
            dead = [
                s
                for s in SERVICES
                if (s != "agent" or with_agent)
                and (s not in nfs.SERVICES or nfs.ganesha_available())
                and (s != nfs.RPCBIND_SERVICE or nfs.rpcbind_available())
                and not self._alive(node, s)
            ]
            if dead:
                self._start_services(node, st, with_agent)
                restarted += [f"{node.name}:{s}" for s in dead]
                if on_step:
                    on_step(f"{node.name}: restarted {', '.join(dead)}")
        return restarted

    def restart_service(self, name: str, service: str, hard: bool = False) -> None:
        """Stop (SIGKILL when ``hard``) and start one daemon of a node: a node-level fault for tests."""
        if service not in SERVICES:
            raise LabError(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
        node = self.node(name)
        self.stop_service(name, service, hard=hard)
        st = self.state
        assert st is not None
        self._start_services(node, st, with_agent=st.agents)

    def stop_service(self, name: str, service: str, hard: bool = False) -> None:
        node = self.node(name)
        st = self.state
        assert st is not None
        pid = st.pids.get(name, {}).get(service)
        if pid and pid_in_node(self.layout, node, pid):
            if hard:
                os.kill(pid, 9)
                wait_for(f"{name}: {service} exit", lambda: exited(pid), 10)
            else:
                stop_pid(pid)

    # ---- actions on nodes -------------------------------------------------------------------------

    def exec_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        if not argv:
            raise LabError("nothing to run: give a command after --")
        return enter_argv(self.layout, self.node(name), argv)

    def shape(self, name: str, rate_bps: int | None) -> None:
        node = self.node(name)
        if rate_bps is None:
            netns.unshape(node)
        else:
            netns.shape(node, rate_bps)

    def link(self, name: str, up: bool) -> None:
        netns.set_link(self.node(name), up)

    # ---- down ----------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every process, remove namespaces, mounts, links and files. Idempotent."""
        lay = self.layout
        done: list[str] = []
        st = self.state
        names = set(st.nodes) if st else set()
        if lay.ns_dir.exists():
            names |= {p.stem for p in lay.ns_dir.iterdir() if p.suffix in (".mnt", ".uts")}
        names |= {n.removeprefix(lay.netns_prefix()) for n in netns.list_lab_netns(lay)}
        nodes = [lay.node(index_of(n)) for n in sorted(names) if n.startswith("node")]
        # 1. the daemons we started, by pid: agents and sshd first, then zfs-fuse (it takes ~3 s to
        #    unmount and exit), every node at once
        if st:
            for services in (("agent", "sshd", nfs.GANESHA_SERVICE), (nfs.RPCBIND_SERVICE, "zfs-fuse")):
                batch = []
                for node in nodes:
                    for service in services:
                        pid = st.pids.get(node.name, {}).get(service)
                        if pid and pid_in_node(lay, node, pid):
                            batch.append(pid)
                            done.append(f"stopped {node.name}:{service} (pid {pid})")
                stop_pids(batch, timeout=10.0)
        # 2. anything else still inside a node (sessions, stray commands)
        strays = [pid for node in nodes for pid in node_pids(lay, node)]
        stop_pids(strays, timeout=3.0)
        done += [f"stopped stray pid {pid}" for pid in strays]
        # 3. namespaces and mounts
        for node in nodes:
            teardown_ns_files(lay, node)
        if lay.ns_dir.exists():
            subprocess.run(["umount", "-l", str(lay.ns_dir)], check=False, capture_output=True)
        netns.delete_lab_network(lay)
        # 4. files
        if lay.state_dir.exists():
            self._remove_tree(lay.state_dir)
            done.append(f"removed {lay.state_dir}")
        return done

    @staticmethod
    def _remove_tree(path: Path) -> None:
        # Never follow a mount out of the lab dir: anything still mounted below it is unmounted first.
        with open("/proc/self/mountinfo") as f:
            mounts = sorted(
                (line.split()[4] for line in f if line.split()[4].startswith(str(path) + "/")),
                key=len,
                reverse=True,
            )
        for m in mounts:
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


_STATE_LOCK = threading.Lock()
