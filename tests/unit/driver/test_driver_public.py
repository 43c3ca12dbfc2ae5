"""The driver's public surface (issue 24), what failover, migration, the flows and the volume jobs use
instead of its privates: ``ZfsNfsDriver.for_node`` (one constructor for an inventory node),
``dataset_of`` / ``snapshot_of`` / ``mountpoint`` / ``location`` / ``require`` / ``export`` /
``destroy_dataset``, ``settings`` and ``is_set_up``; and the volume service as a context manager on
``durable`` (``transaction``, ``set_status(provider_location=...)``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fake_ganesha_node import FakeNode

from zfs_backend.config import load_settings
from zfs_backend.driver import NodeOptions, Snapshot, Volume, VolumeNotFound, ZfsNfsDriver
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import InvalidName
from zfs_backend.zfs import ZFS_FUSE_07, Zfs
from zfs_backend.zfs.names import parse_dataset

DS_A = parse_dataset("tank/volumes/volume-a")

INVENTORY = """\
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: {ssh}/id_ed25519
    zfs_backend_known_hosts: {ssh}/known_hosts
  children:
    storage_nodes:
      hosts:
        node1: {{ansible_host: 198.18.0.11, ansible_port: 22}}
        node2: {{ansible_host: 198.18.0.12, ansible_port: 22, zfs_backend_volume_thin: false}}
"""


def settings_with_inventory(tmp_path: Path) -> Any:
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("not a real key\n")
    (ssh / "id_ed25519").chmod(0o600)
    (ssh / "known_hosts").write_text("")
    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY.format(ssh=ssh))
    return load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home"), "ZFS_BACKEND_INVENTORY": str(inv)})


def test_for_node_builds_from_the_inventory_with_changes(tmp_path: Path) -> None:
    s = settings_with_inventory(tmp_path)
    d = ZfsNfsDriver.for_node(s, "node2", setup=False, parent="tank/cinder")
    assert (d.options.node, d.options.export_address, str(d.options.parent)) == (
        "node2",
        "198.18.0.12",
        "tank/cinder",
    )
    assert d.options.thin is False  # the node's own inventory variable
    assert d.settings is s and not d.is_set_up
    assert str(ZfsNfsDriver.for_node(s, "node1", setup=False).options.parent) == "tank/volumes"


def test_for_node_refuses_a_bad_node_name_before_reading_anything(tmp_path: Path) -> None:
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path), "ZFS_BACKEND_INVENTORY": str(tmp_path / "none")})
    with pytest.raises(InvalidName):
        ZfsNfsDriver.for_node(s, "-rf", setup=False)


def driver(node: FakeNode) -> ZfsNfsDriver:
    d = ZfsNfsDriver(NodeOptions(node="node1", export_address="198.18.0.11"), node.host, activity_kinds=list)
    d.do_setup()
    d._zfs = Zfs(node.host, dialect=ZFS_FUSE_07)
    return d


def test_names_location_require_export_and_destroy() -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    d = driver(node)
    assert d.is_set_up
    v = Volume(id="a", size=1)
    assert d.dataset_of(v) == DS_A
    assert str(d.snapshot_of(Snapshot(id="s1", volume_id="a", volume_size=1))) == f"{DS_A}@snapshot-s1"
    assert d.location(DS_A) == f"198.18.0.11:{d.mountpoint(DS_A)}"
    d.require(DS_A, "volume a")
    with pytest.raises(VolumeNotFound, match=r"^volume b not found on node1"):
        d.require(parse_dataset("tank/volumes/volume-b"), "volume b")
    d.export(DS_A, ("198.18.0.13",))
    entry = d.exports.get(DS_A)
    assert entry is not None and entry.clients == ("198.18.0.13",)
    destroyed: list[tuple[Any, dict[str, Any]]] = []
    d.zfs.destroy = lambda ds, **kw: destroyed.append((ds, kw))  # type: ignore[method-assign]
    d.destroy_dataset(DS_A)
    assert destroyed == [(DS_A, {"recursive": True, "deadline": 30.0, "missing_ok": True})]


def test_settings_default_to_the_environments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZFS_BACKEND_HOME", str(tmp_path))
    d = ZfsNfsDriver(NodeOptions(node="node1"))
    assert d.settings.home == tmp_path and not d.is_set_up
    d.settings = load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "other")})
    assert d.settings.home == tmp_path / "other"


class Made:
    """A driver that makes every volume (the service's records are what is tested)."""

    host = None

    def create_volume(self, volume: Volume) -> dict[str, Any]:
        return {"provider_location": "198.18.0.11:/tank/volumes/x"}


def test_service_is_a_context_manager_on_a_durable_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with VolumeService(load_settings({"ZFS_BACKEND_HOME": str(home)}), driver_for=lambda n: Made()) as svc:  # type: ignore[arg-type,return-value]
        svc.create_volume("vol1", 1, "node1")
        with svc.transaction() as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rec = svc.set_status("vol1", "available", provider_location="198.18.0.12:/tank/volumes/y")
        assert rec.provider_location == "198.18.0.12:/tank/volumes/y"
        with pytest.raises(RuntimeError), svc.transaction() as db:  # rolled back
            db.execute("DELETE FROM volumes")
            raise RuntimeError("no")
        assert [v.name for v in svc.list_volumes()] == ["vol1"]
    assert svc._conn is None  # closed on leaving; a later call opens it again
    assert svc.get_volume("vol1").status == "available"
    svc.close()
    assert (home / "volumes.db").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(home / "volumes.db") as db:
        assert db.execute("SELECT COUNT(*) FROM volumes").fetchone()[0] == 1
