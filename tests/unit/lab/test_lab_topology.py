"""The lab's pure parts: layout, names, sizes, generated configs; preflight errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zfs_backend.errors import MissingDependency, NotRoot, UsageError
from zfs_backend.lab import Lab, access
from zfs_backend.lab.topology import LabLayout, index_of, lab_tag, parse_size, plan_nodes


def test_layout_addresses_and_names() -> None:
    lay = LabLayout.for_dir(Path("/var/lib/zfs-backend/lab"), "198.18.0.0/24")
    nodes = plan_nodes(lay, 3)
    assert [n.name for n in nodes] == ["node1", "node2", "node3"]
    assert [n.address for n in nodes] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert lay.controller_address == "198.18.0.1"
    for n in nodes:
        assert len(n.veth_host) <= 15 and len(n.veth_node) <= 15 and len(lay.bridge) <= 15
        assert n.netns.startswith(lay.netns_prefix())
    assert index_of("node12") == 12


def test_two_labs_get_distinct_kernel_names() -> None:
    assert lab_tag(Path("/var/lib/a")) != lab_tag(Path("/var/lib/b"))


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "198.18.0.1/24", "nonsense", "198.18.0.0/29"])
def test_bad_network_is_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        LabLayout.for_dir(Path("/x"), bad)


@pytest.mark.parametrize("bad", ["node0", "node", "Node1", "node1;rm", "../node1", "node100"])
def test_bad_node_names(bad: str) -> None:
    with pytest.raises(UsageError):
        index_of(bad)


def test_node_count_bounds() -> None:
    lay = LabLayout.for_dir(Path("/x"), "198.18.0.0/24")
    with pytest.raises(UsageError):
        plan_nodes(lay, 0)
    with pytest.raises(UsageError):
        plan_nodes(lay, 51)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1G", 1 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("4096", 4096), ("2k", 2048)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "-1G", "0", "1X", "1G; rm -rf /", "G"])
def test_parse_size_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_size(bad)


def test_sshd_config_is_key_only_with_client_alive() -> None:
    lay = LabLayout.for_dir(Path("/x"), "198.18.0.0/24")
    text = access.sshd_config(lay.node(1), "/etc/ssh/k")
    assert "PasswordAuthentication no" in text
    assert "ClientAliveInterval 5" in text
    assert "ListenAddress 198.18.0.11" in text


def test_client_config_is_strict() -> None:
    lay = LabLayout.for_dir(Path("/x"), "198.18.0.0/24")
    text = access.ssh_client_config(plan_nodes(lay, 2), Path("/k"), Path("/kh"))
    assert text.count("StrictHostKeyChecking yes") == 2
    assert "StrictHostKeyChecking no" not in text
    assert "UserKnownHostsFile /kh" in text


def test_inventory_round_trips_through_the_loader(tmp_path: Path) -> None:
    from zfs_backend.hosts import load_inventory

    lay = LabLayout.for_dir(tmp_path, "198.18.0.0/24")
    key = tmp_path / "id"
    key.write_text("k")
    key.chmod(0o600)
    (tmp_path / "kh").write_text("")
    path = access.write_inventory(
        tmp_path / "inv.yml", plan_nodes(lay, 2), key=key, known_hosts=tmp_path / "kh", zfs_backend_bin="/b"
    )
    inv = load_inventory(path)
    assert inv.names == ["node1", "node2"]
    assert inv.node("node2").address == "198.18.0.12"
    assert inv.node("node1").zfs_backend_bin == "/b"


def test_write_private_mode(tmp_path: Path) -> None:
    p = tmp_path / "secret"
    access.write_private(p, "x")
    assert p.stat().st_mode & 0o777 == 0o600


def test_preflight_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import zfs_backend.lab.lab as labmod

    monkeypatch.setattr(labmod.os, "geteuid", lambda: 1000)
    with pytest.raises(NotRoot, match="needs root"):
        Lab.preflight()
    monkeypatch.setattr(labmod.os, "geteuid", lambda: 0)
    monkeypatch.setattr(labmod.shutil, "which", lambda b, path=None: None if b == "zfs-fuse" else "/bin/x")
    if Path("/dev/fuse").exists():
        with pytest.raises(MissingDependency, match="zfs-fuse"):
            Lab.preflight()
