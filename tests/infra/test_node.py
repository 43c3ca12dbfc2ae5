"""What an operator checks on a deployed storage node, over SSH with testinfra, against any inventory
(the lab's, or ``ZFS_BACKEND_INFRA_INVENTORY``): pool, agent, socket, sshd, keys, the installed project,
NFS, and a replication between two nodes with the data verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

PREFIX = "/opt/zfs-backend"
ENV_FILE = "/etc/zfs-backend/agent.env"


def _var(host, name: str, default):
    return host.ansible.get_variables().get(name, default)


def _each(hosts, check) -> None:
    """Run ``check(name, host)`` on every node and report every node that fails, not only the first."""
    failures = []
    for name, host in sorted(hosts.items()):
        try:
            check(name, host)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


def test_every_node_is_reached(hosts, deployment):
    assert sorted(hosts) == sorted(deployment.node_names())
    assert len(hosts) >= 1


def test_pool_online_and_healthy(hosts):
    def check(name, host):
        pool = _var(host, "zfs_backend_node_pool_name", "tank")
        out = host.check_output(f"zpool list -H -o name,health {pool}")
        assert out.split() == [pool, "ONLINE"], out
        status = host.check_output(f"zpool status -x {pool}")
        assert "healthy" in status, status

    _each(hosts, check)


def test_agent_running_answering_and_healthy(hosts):
    def check(name, host):
        res = host.run(f"{PREFIX}/bin/zfs-backend agent --status --env-file {ENV_FILE}")
        assert res.rc == 0, res.stderr
        health = json.loads(res.stdout)
        assert health["healthy"] is True
        assert health["agent"]["agent"] == "zfs-backend"
        assert health["agent"]["pid"] > 0
        kinds = host.run(f"{PREFIX}/bin/python -c 'import zfs_backend.agent'")
        assert kinds.rc == 0
        pool = _var(host, "zfs_backend_node_pool_name", "tank")
        assert (
            f"ZFS_BACKEND_REPLICA_ROOTS={pool}\n" in host.file(ENV_FILE).content_string
        )  # the role's default

    _each(hosts, check)


def test_agent_socket_is_private(hosts):
    def check(name, host):
        sock = host.file("/run/zfs-backend/agent.sock")
        assert sock.is_socket
        assert sock.user == "root"
        assert sock.mode == 0o600, oct(sock.mode)
        assert host.file("/run/zfs-backend").mode == 0o700

    _each(hosts, check)


def test_sshd_is_hardened_for_replication(hosts):
    def check(name, host):
        conf = _var(host, "zfs_backend_node_sshd_config", "/etc/ssh/sshd_config")
        effective = set(host.check_output(f"sshd -T -f {conf}").splitlines())
        for line in (
            "passwordauthentication no",
            "kbdinteractiveauthentication no",
            "pubkeyauthentication yes",
            "permitrootlogin without-password",
            "permitemptypasswords no",
            "clientaliveinterval 5",
            "clientalivecountmax 3",
        ):
            assert line in effective, f"sshd: {line!r} not in effect"
        assert host.file("/etc/ssh/sshd_config.d/zfs-backend.conf").mode == 0o644

    _each(hosts, check)


def test_keys_are_private_and_narrow(hosts):
    addresses = {name: _var(h, "ansible_host", name) for name, h in hosts.items()}

    def check(name, host):
        for path in ("/root/.ssh/id_ed25519", "/root/.ssh/authorized_keys", "/root/.ssh/config"):
            f = host.file(path)
            assert f.exists and f.user == "root" and f.mode == 0o600, f"{path}: {oct(f.mode)}"
        assert host.file("/root/.ssh").mode == 0o700
        lines = [
            ln for ln in host.file("/root/.ssh/authorized_keys").content_string.splitlines() if ln.strip()
        ]
        peer_lines = [ln for ln in lines if ln.endswith(tuple(f" root@{p}" for p in hosts))]
        assert len(peer_lines) == len(hosts) - 1, lines  # every peer, not the node itself
        for peer in hosts:
            mine = [ln for ln in peer_lines if ln.endswith(f" root@{peer}")]
            if peer == name:
                assert mine == [], mine
                continue
            (line,) = mine
            assert line.startswith(
                f'restrict,from="{addresses[peer]}",'
                f'command="{PREFIX}/bin/zfs-backend peer-exec --peer {peer}" '
            )
        # the controller's key is a line of its own, without the node keys' restrictions
        assert any(not ln.startswith(("restrict", "#")) for ln in lines), lines
        known = host.file("/root/.ssh/known_hosts").content_string
        for peer, addr in addresses.items():
            assert f"{peer},{addr} ssh-ed25519 " in known

    _each(hosts, check)


def test_project_is_importable_from_opt(hosts):
    def check(name, host):
        out = host.check_output(f"{PREFIX}/bin/python -c 'import zfs_backend; print(zfs_backend.__file__)'")
        assert out.startswith(f"{PREFIX}/lib/"), out
        assert host.run(f"{PREFIX}/bin/zfs-backend --version").rc == 0

    _each(hosts, check)


def test_the_agent_uses_pyzfs_where_the_system_has_it(hosts):
    """Where the node's system Python has Debian's python3-pyzfs (OpenZFS), the role links
    ``libzfs_core`` into the agent's virtualenv, and the running agent says (``ping``) it serves local
    calls through it; elsewhere (zfs-fuse) the agent uses the CLI. Only that package (and cffi if the
    virtualenv had none) comes in: the virtualenv still ignores the system's site packages."""

    def check(name, host):
        system = host.run("/usr/bin/python3 -c 'import libzfs_core'").rc == 0
        res = host.run(f"{PREFIX}/bin/zfs-backend agent --status --env-file {ENV_FILE}")
        assert res.rc == 0, res.stderr
        assert json.loads(res.stdout)["agent"]["libzfs_core"] is system, f"system pyzfs: {system}"
        cfg = host.file(f"{PREFIX}/pyvenv.cfg").content_string
        assert "include-system-site-packages = false" in cfg, cfg
        if _var(host, "zfs_backend_node_zfs", "auto") == "openzfs":
            assert system, "an OpenZFS node of this tier has python3-pyzfs (the box carries it)"

    _each(hosts, check)


def test_zstd_for_compressed_streams(hosts):
    """``replicate --compress`` needs zstd on both ends; the agent says it has it (``ping``'s codecs)."""

    def check(name, host):
        assert host.package("zstd").is_installed
        assert host.run("/usr/bin/zstd --version").rc == 0

    _each(hosts, check)


def test_tls_files_are_private_and_name_the_node(hosts):
    """With ``zfs_backend_node_tls_source`` (the lab sets it to what its CA issued), each node holds its
    TLS data channel's files (``replicate --transport tls``), private, its certificate naming it."""
    if not any(_var(h, "zfs_backend_node_tls_source", "") for h in hosts.values()):
        pytest.skip("the inventory gives no zfs_backend_node_tls_source (no TLS files deployed)")

    def check(name, host):
        d = host.file("/etc/zfs-backend/tls")
        assert d.is_directory and d.user == "root" and d.mode == 0o700, oct(d.mode)
        for f in ("ca.pem", "node.pem", "node.key"):
            fh = host.file(f"/etc/zfs-backend/tls/{f}")
            assert fh.exists and fh.user == "root" and fh.mode == 0o600, f"{f}: {oct(fh.mode)}"
        code = (
            "from zfs_backend.hosts.pki import cert_node_names; "
            "print(cert_node_names(open('/etc/zfs-backend/tls/node.pem', 'rb').read()))"
        )
        out = host.check_output(f"{PREFIX}/bin/python -c {json.dumps(code)}")
        assert out.strip() == repr([host.ansible.get_variables()["inventory_hostname"]]), out

    _each(hosts, check)


def test_ganesha_serves_nfs(hosts):
    def check(name, host):
        addr = _var(host, "ansible_host", name)
        for port in (2049, 20048, 111):
            assert (
                host.socket(f"tcp://{port}").is_listening or host.socket(f"tcp://{addr}:{port}").is_listening
            ), f"nothing listens on {port}"
        programs = host.check_output("rpcinfo -p 127.0.0.1")
        assert " 100003 " in programs and " 100005 " in programs, programs  # nfs and mountd registered
        assert host.file("/etc/ganesha/zfs-backend/exports.conf").exists
        pid = host.file("/run/ganesha/ganesha.pid").content_string.strip()
        assert host.run(f"kill -0 {pid}").rc == 0

    _each(hosts, check)


def test_replication_between_two_nodes_verified(hosts, deployment):
    if len(hosts) < 2:
        pytest.skip("needs two storage nodes")
    src_name, dst_name = sorted(hosts)[:2]
    src, dst = hosts[src_name], hosts[dst_name]
    pool = _var(src, "zfs_backend_node_pool_name", "tank")
    fs = f"{pool}/infra-{uuid.uuid4().hex[:8]}"
    try:
        src.check_output(f"zfs create {fs}")
        mnt = src.check_output(f"zfs get -H -o value mountpoint {fs}")
        src.check_output(f"dd if=/dev/urandom of={mnt}/data bs=1M count=8 status=none")
        src.check_output(f"zfs snapshot {fs}@s1")
        env = {
            **os.environ,
            "ZFS_BACKEND_HOME": str(deployment.settings.home),
            "ZFS_BACKEND_INVENTORY": str(deployment.inventory),
        }
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "zfs_backend.cli.main",
                "replicate",
                f"{src_name}:{fs}@s1",
                f"{dst_name}:{fs}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr
        want = src.check_output(f"sha256sum {mnt}/data").split()[0]
        # OpenZFS receives the replica unmounted (recv -u) and read-only: mount it to read it
        if dst.check_output(f"zfs get -H -o value mounted {fs}") != "yes":
            dst.check_output(f"zfs mount {fs}")
        got = dst.check_output(f"sha256sum {mnt}/data").split()[0]
        assert got == want
        guid = f"zfs get -H -o value guid {fs}@s1"
        assert src.check_output(guid) == dst.check_output(guid)
    finally:
        src.run(f"zfs destroy -r {fs}")
        dst.run(f"zfs destroy -r {fs}")
