"""The lab itself: nodes behave like separate machines reached over SSH with strict host keys."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from zfs_backend.config import Settings
from zfs_backend.errors import AddressRangeTaken, HostKeyMismatch, LabError, UnknownNode
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset


def test_status_reports_every_node_alive(lab: Lab) -> None:
    st = lab.status()
    assert [s.name for s in st] == ["node1", "node2", "node3"]
    for s in st:
        assert s.link_up
        assert s.services["zfs-fuse"] and s.services["sshd"]
        assert s.pool_size and s.pool_size > 900 << 20


def test_second_up_reports_running_lab(lab: Lab) -> None:
    assert lab.up(nodes=3) is False
    with pytest.raises(LabError, match="already up with 3 nodes"):
        lab.up(nodes=2)


def test_nodes_have_own_hostname_root_and_files(lab: Lab, nodes: dict[str, SSHHost]) -> None:
    assert nodes["node1"].run(["hostname"]).text.strip() == "node1"
    assert nodes["node2"].run(["hostname"]).text.strip() == "node2"
    nodes["node1"].run(["sh", "-c", "echo only-on-node1 > /etc/zb-test-marker"])
    assert nodes["node2"].run(["test", "-e", "/etc/zb-test-marker"], check=False).returncode == 1
    assert not Path("/etc/zb-test-marker").exists()
    nodes["node1"].run(["rm", "/etc/zb-test-marker"])
    # the controller's lab state (private keys) is hidden from nodes
    r = nodes["node1"].run(["ls", str(lab.layout.ssh_dir)], check=False)
    assert r.returncode != 0


def test_node_to_node_stream_with_checksums(
    lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    """node1 streams to node2 over its own SSH client config (strict host keys, its own narrow key): a
    bare ``zfs recv`` nobody granted is refused by node2's ``peer-exec`` and leaves nothing; the same
    stream under the controller's grant (``snapshot_replicate``) arrives byte for byte."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
    from replication_helpers import assert_success, replicate

    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")
    n1, n2 = nodes["node1"], nodes["node2"]
    for n in (n1, n2):
        n.run(
            ["sh", "-c", "zfs destroy -r tank/lt 2>/dev/null; zfs destroy -r tank/lt-copy 2>/dev/null; true"]
        )
    n1.run(["zfs", "create", "tank/lt"])
    n1.run(["dd", "if=/dev/urandom", "of=/tank/lt/data", "bs=1M", "count=16", "status=none"])
    n1.run(["zfs", "snapshot", "tank/lt@s1"])
    want = n1.run(["sha256sum", "/tank/lt/data"]).text.split()[0]
    bare = n1.run(
        ["sh", "-c", "zfs send tank/lt@s1 | ssh node2 zfs recv tank/lt-copy"], timeout=120, check=False
    )
    assert bare.returncode != 0 and "no granted claim" in bare.err_text
    assert not Zfs(n2).exists(parse_dataset("tank/lt-copy"))
    assert_success(replicate(lab_settings, "node1:tank/lt@s1", "node2:tank/lt-copy"))
    got = n2.run(["sha256sum", "/tank/lt-copy/data"]).text.split()[0]
    assert got == want
    guid1 = n1.run(["zfs", "get", "-Hp", "-o", "value", "guid", "tank/lt@s1"]).text.strip()
    guid2 = n2.run(["zfs", "get", "-Hp", "-o", "value", "guid", "tank/lt-copy@s1"]).text.strip()
    assert guid1 == guid2
    Zfs(n1).destroy(parse_dataset("tank/lt"), recursive=True)
    Zfs(n2).destroy(parse_dataset("tank/lt-copy"), recursive=True)  # retries "busy" right after recv


def test_controller_streams_through_openssh(nodes: dict[str, SSHHost]) -> None:
    payload = os.urandom(3 << 20)
    p = subprocess.run(
        nodes["node3"].stream_argv(["sha256sum"]), input=payload, capture_output=True, check=True
    )
    assert p.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def test_bad_host_key_is_refused(lab: Lab, lab_settings: Settings, tmp_path: Path) -> None:
    spec = load_inventory(lab_settings.inventory).node("node1")
    other = (lab.layout.node(2).dir / "keys" / "ssh_host_ed25519_key.pub").read_text().split()
    bad = tmp_path / "known_hosts"
    bad.write_text(f"node1,{spec.address} {other[0]} {other[1]}\n")
    host = SSHHost.from_spec(spec, known_hosts=bad)
    with pytest.raises(HostKeyMismatch):
        host.run(["true"])
    r = subprocess.run(host.stream_argv(["true"], multiplex=False), capture_output=True, text=True)
    assert r.returncode == 255 and "host key" in r.stderr.lower()


def test_exec_passes_exit_code_and_stdin(lab: Lab) -> None:
    argv = lab.exec_argv("node2", ["sh", "-c", "cat; hostname; exit 7"])
    r = subprocess.run(argv, input=b"hello\n", capture_output=True)
    assert r.returncode == 7 and r.stdout == b"hello\nnode2\n"
    with pytest.raises(UnknownNode):
        lab.exec_argv("node9", ["true"])


def test_shape_and_link(lab: Lab, nodes: dict[str, SSHHost]) -> None:
    lab.shape("node3", 80_000_000)
    try:
        assert lab.status()[2].shaped_bps == 80_000_000
    finally:
        lab.shape("node3", None)
    assert lab.status()[2].shaped_bps is None
    lab.link("node3", up=False)
    try:
        assert not lab.status()[2].link_up
        r = subprocess.run(
            ["ssh", "-F", str(lab.layout.ssh_config), "-o", "ConnectTimeout=1", "node3", "true"],
            capture_output=True,
        )
        assert r.returncode == 255
    finally:
        lab.link("node3", up=True)
    assert nodes["node3"].run(["true"]).returncode == 0


def test_restart_zfs_fuse_keeps_pool(lab: Lab, nodes: dict[str, SSHHost]) -> None:
    n = nodes["node2"]
    n.run(["zfs", "create", "tank/persist"])
    lab.restart_service("node2", "zfs-fuse", hard=True)
    assert n.run(["zfs", "list", "-H", "-o", "name", "tank/persist"]).text.strip() == "tank/persist"
    n.run(["zfs", "destroy", "tank/persist"])


def test_address_range_taken_is_refused(lab: Lab, tmp_path: Path) -> None:
    from zfs_backend.config import load_settings

    other = Lab(
        load_settings(
            {"ZFS_BACKEND_HOME": str(tmp_path / "h"), "ZFS_BACKEND_LAB_NETWORK": str(lab.layout.network)}
        )
    )
    with pytest.raises(AddressRangeTaken, match="already in use"):
        other.up(nodes=1)
    assert not (tmp_path / "h" / "lab").exists() or not other.is_up()
