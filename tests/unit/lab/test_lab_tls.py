"""The lab's TLS files (``lab/tls.py``): each node gets a pair naming it from the lab's one CA, private,
kept across ``lab up`` runs; for a lab the role provisions, they wait in ``<lab>/pki/nodes/<node>/``
(the role's ``zfs_backend_node_tls_source``)."""

from __future__ import annotations

import stat
from pathlib import Path

from zfs_backend.hosts.pki import cert_node_names
from zfs_backend.lab import tls
from zfs_backend.lab.deploy import role_vars
from zfs_backend.lab.topology import LabLayout, plan_nodes


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_every_node_gets_its_own_certificate_privately_and_keeps_it(tmp_path: Path) -> None:
    lay = LabLayout.for_dir(tmp_path, "198.18.120.0/24")
    plan = plan_nodes(lay, 2)
    tls.install_certs(lay, plan)
    for node in plan:
        d = tls.node_tls_dir(node)
        assert d == node.upper / "etc" / "zfs-backend" / "tls"
        assert _mode(d) == 0o700 and all(_mode(f) == 0o600 for f in d.iterdir())
        assert cert_node_names((d / "node.pem").read_bytes()) == [node.name]
        assert (d / "ca.pem").read_bytes() == (tls.ca_dir(lay) / "ca.pem").read_bytes()
    assert _mode(tls.ca_dir(lay) / "ca.key") == 0o600
    before = (tls.node_tls_dir(plan[0]) / "node.pem").read_bytes()
    tls.install_certs(lay, plan)  # a second lab up
    assert (tls.node_tls_dir(plan[0]) / "node.pem").read_bytes() == before


def test_a_lab_the_role_provisions_leaves_them_for_the_role(tmp_path: Path) -> None:
    lay = LabLayout.for_dir(tmp_path, "198.18.120.0/24")
    plan = plan_nodes(lay, 2)
    tls.install_certs(lay, plan, for_role=True)
    source = role_vars(lay, 1 << 30, provisioned=True)["zfs_backend_node_tls_source"]
    for node in plan:
        assert sorted(p.name for p in (Path(str(source)) / node.name).iterdir()) == [
            "ca.pem",
            "node.key",
            "node.pem",
        ]
        assert not tls.node_tls_dir(node).exists()
