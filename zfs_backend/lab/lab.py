"""Bring the simulated lab up and down, report on it, and act on its nodes.

State (``lab.json``) records every process the lab started, by pid, so ``down`` stops exactly those;
``down`` also finds leftovers by namespace and by name, so it cleans up after a half-failed ``up``
or a crashed daemon.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import LabError, MissingDependency, NotRoot, UnknownNode
from ..hosts.openssh import master_ident, stop_masters
from ..private import private_dir
from . import access, deploy, netns, nfs, tls
from .node import (
    NODE_POOL,
    enter_argv,
    node_pids,
    ns_alive,
    pid_in_node,
    remove_tree,
    run_in,
    setup_root,
    stop_pids,
    teardown_ns_files,
)
from .services import HOST_KEY, SERVICES, alive, start_services, start_sshd, stop_service
from .state import LabState, record_pid
from .topology import LabLayout, NodeLayout, index_of, plan_nodes

__all__ = ["SERVICES", "Lab", "NodeStatus"]

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


def _parse_human(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
    text = text.strip()
    if text and text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(float(text))


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
        if st.provisioned:  # the role's daemons may have been restarted (upgrade.yml): read their pid files
            self.adopt()
            st = self.state
            assert st is not None
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
        test_kinds: bool = False,
        provision: bool = False,
        run_site: bool = True,
    ) -> bool:
        """Bring the lab up. Returns False (and changes nothing) when it is already running.
        ``test_kinds``: the agents also host the generic ``pipeline`` kind (tests, benchmarks).

        ``provision``: bare nodes (network, root filesystem, sshd and the controller's key only), then
        everything else deployed by ``ansible/site.yml`` through the lab's inventory, as on real nodes
        (``run_site=False``: bare nodes only, for whoever runs the playbook itself)."""
        say = on_step or (lambda _msg: None)
        self.preflight()
        st = self.state
        if st is not None:
            if len(st.nodes) != nodes:
                raise LabError(
                    f"the lab is already up with {len(st.nodes)} nodes; run `zfs-backend lab down` "
                    f"before asking for {nodes}"
                )
            if st.provisioned != provision:
                was = "with" if st.provisioned else "without"
                raise LabError(f"the lab is already up {was} --provision; run `zfs-backend lab down` first")
            if provision:
                self.provision(on_step=say)
            else:
                self.repair(on_step=say)
            return False
        netns.check_range_free(self.layout)
        plan = plan_nodes(self.layout, nodes)
        private_dir(self.layout.state_dir)  # and $ZFS_BACKEND_HOME, when it is missing
        os.chmod(self.layout.state_dir, 0o700)  # the lab's own directory (`down` removes it)
        st = LabState(
            network=str(self.layout.network),
            pool_size=pool_size,
            project_dir=_project_dir(),
            zfs_backend_bin=_zfs_backend_bin(),
            nodes=[n.name for n in plan],
            agents=with_agent and not provision,
            test_kinds=test_kinds,
            provisioned=provision,
        )
        if provision:
            st.project_dir = ""  # nodes run the project installed by the role, not this checkout
            st.zfs_backend_bin = deploy.NODE_BIN
        st.save(self.layout.state_file)
        try:
            say(f"network {self.layout.network} on bridge {self.layout.bridge}")
            netns.create_bridge(self.layout)
            access.provision(self.layout, plan, st.zfs_backend_bin, HOST_KEY, bare=provision)
            # the TLS data channel's certificates (for the role to install when it provisions the nodes)
            tls.install_certs(self.layout, plan, for_role=provision)
            self._parallel(plan, lambda n: self._bring_up_node(n, st, say, st.agents))
            access.write_inventory(
                self.layout.inventory,
                plan,
                key=self.layout.client_key,
                known_hosts=self.layout.known_hosts,
                zfs_backend_bin=st.zfs_backend_bin,
                ssh_config=self.layout.ssh_config,
                role_vars=deploy.role_vars(self.layout, pool_size, provision),
            )
            if provision and run_site:
                self.provision(on_step=say)
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

    def _bring_up_node(
        self, node: NodeLayout, st: LabState, say: Callable[[str], None], with_agent: bool
    ) -> None:
        netns.create_node_link(self.layout, node)
        setup_root(self.layout, node, st.project_dir)
        if st.provisioned:
            start_sshd(self.layout, node)
            say(f"{node.name} bare at {node.address}: sshd")
            return
        start_services(self.layout, node, st, with_agent)
        running = [s for s in SERVICES if alive(self.layout, node, s)]
        say(f"{node.name} up at {node.address}: pool {NODE_POOL}; {', '.join(running)}")

    def provision(self, on_step: Callable[[str], None] | None = None) -> deploy.PlaybookRun:
        """Deploy every node with ``ansible/site.yml`` (idempotent) and record the daemons it started."""
        say = on_step or (lambda _msg: None)
        log = self.layout.state_dir / "ansible" / "site.log"
        say(f"deploying with ansible/site.yml (log {log})")
        run = deploy.deploy(self.layout, self.nodes(), log)
        for node, running in self.adopt().items():
            say(f"{node} deployed: {', '.join(running)}")
        say(f"site.yml: {run.changed} changed")
        return run

    def adopt(self) -> dict[str, list[str]]:
        """Record the daemons the role started (their pid files) so that status, down and restart see them.
        Returns the daemons alive per node."""
        out = {}
        for node in self.nodes():
            for service, pid in deploy.adopt_pids(self.layout, node).items():
                record_pid(self.layout.state_file, node.name, service, pid)
            out[node.name] = [s for s in SERVICES if alive(self.layout, node, s)]
        return out

    def repair(self, on_step: Callable[[str], None] | None = None) -> list[str]:
        """Restart any dead daemon of a running lab (its pool is re-imported). Returns what was restarted."""
        st = self.state
        if st is None:
            raise LabError("the lab is not up: run `zfs-backend lab up`")
        if st.provisioned:
            self.provision(on_step=on_step)
            return []
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
                and not alive(self.layout, node, s)
            ]
            if dead:
                start_services(self.layout, node, st, with_agent)
                restarted += [f"{node.name}:{s}" for s in dead]
                if on_step:
                    on_step(f"{node.name}: restarted {', '.join(dead)}")
        return restarted

    def restart_service(self, name: str, service: str, hard: bool = False) -> None:
        """Stop (SIGKILL when ``hard``) and start one daemon of a node: a node-level fault for tests."""
        if service not in SERVICES:
            raise LabError(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
        node = self.node(name)
        if self.state and self.state.provisioned and service != "sshd":
            raise LabError(f"{service} of a provisioned lab is the role's: re-run ansible/site.yml instead")
        self.stop_service(name, service, hard=hard)
        st = self.state
        assert st is not None
        start_services(self.layout, node, st, with_agent=st.agents)

    def stop_service(self, name: str, service: str, hard: bool = False) -> None:
        stop_service(self.layout, self.node(name), service, hard=hard)

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
        if st is not None and st.provisioned:
            with contextlib.suppress(Exception):  # best effort: stop the role's daemons in order, by pid
                self.adopt()
                st = self.state
        names = set(st.nodes) if st else set()
        if lay.ns_dir.exists():
            names |= {p.stem for p in lay.ns_dir.iterdir() if p.suffix in (".mnt", ".uts")}
        names |= {n.removeprefix(lay.netns_prefix()) for n in netns.list_lab_netns(lay)}
        nodes = [lay.node(index_of(n)) for n in sorted(names) if n.startswith("node")]
        # 0. the controller's SSH master connections to these nodes (kept for reuse between commands)
        stop_masters(self.settings.ssh_dir, [master_ident("root", n.address) for n in nodes])
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
            remove_tree(lay.state_dir)
            done.append(f"removed {lay.state_dir}")
        return done
