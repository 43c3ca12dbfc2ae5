"""Deployment tests: nodes deployed by ``ansible/site.yml`` and checked over SSH with testinfra.

Against any inventory: ``ZFS_BACKEND_INFRA_INVENTORY=path/to/inventory.yml`` runs the testinfra checks
(``test_node.py``) on the nodes of its ``storage_nodes`` group and skips the lab-only tests.

Without it, a lab of bare nodes (``lab up --provision``'s first step) is brought up and deployed by
the tests themselves, in its own state directory and network derived from the lab tests' variables, so it
never meets the 3-node lab of ``tests/lab``: ``$ZFS_BACKEND_TEST_HOME-deploy`` on the /24 whose third
octet is the test network's plus 64 (``ZFS_BACKEND_TEST_DEPLOY_NETWORK`` overrides it). Under ``CI`` a
missing prerequisite fails instead of skipping.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import testinfra
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from footprint import git_status

from zfs_backend.config import Settings, load_settings
from zfs_backend.lab import Lab
from zfs_backend.lab.deploy import PlaybookRun, ansible_env, run_playbook

TEST_NETWORK = os.environ.get("ZFS_BACKEND_TEST_NETWORK", "198.18.100.0/24")
TEST_HOME = Path(os.environ.get("ZFS_BACKEND_TEST_HOME", "/var/lib/zfs-backend-test"))
EXTERNAL_INVENTORY = os.environ.get("ZFS_BACKEND_INFRA_INVENTORY")
GROUP = "storage_nodes"


def deploy_network() -> str:
    if "ZFS_BACKEND_TEST_DEPLOY_NETWORK" in os.environ:
        return os.environ["ZFS_BACKEND_TEST_DEPLOY_NETWORK"]
    net = ipaddress.IPv4Network(TEST_NETWORK, strict=False)
    octets = str(net.network_address).split(".")
    octets[2] = str((int(octets[2]) + 64) % 256)
    return f"{'.'.join(octets)}/24"


def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "the deployment tests need root (a lab of namespaces)"
    if not Path("/dev/fuse").exists():
        return "the deployment tests need /dev/fuse"
    for b in ("zfs-fuse", "sshd", "nsenter", "start-stop-daemon", "ganesha.nfsd", "rpcbind"):
        if shutil.which(b, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"the deployment tests need {b} (run scripts/bootstrap)"
    for tool in ("ansible-playbook", "ansible-inventory"):
        if not (Path(sys.prefix) / "bin" / tool).exists():
            return f"the deployment tests need {tool} in the project's virtualenv (run scripts/bootstrap)"
    return None


def need(reason: str | None) -> None:
    """Skip for a missing prerequisite; under CI, fail naming it."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/infra/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.infra)


@dataclass
class Deployment:
    """Deployed nodes: the inventory that reaches them, and (on the lab) the lab and its first two plays."""

    inventory: Path
    settings: Settings
    lab: Lab | None = None
    first: PlaybookRun | None = None
    second: PlaybookRun | None = None
    controller_before: dict[str, object] = field(default_factory=dict)
    bare: dict[str, dict[str, object]] = field(default_factory=dict)
    marker_time: float = 0.0

    @property
    def state_dir(self) -> Path:
        return self.settings.lab_dir

    def playbook(self, playbook: str, *args: str, inventory: Path | None = None) -> PlaybookRun:
        return run_playbook(
            self.state_dir,
            inventory or self.inventory,
            playbook,
            args,
            log=self.state_dir / "ansible" / "tests.log",
        )

    def node_names(self) -> list[str]:
        doc = yaml.safe_load(self.inventory.read_text())
        hosts = doc["all"]["children"][GROUP]["hosts"]
        return list(hosts)


def bare_node(lab: Lab, name: str) -> dict[str, object]:
    """What runs and exists in a bare node, before any play."""

    def node_sh(script: str) -> str:
        argv = lab.exec_argv(name, ["sh", "-c", script])
        return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout

    (status,) = [s for s in lab.status() if s.name == name]
    return {
        "services": status.services,
        "probe": node_sh(
            "test -e /opt/zfs-backend && echo opt; test -e /root/.ssh/id_ed25519 && echo nodekey; "
            "zpool list -H 2>&1"
        ),
        "authorized_keys": node_sh("cat /root/.ssh/authorized_keys"),
    }


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if EXTERNAL_INVENTORY:
        inv = Path(EXTERNAL_INVENTORY)
        home = tmp_path_factory.mktemp("home")  # the controller's state (SSH masters) for these tests
        settings = load_settings(
            {**os.environ, "ZFS_BACKEND_HOME": str(home), "ZFS_BACKEND_INVENTORY": str(inv)}
        )
        os.environ.update(
            {k: v for k, v in ansible_env(home).items() if k.startswith("ANSIBLE_") or k == "PATH"}
        )
        yield Deployment(inventory=inv, settings=settings)
        return
    need(missing_prerequisite())
    home = Path(f"{TEST_HOME}-deploy")
    settings = load_settings({"ZFS_BACKEND_HOME": str(home), "ZFS_BACKEND_LAB_NETWORK": deploy_network()})
    Lab(settings).down()  # a killed run may have left one behind
    lab = Lab(settings)
    lab.up(nodes=2, pool_size=256 << 20, provision=True, run_site=False)
    dep = Deployment(inventory=lab.layout.inventory, settings=settings, lab=lab)
    dep.bare = {n.name: bare_node(lab, n.name) for n in lab.nodes()}
    os.environ.update(
        {k: v for k, v in ansible_env(dep.state_dir).items() if k.startswith("ANSIBLE_") or k == "PATH"}
    )
    dep.marker_time = time.time()
    dep.controller_before = {"git": git_status()}
    dep.first = dep.playbook("site.yml")
    dep.second = dep.playbook("site.yml") if dep.first.returncode == 0 else None
    if dep.first.returncode == 0:
        lab.adopt()
    try:
        yield dep
    finally:
        lab.down()


@pytest.fixture(scope="session")
def hosts(deployment: Deployment) -> dict[str, testinfra.host.Host]:
    """testinfra hosts of the inventory's storage nodes, over SSH with the inventory's settings."""
    if deployment.first is not None:
        assert deployment.first.returncode == 0, deployment.first.failure()
    found = testinfra.get_hosts([f"ansible://{GROUP}"], ansible_inventory=str(deployment.inventory))
    return {h.backend.get_hostname(): h for h in found}


@pytest.fixture(scope="session")
def lab_deployment(deployment: Deployment) -> Deployment:
    """The lab-only tests (plays, footprint, upgrade) need the lab the tests deployed."""
    if deployment.lab is None:
        pytest.skip("lab only: ZFS_BACKEND_INFRA_INVENTORY names an external inventory")
    return deployment
