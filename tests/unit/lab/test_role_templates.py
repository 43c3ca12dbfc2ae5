"""The ansible role and the lab write the same lines: node keys in authorized_keys, known_hosts, the
node's ssh client config, ganesha.conf and sshd's hardening. Rendered here with plain Jinja (no node)."""

import json
from pathlib import Path

import jinja2
import pytest

from zfs_backend.lab import access, nfs
from zfs_backend.lab.topology import LabLayout

ROLE = Path(__file__).resolve().parents[3] / "ansible" / "roles" / "zfs_backend_node"


def render(template: str, **variables) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,  # as ansible's template lookup and module
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["to_json"] = json.dumps
    return env.get_template(template).render(**variables)


@pytest.fixture
def lab(tmp_path: Path):
    lay = LabLayout.for_dir(tmp_path, "198.18.120.0/24")
    nodes = [lay.node(i) for i in (1, 2, 3)]
    keys = {}
    for n in nodes:
        host = tmp_path / n.name / "host_key"
        client = tmp_path / n.name / "client_key"
        host.parent.mkdir()
        Path(f"{host}.pub").write_text(f"ssh-ed25519 HOST{n.index}AAAA {n.name}-host\n")
        Path(f"{client}.pub").write_text(f"ssh-ed25519 CLIENT{n.index}AAAA root@{n.name}\n")
        keys[n.name] = access.NodeKeys(host_key=host, client_key=client)
    hostvars = {
        n.name: {
            "ansible_host": n.address,
            "zfs_backend_node_keys": {
                "client_pub": keys[n.name].client_pub_line(),
                "host_pub": keys[n.name].host_pub_line(),
            },
        }
        for n in nodes
    }
    return nodes, keys, hostvars


def test_peer_key_lines_are_the_labs(lab):
    nodes, keys, hostvars = lab
    bin_ = "/opt/zfs-backend/bin/zfs-backend"
    for me in nodes:
        got = render(
            "peer_keys.j2",
            inventory_hostname=me.name,
            zfs_backend_node_peers=[n.name for n in nodes],
            hostvars=hostvars,
            zfs_backend_node_key_command=f"{bin_} peer-exec",
        )
        want = "".join(
            access.node_key_line(keys[n.name].client_pub_line(), n.name, n.address, bin_)
            for n in nodes
            if n is not me
        )
        assert got == want


def test_known_hosts_are_the_labs(lab):
    nodes, keys, hostvars = lab
    got = render("known_hosts.j2", zfs_backend_node_peers=[n.name for n in nodes], hostvars=hostvars)
    assert got == access.known_hosts_text(nodes, keys)


def test_ssh_client_config_is_the_labs(lab):
    nodes, _keys, hostvars = lab
    got = render("ssh_config.j2", zfs_backend_node_peers=[n.name for n in nodes], hostvars=hostvars)
    want = access.ssh_client_config(nodes, Path("/root/.ssh/id_ed25519"), Path("/root/.ssh/known_hosts"))
    assert got == want.split("\n", 1)[1]  # without the lab's header comment


def test_ganesha_conf_is_the_labs():
    got = render(
        "ganesha.conf.j2",
        zfs_backend_node_nfs_protocols=[3, 4],
        zfs_backend_node_nfs_port=nfs.PORTS.nfs,
        zfs_backend_node_mount_port=nfs.PORTS.mount,
        zfs_backend_node_nlm_port=nfs.PORTS.nlm,
    )
    assert got == nfs.ganesha_config()


def test_sshd_hardening_matches_the_labs_sshd(tmp_path: Path):
    got = render(
        "sshd_hardening.conf.j2",
        ansible_managed="managed",
        zfs_backend_node_client_alive_interval=5,
        zfs_backend_node_client_alive_count_max=3,
    )
    role = dict(line.split(None, 1) for line in got.splitlines() if line and not line.startswith("#"))
    node = LabLayout.for_dir(tmp_path, "198.18.120.0/24").node(1)
    lab = dict(
        line.split(None, 1)
        for line in access.sshd_config(node, "/k").splitlines()
        if line and not line.startswith("#")
    )
    assert lab["Include"] == "/etc/ssh/sshd_config.d/*.conf"  # the role's drop-in applies on lab nodes
    for key, value in role.items():
        if key in lab:
            assert lab[key] == value, key
    assert role["PasswordAuthentication"] == "no" and role["ClientAliveInterval"] == "5"


def test_controller_key_lines_are_the_labs():
    pub = "ssh-ed25519 CONTROLLERAAAA"
    ctrl = LabLayout.for_dir(Path("/nonexistent"), "198.18.120.0/24").controller_address
    got = render(
        "controller_keys.j2",
        zfs_backend_node_controller_keys=[f"{pub} zfs-backend-controller"],
        zfs_backend_node_controller_addresses=[ctrl],
    )
    assert got == access.controller_key_line(pub, ctrl)
    two = render(
        "controller_keys.j2",
        zfs_backend_node_controller_keys=[f"{pub} a", "ssh-rsa OTHERAAAA b\n"],
        zfs_backend_node_controller_addresses=["198.18.10.1", "10.0.0.0/8"],
    )
    assert two == (
        f'from="198.18.10.1,10.0.0.0/8" {pub} a\nfrom="198.18.10.1,10.0.0.0/8" ssh-rsa OTHERAAAA b\n'
    )


def test_peer_keys_name_the_peer_and_quote_the_command_safely(lab):
    nodes, _keys, hostvars = lab
    got = render(
        "peer_keys.j2",
        inventory_hostname=nodes[0].name,
        zfs_backend_node_peers=[n.name for n in nodes],
        hostvars=hostvars,
        zfs_backend_node_key_command='/opt/z "x\\y/bin/zfs-backend peer-exec',
    )
    lines = got.splitlines()
    assert len(lines) == 2
    for line, peer in zip(lines, nodes[1:], strict=True):
        assert f'command="/opt/z \\"x\\\\y/bin/zfs-backend peer-exec --peer {peer.name}" ' in line
        assert line.startswith(f'restrict,from="{peer.address}",')


def test_the_agent_environment_names_the_replica_roots():
    got = render(
        "agent.env.j2",
        ansible_managed="managed",
        zfs_backend_node_home="/var/lib/zfs-backend",
        zfs_backend_node_config_dir="/etc/zfs-backend",
        zfs_backend_node_ssh_cipher="aes128-gcm@openssh.com",
        zfs_backend_node_replica_roots=["tank/replicas", "tank/volumes"],
        zfs_backend_node_claim_lease_s="600",
    )
    assert "ZFS_BACKEND_REPLICA_ROOTS=tank/replicas,tank/volumes\n" in got
    from zfs_backend.config import load_settings

    env = dict(line.split("=", 1) for line in got.splitlines() if line and not line.startswith("#"))
    assert load_settings(env).replica_roots == ("tank/replicas", "tank/volumes")
    assert load_settings(env).claim_lease_s == 600
