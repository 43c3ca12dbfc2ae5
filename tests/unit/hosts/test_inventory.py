"""The ansible-format inventory loader."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from zfs_backend.config import Settings, load_settings
from zfs_backend.errors import ConfigError, UnknownNode
from zfs_backend.hosts import Inventory, NodeSpec, SSHHost, connect, load_inventory
from zfs_backend.hosts.inventory import CACHE_NAME


@pytest.fixture
def ssh_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ssh"
    d.mkdir()
    key = d / "id_ed25519"
    key.write_text("not a real key\n")
    key.chmod(0o600)
    (d / "known_hosts").write_text("")
    return d


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "inventory.yml"
    p.write_text(text)
    return p


LAB = """\
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: {ssh}/id_ed25519
    zfs_backend_known_hosts: {ssh}/known_hosts
    zfs_backend_bin: /work/main/.venv/bin/zfs-backend
  children:
    storage_nodes:
      hosts:
        node1: {{ansible_host: 198.18.0.11, ansible_port: 22}}
        node2: {{ansible_host: 198.18.0.12, ansible_port: 22}}
"""


def test_lab_format(tmp_path: Path, ssh_dir: Path) -> None:
    inv = load_inventory(write(tmp_path, LAB.format(ssh=ssh_dir)))
    assert isinstance(inv, Inventory)
    assert inv.names == ["node1", "node2"]
    n1 = inv.node("node1")
    assert n1 == NodeSpec(
        name="node1",
        address="198.18.0.11",
        port=22,
        user="root",
        key_file=ssh_dir / "id_ed25519",
        known_hosts=ssh_dir / "known_hosts",
        zfs_backend_bin="/work/main/.venv/bin/zfs-backend",
    )
    assert n1.vars["ansible_host"] == "198.18.0.11"
    with pytest.raises(TypeError):
        n1.vars["x"] = 1  # type: ignore[index]


def test_connect_builds_ssh_host(tmp_path: Path, ssh_dir: Path) -> None:
    p = write(tmp_path, LAB.format(ssh=ssh_dir))
    s = load_settings(
        {
            "ZFS_BACKEND_HOME": str(tmp_path / "home"),
            "ZFS_BACKEND_INVENTORY": str(p),
            "ZFS_BACKEND_SSH_CIPHER": "aes256-gcm@openssh.com",
        }
    )
    h = connect("node2", s)
    assert isinstance(h, SSHHost)
    assert (h.name, h.address, h.port, h.cipher) == ("node2", "198.18.0.12", 22, "aes256-gcm@openssh.com")
    assert h.transport is None  # lazy: nothing connected yet
    assert load_inventory(settings=s).connect("node1", s).known_hosts == ssh_dir / "known_hosts"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_inventory(tmp_path / "nope.yml")
    msg = str(ei.value)
    assert msg == (
        f"no inventory at {tmp_path / 'nope.yml'}: run `zfs-backend lab up` or set ZFS_BACKEND_INVENTORY"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("all: [unclosed\n", "invalid YAML line"),
        ("- a\n- b\n", "expected a mapping"),
        ("all:\n  hosts: [node1]\n", "must be a mapping"),
        ("all:\n  hostz: {}\n", "unknown keys: hostz"),
        ("", "expected a mapping"),
    ],
)
def test_bad_yaml(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as ei:
        load_inventory(write(tmp_path, text))
    assert "\n" not in str(ei.value) and str(tmp_path) in str(ei.value)


def test_unknown_node(tmp_path: Path, ssh_dir: Path) -> None:
    p = write(tmp_path, LAB.format(ssh=ssh_dir))
    with pytest.raises(UnknownNode) as ei:
        load_inventory(p).node("x")
    assert str(ei.value) == f"unknown node 'x'; inventory {p} has: node1, node2"


def test_group_var_inheritance(tmp_path: Path, ssh_dir: Path) -> None:
    text = f"""\
all:
  vars:
    ansible_user: root
    ansible_port: 22
    ansible_ssh_private_key_file: {ssh_dir}/id_ed25519
    zfs_backend_known_hosts: {ssh_dir}/known_hosts
    color: all
  hosts:
    node0:
  children:
    storage:
      vars: {{ansible_port: 2200, color: storage}}
      hosts:
        node1: {{ansible_host: 10.0.0.1}}
        node2: {{ansible_host: 10.0.0.2, ansible_port: 2202}}
      children:
        fast:
          vars: {{color: fast, ansible_user: admin}}
          hosts:
            node3: {{ansible_host: 10.0.0.3}}
            node1:
                """
    inv = load_inventory(write(tmp_path, text))
    n0, n1, n2, n3 = (inv.node(f"node{i}") for i in range(4))
    assert (n0.address, n0.port, n0.user, n0.vars["color"]) == ("node0", 22, "root", "all")
    # node1 is in storage and in its child fast: the deeper group wins, host vars are kept
    assert (n1.address, n1.port, n1.user, n1.vars["color"]) == ("10.0.0.1", 2200, "admin", "fast")
    assert (n2.port, n2.user, n2.vars["color"]) == (2202, "root", "storage")
    assert (n3.port, n3.user, n3.vars["color"]) == (2200, "admin", "fast")


def test_top_level_group_and_relative_paths(tmp_path: Path, ssh_dir: Path) -> None:
    text = """\
storage_nodes:
  vars:
    ansible_ssh_private_key_file: ssh/id_ed25519
    zfs_backend_known_hosts: ssh/known_hosts
  hosts:
    node7: {ansible_host: node7.example.org, ansible_port: "2222"}
"""
    n = load_inventory(write(tmp_path, text)).node("node7")
    assert (n.address, n.port, n.user) == ("node7.example.org", 2222, "root")
    assert n.key_file == tmp_path / "ssh" / "id_ed25519"
    assert n.zfs_backend_bin is None


@pytest.mark.parametrize(
    ("host_line", "match"),
    [
        ("Node1: {ansible_host: 10.0.0.1}", "invalid node name"),
        ("node_1: {ansible_host: 10.0.0.1}", "invalid node name"),
        ("node1: {ansible_host: '-oProxyCommand=x'}", "invalid node address"),
        ("node1: {ansible_port: 0}", "invalid ansible_port"),
        ("node1: {ansible_port: many}", "invalid ansible_port"),
        ("node1: {ansible_user: 'root x'}", "invalid ssh user"),
        ("node1: {ansible_ssh_private_key_file: /nonexistent/key}", "No such file"),
        ("node1: {zfs_backend_known_hosts: /nonexistent/kh}", "known_hosts /nonexistent/kh does not exist"),
    ],
)
def test_invalid_host(tmp_path: Path, ssh_dir: Path, host_line: str, match: str) -> None:
    text = f"""\
all:
  vars:
    ansible_ssh_private_key_file: {ssh_dir}/id_ed25519
    zfs_backend_known_hosts: {ssh_dir}/known_hosts
  hosts:
    {host_line}
"""
    with pytest.raises(ConfigError, match=match) as ei:
        load_inventory(write(tmp_path, text))
    assert "\n" not in str(ei.value)


def test_missing_key_or_known_hosts_vars(tmp_path: Path, ssh_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no ansible_ssh_private_key_file"):
        load_inventory(write(tmp_path, "all:\n  hosts:\n    node1:\n"))
    text = f"all:\n  vars: {{ansible_ssh_private_key_file: {ssh_dir}/id_ed25519}}\n  hosts:\n    node1:\n"
    with pytest.raises(ConfigError, match="no zfs_backend_known_hosts"):
        load_inventory(write(tmp_path, text))


def test_private_key_mode(tmp_path: Path, ssh_dir: Path) -> None:
    (ssh_dir / "id_ed25519").chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644; run `chmod 600 "):
        load_inventory(write(tmp_path, LAB.format(ssh=ssh_dir)))
    (ssh_dir / "id_ed25519").chmod(0o400)
    assert load_inventory(write(tmp_path, LAB.format(ssh=ssh_dir))).names == ["node1", "node2"]


def test_default_path_from_settings(tmp_path: Path) -> None:
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home")})
    with pytest.raises(ConfigError, match=str(tmp_path / "home" / "lab" / "inventory.yml")):
        load_inventory(settings=s)


# --- the parsed-inventory cache (the command line's start-up) ----------------------------------------


def _cached(tmp_path: Path, ssh_dir: Path, text: str | None = None) -> tuple[Settings, Path]:
    inv = write(tmp_path, text or LAB.format(ssh=ssh_dir))
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home"), "ZFS_BACKEND_INVENTORY": str(inv)})
    return s, s.home / "cache" / CACHE_NAME


def test_cache_is_private_and_read_back(tmp_path: Path, ssh_dir: Path) -> None:
    s, cache = _cached(tmp_path, ssh_dir)
    first = load_inventory(settings=s)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    entry = json.loads(cache.read_text())
    # the same text is read from the cache, not parsed again: an entry changed in place shows it
    entry["doc"]["all"]["children"]["storage_nodes"]["hosts"]["node2"]["ansible_host"] = "198.18.0.99"
    cache.write_text(json.dumps(entry))
    assert load_inventory(settings=s).node("node2").address == "198.18.0.99"
    assert first.node("node2").address == "198.18.0.12"


def test_cache_never_serves_an_edited_inventory(tmp_path: Path, ssh_dir: Path) -> None:
    s, cache = _cached(tmp_path, ssh_dir)
    assert load_inventory(settings=s).node("node1").address == "198.18.0.11"
    s.inventory.write_text(LAB.format(ssh=ssh_dir).replace("198.18.0.11", "198.18.0.21"))
    assert load_inventory(settings=s).node("node1").address == "198.18.0.21"
    assert "198.18.0.21" in cache.read_text()


def test_cache_entry_not_ours_is_ignored(tmp_path: Path, ssh_dir: Path) -> None:
    s, cache = _cached(tmp_path, ssh_dir)
    load_inventory(settings=s)
    entry = json.loads(cache.read_text())
    entry["doc"]["all"]["vars"]["ansible_user"] = "mallory"
    cache.write_text(json.dumps(entry))
    cache.chmod(0o644)  # wider than ours: not trusted
    assert load_inventory(settings=s).node("node1").user == "root"
    cache.write_text(json.dumps(entry))
    cache.chmod(0o600)
    cache.parent.chmod(0o777)  # a directory others can write to: not trusted
    assert load_inventory(settings=s).node("node1").user == "root"


def test_cache_is_validated_like_the_file(tmp_path: Path, ssh_dir: Path) -> None:
    s, cache = _cached(tmp_path, ssh_dir)
    load_inventory(settings=s)
    entry = json.loads(cache.read_text())
    entry["doc"]["all"]["children"]["storage_nodes"]["hosts"]["node1"]["ansible_host"] = "-oProxyCommand=x"
    cache.write_text(json.dumps(entry))
    with pytest.raises(ConfigError, match="invalid node address '-oProxyCommand=x'"):
        load_inventory(settings=s)


def test_what_json_cannot_carry_is_not_cached(tmp_path: Path, ssh_dir: Path) -> None:
    text = LAB.format(ssh=ssh_dir).replace("198.18.0.12, ansible_port: 22", "198.18.0.12, built: 2026-11-30")
    s, cache = _cached(tmp_path, ssh_dir, text)
    assert load_inventory(settings=s).names == ["node1", "node2"]
    assert not cache.exists()


def test_unwritable_cache_is_ignored(tmp_path: Path, ssh_dir: Path) -> None:
    s, _ = _cached(tmp_path, ssh_dir)
    s.home.mkdir()
    (s.home / "cache").write_text("a file where the directory would be")
    assert load_inventory(settings=s).names == ["node1", "node2"]
    assert load_inventory(settings=s).names == ["node1", "node2"]


def test_no_cache_for_an_explicit_path(tmp_path: Path, ssh_dir: Path) -> None:
    s, _ = _cached(tmp_path, ssh_dir)
    load_inventory(s.inventory)
    assert not (s.home / "cache").exists()
