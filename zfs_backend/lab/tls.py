"""The lab's TLS files for the replication data channel (``--transport tls``): the controller's CA in the
lab directory (``<lab>/pki``, 0700, files 0600) and, for every node, a key and certificate naming it,
installed in the node's root filesystem as ``/etc/zfs-backend/tls/{ca.pem,node.pem,node.key}`` (0700,
files 0600), where the node's agent and ``peer-exec`` look by default (``replication.tls_channel``).

A node's certificate is issued once and kept across ``lab up`` runs of the same lab directory (its node
directory persists); the CA is made once per lab. Lab nodes provisioned by the ansible role
(``lab up --provision``) get theirs from the role, which copies what the lab issued into
``<lab>/pki/nodes/<node>/`` (the role's ``zfs_backend_node_tls_source``).
"""

from __future__ import annotations

from pathlib import Path

from ..hosts.pki import CA_CERT, NODE_CERT, NODE_KEY, issue_node, write_node_files
from .topology import LabLayout, NodeLayout

__all__ = ["NODE_TLS_DIR", "ca_dir", "install_certs", "node_tls_dir", "role_source"]

#: where a node keeps its TLS files (inside its root filesystem): ``tls_channel.DEFAULT_TLS_DIR``
NODE_TLS_DIR = "etc/zfs-backend/tls"


def ca_dir(lay: LabLayout) -> Path:
    """The controller's CA of this lab."""
    return lay.state_dir / "pki"


def node_tls_dir(node: NodeLayout) -> Path:
    """``node``'s TLS directory, seen from the host (in its overlay's upper layer)."""
    return node.upper / NODE_TLS_DIR


def role_source(lay: LabLayout) -> Path:
    """Where the lab leaves each node's files for the ansible role (``<lab>/pki/nodes/<node>/``: the
    role's ``zfs_backend_node_tls_source``) when the role provisions the nodes."""
    return ca_dir(lay) / "nodes"


def install_certs(lay: LabLayout, plan: list[NodeLayout], *, for_role: bool = False) -> None:
    """Issue every node of ``plan`` a certificate from the lab's CA and install it in the node (kept when
    the node already holds a pair from this CA); ``for_role``: leave them for the ansible role to install
    instead (:func:`role_source`)."""
    ca = ca_dir(lay)
    for node in plan:
        target = role_source(lay) / node.name if for_role else node_tls_dir(node)
        ca_pem = (ca / CA_CERT).read_bytes() if (ca / CA_CERT).exists() else None
        if (
            ca_pem is not None
            and (target / NODE_KEY).exists()
            and (target / NODE_CERT).exists()
            and (target / CA_CERT).exists()
            and (target / CA_CERT).read_bytes() == ca_pem
        ):
            continue
        write_node_files(target, issue_node(ca, node.name))
