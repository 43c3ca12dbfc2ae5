"""The controller's CA (``hosts.pki``): private files, certificates that name their node, a CA kept."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from zfs_backend.errors import InvalidName
from zfs_backend.hosts import pki


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_the_ca_is_private_and_made_once(tmp_path: Path) -> None:
    ca = tmp_path / "pki"
    first = pki.ensure_ca(ca)
    assert _mode(ca) == 0o700
    assert _mode(ca / pki.CA_KEY) == 0o600 and _mode(ca / pki.CA_CERT) == 0o600
    assert pki.ensure_ca(ca) == first  # kept, not replaced


def test_a_node_certificate_names_its_node_and_chains_to_the_ca(tmp_path: Path) -> None:
    from cryptography import x509

    creds = pki.issue_node(tmp_path / "pki", "node2")
    assert pki.cert_node_names(creds.cert_pem) == ["node2"]
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    ca = x509.load_pem_x509_certificate(creds.ca_pem)
    cert.verify_directly_issued_by(ca)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {o.dotted_string for o in eku} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}


def test_node_files_are_private(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "zfs-backend" / "tls"
    pki.write_node_files(target, pki.issue_node(tmp_path / "pki", "node1"))
    assert _mode(target) == 0o700
    for name in (pki.NODE_KEY, pki.NODE_CERT, pki.CA_CERT):
        assert _mode(target / name) == 0o600


@pytest.mark.parametrize("bad", ["Node1", "-node", "node1/../x", ""])
def test_a_bad_node_name_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidName):
        pki.issue_node(tmp_path / "pki", bad)
    assert not (tmp_path / "pki").exists()  # refused before the CA is even made


def test_the_command_issues_files_for_the_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert pki.main(["--ca", str(tmp_path / "ca"), "--out", str(out), "node1", "node2"]) == 0
    assert pki.cert_node_names((out / "node2" / pki.NODE_CERT).read_bytes()) == ["node2"]
    assert pki.main(["--ca", str(tmp_path / "ca"), "--out", str(out), "Bad_Name"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert pki.main(["node1"]) == 2
