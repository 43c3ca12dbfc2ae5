"""How the lab's nodes are reached: SSH keys, host keys, known_hosts, client configs, the inventory.

Everything above the lab reaches nodes only through what this module writes: an ansible-format
YAML inventory and an OpenSSH client config, exactly as it would reach real storage nodes.

Modes. Under the lab directory everything is private to root (directories 0700, files 0600, keys
included): the inventory, the SSH config, known_hosts and the nodes' inventories are read only by root
(the controller, cinder-volume and ansible run as root, since they use the root-only key). Inside a
node's root filesystem (its overlay ``upper``) files keep the modes a real server gives them: ``/etc/hosts``,
``/etc/hostname`` and ``sshd_config`` 0644 (any user in the node reads them), public keys 0644, private
keys and ``authorized_keys`` 0600 in ``/root/.ssh`` (0700); the node's directory on the host is 0700,
so no other host user reaches them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..private import private_dir
from ..zfs.names import validate_node
from .topology import LabLayout, NodeLayout

__all__ = [
    "NodeKeys",
    "controller_key_line",
    "ensure_keypair",
    "known_hosts_text",
    "node_key_line",
    "provision",
    "ssh_client_config",
    "sshd_config",
    "write_inventory",
    "write_private",
]


@dataclass(frozen=True)
class NodeKeys:
    host_key: Path  # the node's sshd host key (private), on the controller side
    client_key: Path  # the node's own client key, for node-to-node SSH

    def host_pub_line(self) -> str:
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[0:2]
        return f"{kind} {blob}"

    def client_pub_line(self) -> str:
        kind, blob = Path(f"{self.client_key}.pub").read_text().split()[0:2]
        return f"{kind} {blob}"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file created with ``mode`` from the start (no window with wider permissions: a stale
    temporary file is set to ``mode`` before anything is written to it). Missing parent directories
    are created with the default mode (inside a node's root filesystem they are system directories)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode & 0o600)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_keypair(path: Path, comment: str) -> Path:
    """Create an ed25519 key pair at ``path`` unless one exists, in a private directory; both halves
    mode 0600 from the start (``ssh-keygen`` runs with umask 077)."""
    if not path.exists():
        private_dir(path.parent)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            umask=0o077,
        )
    for p in (path, Path(f"{path}.pub")):
        os.chmod(p, 0o600)
    return path


def node_key_line(pub: str, node: str, address: str, zfs_backend_bin: str) -> str:
    """A node's own key as its peers accept it: only from that node's address, no pty, forwarding or
    agent (``restrict``), and only the forced command that lets replication through (``peer-exec
    --peer NODE``: the agent's peer socket as that peer, and granted ``zfs receive``). Never the
    controller's key."""
    validate_node(node)
    return (
        f'restrict,from="{address}",command="{zfs_backend_bin} peer-exec --peer {node}" {pub} root@{node}\n'
    )


def controller_key_line(pub: str, address: str) -> str:
    """The controller's key: full access (it administers the node), but only from its own address."""
    return f'from="{address}" {pub} zfs-backend-controller\n'


def known_hosts_text(nodes: list[NodeLayout], keys: dict[str, NodeKeys]) -> str:
    return "".join(f"{n.name},{n.address} {keys[n.name].host_pub_line()}\n" for n in nodes)


_CLIENT_OPTS = (
    ("User", "root"),
    ("IdentitiesOnly", "yes"),
    ("GlobalKnownHostsFile", "/dev/null"),
    ("StrictHostKeyChecking", "yes"),
    ("BatchMode", "yes"),
    ("Ciphers", "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"),
    ("KexAlgorithms", "curve25519-sha256,curve25519-sha256@libssh.org"),
    ("ServerAliveInterval", "5"),
    ("ServerAliveCountMax", "3"),
    ("ConnectTimeout", "5"),
)


def ssh_client_config(nodes: list[NodeLayout], key: Path, known_hosts: Path) -> str:
    out = ["# Written by `zfs-backend lab up`. Strict host-key checking, key-only.\n"]
    for n in nodes:
        out.append(f"Host {n.name} {n.address}\n  HostName {n.address}\n")
        out.append(f"  IdentityFile {key}\n  UserKnownHostsFile {known_hosts}\n")
        out.extend(f"  {k} {v}\n" for k, v in _CLIENT_OPTS)
    return "".join(out)


def sshd_config(node: NodeLayout, host_key: str) -> str:
    return (
        "# Written by `zfs-backend lab up` for this lab node.\n"
        # First: drop-ins (the ansible role's hardening) win, as in Debian's own sshd_config.
        "Include /etc/ssh/sshd_config.d/*.conf\n"
        f"ListenAddress {node.address}\n"
        "Port 22\n"
        f"HostKey {host_key}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
        "PidFile /run/sshd.pid\n"
        # A dead peer must not hang a receiving `zfs recv`: drop it after ~15 s of silence.
        "ClientAliveInterval 5\n"
        "ClientAliveCountMax 3\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 100\n"
        "X11Forwarding no\n"
        "PrintMotd no\n"
        "Subsystem sftp internal-sftp\n"
    )


def write_inventory(
    path: Path,
    nodes: list[NodeLayout],
    *,
    key: Path,
    known_hosts: Path,
    zfs_backend_bin: str,
    ssh_config: Path | None = None,
    role_vars: dict[str, object] | None = None,
) -> Path:
    """Write an ansible-format YAML inventory naming every node and how to reach it (``role_vars``: what
    ``ansible/site.yml`` needs to deploy these nodes)."""
    vars_: dict[str, object] = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
    }
    if ssh_config is not None:
        vars_["ansible_ssh_common_args"] = f"-F {ssh_config}"
    vars_.update(
        {
            "zfs_backend_known_hosts": str(known_hosts),
            "zfs_backend_bin": zfs_backend_bin,
            "zfs_backend_lab": True,
        }
    )
    vars_.update(role_vars or {})
    doc = {
        "all": {
            "vars": vars_,
            "children": {
                "storage_nodes": {
                    "hosts": {n.name: {"ansible_host": n.address, "ansible_port": 22} for n in nodes},
                }
            },
        }
    }
    text = "# Written by `zfs-backend lab up`: the lab's storage nodes.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )
    write_private(path, text, 0o600)
    return path


def provision(
    lay: LabLayout, plan: list[NodeLayout], zfs_backend_bin: str, host_key: str, bare: bool = False
) -> None:
    """Keys, known_hosts and configs for the controller and for every node (node-to-node SSH with
    narrow keys: see :func:`node_key_line`). ``bare``: only what the controller needs to reach the
    nodes (its key, the host keys, sshd's config); node keys, known_hosts and peer configs are then the
    ansible role's to exchange (``lab up --provision``)."""
    private_dir(lay.ssh_dir)
    ensure_keypair(lay.client_key, "zfs-backend-controller")
    keys: dict[str, NodeKeys] = {}
    for n in plan:
        private_dir(n.dir)  # before anything below it: the node's files are root's alone
        private_dir(n.home)
        keydir = n.dir / "keys"
        keys[n.name] = NodeKeys(
            host_key=ensure_keypair(keydir / "ssh_host_ed25519_key", f"{n.name}-host"),
            client_key=ensure_keypair(keydir / "id_ed25519", f"root@{n.name}"),
        )
    known = known_hosts_text(plan, keys)
    write_private(lay.known_hosts, known)
    write_private(lay.ssh_config, ssh_client_config(plan, lay.client_key, lay.known_hosts))
    ctrl_pub = " ".join(Path(f"{lay.client_key}.pub").read_text().split()[0:2])
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
        authorized = controller_key_line(ctrl_pub, lay.controller_address) + "".join(
            node_key_line(keys[peer.name].client_pub_line(), peer.name, peer.address, zfs_backend_bin)
            for peer in plan
            if peer.name != n.name and not bare
        )
        write_private(ssh / "authorized_keys", authorized)
        if not bare:
            write_private(ssh / "id_ed25519", k.client_key.read_text())
            write_private(ssh / "id_ed25519.pub", Path(f"{k.client_key}.pub").read_text(), 0o644)
            write_private(ssh / "known_hosts", known, 0o644)
            write_private(
                ssh / "config",
                ssh_client_config(plan, Path("/root/.ssh/id_ed25519"), Path("/root/.ssh/known_hosts")),
            )
        etc_ssh = up / "etc" / "ssh" / "zfs-backend"
        write_private(etc_ssh / "ssh_host_ed25519_key", k.host_key.read_text())
        write_private(etc_ssh / "ssh_host_ed25519_key.pub", Path(f"{k.host_key}.pub").read_text(), 0o644)
        write_private(etc_ssh / "sshd_config", sshd_config(n, host_key), 0o644)
        write_private(up / "etc" / "hosts", base_hosts.rstrip("\n") + "\n" + lab_hosts, 0o644)
        write_private(up / "etc" / "hostname", n.name + "\n", 0o644)
        # Plain shell start-up files: the host's (pyenv hooks, prompts…) would run on every SSH
        # command and stall when an SSH session is killed mid-login (a cancel, a link cut).
        for rc in (".bashrc", ".profile"):
            write_private(up / "root" / rc, "# lab node: nothing to set up\n", 0o644)
        if bare:
            continue
        # The node's own inventory (its agent reaches peers by name), in its private home
        write_inventory(
            n.home / "inventory.yml",
            plan,
            key=Path("/root/.ssh/id_ed25519"),
            known_hosts=Path("/root/.ssh/known_hosts"),
            zfs_backend_bin=zfs_backend_bin,
        )
