"""The controller's small certificate authority for the TLS data channel (``--transport tls``, issue 25).

The controller keeps one CA (``ca.key`` and ``ca.pem`` in a private directory: 0700, files 0600, see
:mod:`.private`) and issues each storage node a key and certificate naming it: subject CN and the one
SAN ``DNS:<node>`` are the node's validated name, both ``serverAuth`` and ``clientAuth`` (a node is the
listener when it receives, the client when it sends). Nothing else is trusted by the channel: a node's
TLS context trusts this CA alone (not the system's), and the channel checks the peer's name against the
node the grant names (``replication.tls_channel``).

Keys are ECDSA P-256 (a TLS 1.3 handshake in a millisecond or two; the bulk cipher is AES-GCM either
way). A node's files, as installed on the node (``zfs-backend lab up`` for the lab, the ansible role
for real nodes): ``ca.pem``, ``node.pem``, ``node.key`` in ``/etc/zfs-backend/tls`` (0700; the key and
the others 0600). Issuing again replaces a node's pair; the CA is made once and kept.

Uses the ``cryptography`` package (a dependency of paramiko, already installed with the project).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ZfsBackendError
from ..private import private_dir, private_open
from .validate import validate_node_name

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "NODE_CERT",
    "NODE_KEY",
    "NodeCredentials",
    "cert_node_names",
    "ensure_ca",
    "issue_node",
    "write_node_files",
    "write_private_bytes",
]

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
NODE_KEY = "node.key"
NODE_CERT = "node.pem"
CA_DAYS = 3650
NODE_DAYS = 825


@dataclass(frozen=True)
class NodeCredentials:
    """One node's TLS files: its private key, its certificate and the CA's certificate (PEM)."""

    node: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created 0600 (replacing its content; a symlink is refused)."""
    fd = private_open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _new_key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def ensure_ca(directory: Path, *, name: str = "zfs-backend storage CA") -> bytes:
    """The CA in ``directory`` (made with a new key when ``ca.key`` is missing); returns its certificate
    (PEM). The directory is made 0700 and the files 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    private_dir(directory)
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    if key_path.exists() and cert_path.exists():
        return cert_path.read_bytes()
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    write_private_bytes(key_path, _pem_key(key))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    write_private_bytes(cert_path, pem)
    return pem


def issue_node(directory: Path, node: str, *, days: int = NODE_DAYS) -> NodeCredentials:
    """A new key and certificate for ``node`` (a validated node name: CN and the only SAN), signed by the
    CA in ``directory`` (made if missing)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    node = validate_node_name(node)
    ca_pem = ensure_ca(directory)
    try:
        ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
    except (OSError, ValueError) as e:
        raise ConfigError(f"the CA in {directory} is unreadable: {e}") from None
    key = _new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return NodeCredentials(
        node=node,
        key_pem=_pem_key(key),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        ca_pem=ca_pem,
    )


def write_node_files(directory: Path, creds: NodeCredentials) -> None:
    """Install ``creds`` as a node's TLS files in ``directory`` (0700; every file 0600)."""
    private_dir(directory)
    for name, data in ((NODE_KEY, creds.key_pem), (NODE_CERT, creds.cert_pem), (CA_CERT, creds.ca_pem)):
        write_private_bytes(directory / name, data)


def cert_node_names(cert_pem: bytes) -> list[str]:
    """The DNS names a certificate's SAN lists (what the channel matches a node's name against)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.DNSName))


def main(argv: list[str] | None = None) -> int:
    """``python -m zfs_backend.hosts.pki --ca DIR --out DIR NODE…``: issue each NODE a key and certificate
    from the CA in ``--ca`` (made if missing) into ``OUT/NODE/`` (what the ansible role's
    ``zfs_backend_node_tls_source`` points at)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m zfs_backend.hosts.pki --ca DIR --out DIR NODE..."
    if len(args) < 5 or args[0] != "--ca" or args[2] != "--out":
        print(usage, file=sys.stderr)
        return 2
    ca, out, nodes = Path(args[1]), Path(args[3]), args[4:]
    try:
        for node in nodes:
            write_node_files(out / validate_node_name(node), issue_node(ca, node))
    except (ZfsBackendError, ValueError, OSError) as e:
        print(f"zfs_backend.hosts.pki: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
