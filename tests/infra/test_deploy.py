"""The plays themselves, on a lab of bare nodes: site.yml changes on its first run and nothing on its
second, writes nothing on the controller, and a bad inventory variable fails the play with a clear
message and leaves every node as it was."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

from zfs_backend.lab.services import SERVICES

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from footprint import controller_changes, git_status

ROLE_FILES = (
    "/root/.ssh/authorized_keys",
    "/root/.ssh/known_hosts",
    "/root/.ssh/config",
    "/root/.ssh/id_ed25519.pub",
    "/etc/ssh/sshd_config.d/zfs-backend.conf",
    "/etc/zfs-backend/agent.env",
    "/etc/zfs-backend/inventory.yml",
    "/etc/ganesha/ganesha.conf",
    "/etc/ganesha/zfs-backend/exports.conf",
    "/opt/zfs-backend/.installed-wheelhouse",
    "/opt/zfs-backend/wheelhouse.tar",
)


def fingerprint(host) -> str:
    """What a play could change on a node: the role's files (content, mode, mtime), its daemons, its pool."""
    files = " ".join(ROLE_FILES)
    return host.check_output(
        f"stat -c '%n %a %s %Y' {files}; sha256sum {files}; "
        "cat /run/zfs-backend/supervisor.pid /run/ganesha/ganesha.pid /run/zfs/zfs-fuse.pid; "
        "zpool list -H -o name,size,health; ls -la --time-style=full-iso /root/.ssh /etc/zfs-backend"
    )


def test_bare_nodes_run_only_sshd_with_the_controller_key(lab_deployment):
    assert set(lab_deployment.bare) == set(lab_deployment.node_names())
    for name, bare in lab_deployment.bare.items():
        assert {s for s, alive in bare["services"].items() if alive} == {"sshd"}, (name, bare)
        assert "opt" not in bare["probe"].split() and "nodekey" not in bare["probe"].split(), (name, bare)
        assert "tank" not in bare["probe"], (name, bare)  # no pool
        keys = [line for line in bare["authorized_keys"].splitlines() if line.strip()]
        assert len(keys) == 1 and keys[0].endswith(" zfs-backend-controller"), keys


def test_first_run_changes_and_second_changes_nothing(lab_deployment):
    first, second = lab_deployment.first, lab_deployment.second
    assert first.returncode == 0, first.failure()
    assert set(first.recap) == set(lab_deployment.node_names())
    assert all(h["changed"] > 0 and h["failed"] == 0 for h in first.recap.values()), first.recap
    assert second is not None and second.returncode == 0, second and second.failure()
    assert second.changed == 0, [line for line in second.output.splitlines() if line.startswith("changed:")]
    assert all(h["failed"] == 0 and h["unreachable"] == 0 for h in second.recap.values())


def test_the_lab_sees_the_role_daemons(lab_deployment):
    for status in lab_deployment.lab.status():
        assert all(status.services[s] for s in SERVICES), (status.name, status.services)
        assert status.pool_size and status.pool_size > 0


def test_nothing_of_the_role_is_written_on_the_controller(lab_deployment):
    changed = controller_changes(lab_deployment.marker_time, lab_deployment.settings.home)
    assert changed == [], changed
    assert git_status() == lab_deployment.controller_before["git"]


def _bad_inventory(dep, path: Path, node: str, **node_vars) -> Path:
    doc = yaml.safe_load(dep.inventory.read_text())
    bad = copy.deepcopy(doc)
    bad["all"]["children"]["storage_nodes"]["hosts"][node].update(node_vars)
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    return path


def _refused(dep, hosts, inventory: Path, message: str) -> None:
    before = {n: fingerprint(h) for n, h in hosts.items()}
    run = dep.playbook("site.yml", inventory=inventory)
    assert run.returncode != 0
    assert message in run.output, run.output[-3000:]
    assert "nothing was changed" in run.failure()
    assert run.changed == 0, run.recap
    after = {n: fingerprint(h) for n, h in hosts.items()}
    assert after == before


def test_a_missing_pool_device_fails_the_play_and_changes_nothing(lab_deployment, hosts):
    nodes = lab_deployment.node_names()
    inv = _bad_inventory(
        lab_deployment,
        lab_deployment.state_dir / "bad-device.yml",
        nodes[-1],
        zfs_backend_node_pool_devices=["/dev/zfs-backend-no-such-disk"],
        zfs_backend_node_pool_files=[],
    )
    _refused(lab_deployment, hosts, inv, "pool device(s) /dev/zfs-backend-no-such-disk missing")


def test_an_unknown_peer_fails_the_play_and_changes_nothing(lab_deployment, hosts):
    nodes = lab_deployment.node_names()
    inv = _bad_inventory(
        lab_deployment,
        lab_deployment.state_dir / "bad-peer.yml",
        nodes[0],
        zfs_backend_node_peers=[*nodes, "node9"],
    )
    _refused(lab_deployment, hosts, inv, "zfs_backend_node_peers names unknown node(s) node9")


def test_an_empty_key_command_fails_the_play_and_changes_nothing(lab_deployment, hosts):
    nodes = lab_deployment.node_names()
    inv = _bad_inventory(
        lab_deployment,
        lab_deployment.state_dir / "bad-command.yml",
        nodes[0],
        zfs_backend_node_key_command="",
    )
    _refused(lab_deployment, hosts, inv, "zfs_backend_node_key_command is empty")


def test_a_controller_key_without_addresses_fails_the_play_and_changes_nothing(lab_deployment, hosts):
    nodes = lab_deployment.node_names()
    inv = _bad_inventory(
        lab_deployment,
        lab_deployment.state_dir / "bad-controller.yml",
        nodes[-1],
        zfs_backend_node_controller_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1 zfs-backend-controller"],
    )
    _refused(lab_deployment, hosts, inv, "zfs_backend_node_controller_addresses is empty")
