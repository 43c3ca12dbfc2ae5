"""Who may use a volume: Cinder's connector turned into an NFS attachment, and the connection info.

``initialize_connection(volume, connector)`` records an attachment of ``connector["ip"]`` and grants
the address read-write access to the volume's export
(:meth:`~zfs_backend.driver.nfs.GaneshaExports.attach`); ``terminate_connection`` ends it, and the
address loses access once no attachment of it is left. The attachment's id is
``connector["attachment_id"]`` when the caller gives one (the volume service and the CLI do), else the
client's default attachment (``client-ADDR``). An export grants nobody until then. The address and
the id are validated here, before any command, so a connector without a usable ``ip`` changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .errors import InvalidClient
from .layout import VOLUME_FILE
from .models import Volume
from .nfs import validate_attachment_id, validate_client
from .options import NodeOptions

if TYPE_CHECKING:
    from .zfs_nfs import ZfsNfsDriver

__all__ = ["attachment_id", "client_address", "connect", "connection_info", "disconnect", "same_client_count"]

log = logging.getLogger("zfs_backend.driver")


def client_address(connector: object) -> str:
    """The canonical IP address of Cinder's ``connector`` (its ``ip`` key), or InvalidClient."""
    if not isinstance(connector, Mapping):
        raise InvalidClient("no connector: the client's address (connector['ip']) is needed to grant access")
    ip = connector.get("ip")
    if ip is None or ip == "":
        raise InvalidClient("the connector has no 'ip': the client's address is needed to grant access")
    return validate_client(ip)


def attachment_id(connector: object) -> str | None:
    """The attachment id the connector names (``attachment_id``), validated; None when it names none."""
    value = connector.get("attachment_id") if isinstance(connector, Mapping) else None
    return None if value is None or value == "" else validate_attachment_id(value)


def same_client_count(connectors: Iterable[object], client: str) -> int:
    """How many of ``connectors`` (e.g. those of Cinder's attachments of one volume) are from the
    address ``client``; a connector without a valid ``ip`` counts for nobody."""
    n = 0
    for c in connectors:
        try:
            n += client_address(c) == client
        except InvalidClient:
            continue
    return n


def connection_info(options: NodeOptions, location: str) -> dict[str, Any]:
    """``initialize_connection``'s answer: the export ``ADDR:/path``, the file, the mount options."""
    if options.nfs_versions[0] == 3:
        opts = f"-o vers=3,proto=tcp,port={options.nfs_port},mountport={options.mount_port},nolock"
    else:
        opts = f"-o vers=4.0,proto=tcp,port={options.nfs_port}"
    return {
        "driver_volume_type": "nfs",
        "data": {
            "export": location,
            "name": VOLUME_FILE,
            "options": opts,
            "format": "raw",
            "access_mode": "rw",
        },
    }


def connect(d: ZfsNfsDriver, volume: Volume, connector: object) -> dict[str, Any]:
    """``initialize_connection``: record an attachment of ``connector["ip"]`` (id:
    ``connector["attachment_id"]``, else the client's default one) and grant the address read-write
    access to the volume's export; the connection info."""
    client = client_address(connector)
    attachment = attachment_id(connector)
    ds = d.dataset_of(volume)
    d.require(ds, f"volume {volume.id}")
    if d.exports.attach(ds, client, attachment) is None:
        raise ConfigError(f"volume {volume.id} is not exported: call create_export first")
    log.info("%s: granted %s access to %s (%s)", d.options.node, client, ds, attachment or "default")
    return connection_info(d.options, d.location(ds))


def disconnect(d: ZfsNfsDriver, volume: Volume, connector: object) -> bool:
    """``terminate_connection``: end the attachment ``connector["attachment_id"]`` names, else every
    attachment of ``connector["ip"]``; the address loses access once none of its attachments is left.
    A ``None`` connector (Cinder's force detach) ends every attachment of every client. Ending what
    was not attached, or of a volume that is gone, is not an error. True when the address stays
    granted through another attachment (Cinder's "shared connection")."""
    ds = d.dataset_of(volume)
    client = None
    if connector is None:
        ended, revoked = d.exports.detach(ds)
    else:
        client = client_address(connector)
        attachment = attachment_id(connector)
        ended, revoked = d.exports.detach(ds, attachment=attachment, client=client)
    if revoked:
        log.info("%s: revoked %s from %s", d.options.node, ", ".join(revoked), volume.name)
    return bool(ended) and client is not None and client not in revoked
