"""scripts/cinder-up's configuration, without starting anything: ports, cinder.conf, rabbitmq.conf."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from zfs_backend.cinderlab.config import (
    CINDER_PARENT,
    LOOPBACK,
    CinderLayout,
    Ports,
    backend_name,
    cinder_conf,
    default_port_base,
    rabbitmq_conf,
)
from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError, InvalidName


def layout(tmp_path: Path, **env: str) -> CinderLayout:
    settings = load_settings({"ZFS_BACKEND_HOME": str(tmp_path), **env})
    return CinderLayout(settings, tmp_path / "venv")


def test_ports_follow_the_lab_network_unless_set(tmp_path: Path) -> None:
    assert default_port_base("198.18.0.0/24") == 23000
    assert default_port_base("198.18.127.0/24") == 24270
    lay = layout(tmp_path, ZFS_BACKEND_LAB_NETWORK="198.18.100.0/24")
    assert lay.ports.all() == {
        "cinder-api": 24000,
        "amqp": 24001,
        "erlang-dist": 24002,
        "epmd": 24003,
        "keystone": 24004,
    }
    assert lay.auth_url == "http://127.0.0.1:24004/v3"
    assert layout(tmp_path, ZFS_BACKEND_CINDER_PORT_BASE="30000").ports.api == 30000
    assert lay.endpoint == "http://127.0.0.1:24000/v3"
    with pytest.raises(ConfigError):
        Ports(80)
    with pytest.raises(ConfigError):
        default_port_base("not a network")


def test_cinder_conf_one_backend_per_node_on_loopback(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    text = cinder_conf(lay, ["node1", "node2"], "pw", db_password="dbpw", replication={"node1": "node2"})
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(text)
    d = conf["DEFAULT"]
    assert d["auth_strategy"] == "noauth"
    assert d["osapi_volume_listen"] == LOOPBACK and d["osapi_volume_listen_port"] == str(lay.ports.api)
    assert d["transport_url"] == f"rabbit://zfs-backend:pw@127.0.0.1:{lay.ports.amqp}/"
    assert d["enabled_backends"] == "zfs-node1,zfs-node2"
    # cinder's own list filters, not /etc/cinder's (absent: every list call logged an ERROR)
    assert d["resource_query_filters_file"] == str(
        tmp_path / "venv" / "etc" / "cinder" / "resource_filters.json"
    )
    sock = tmp_path / "cinder" / "run" / "mariadb.sock"
    assert conf["database"]["connection"] == (
        f"mysql+pymysql://cinder:dbpw@localhost/cinder?unix_socket={sock}&charset=utf8mb4"
    )
    for node in ("node1", "node2"):
        sec = conf[backend_name(node)]
        assert sec["volume_driver"] == "zfs_backend.cinder.ZfsNfsDriver"
        assert sec["volume_backend_name"] == backend_name(node)
        assert sec["zfs_backend_node"] == node and sec["zfs_backend_parent"] == CINDER_PARENT
        assert sec["zfs_backend_home"] == str(tmp_path)
    assert conf["zfs-node1"]["replication_device"] == "backend_id:node2"
    assert "replication_device" not in conf["zfs-node2"]


def test_cinder_conf_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    with pytest.raises(ConfigError):
        cinder_conf(lay, [], "pw")
    with pytest.raises(ConfigError):
        cinder_conf(lay, ["node1"], "pw", replication={"node1": "node1"})
    with pytest.raises(InvalidName):
        backend_name("node1; rm -rf /")


def test_rabbitmq_listens_on_loopback_with_its_own_user(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    text = rabbitmq_conf(lay, "secret")
    assert f"listeners.tcp.1 = 127.0.0.1:{lay.ports.amqp}" in text
    assert "default_user = zfs-backend" in text and "default_pass = secret" in text
