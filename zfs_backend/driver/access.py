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

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InvalidClient
from .layout import VOLUME_FILE
from .nfs import validate_attachment_id, validate_client
from .options import NodeOptions

__all__ = ["attachment_id", "client_address", "connection_info", "same_client_count"]


def client_address(connector: object) -> str:
    """The canonical IP address of Cinder's ``connector`` (its ``ip`` key), or InvalidClient."""
    if not isinstance(connector, Mapping):
        raise InvalidClient("no connector: the client's address (connector['ip']) is needed to grant access")
    ip = connector.get("ip")
    if ip is None or ip == "":
        raise InvalidClient("the connector has no 'ip': the client's address is needed to grant access")
    return validate_client(ip)


def attachment_id(connector: Mapping[str, Any]) -> str | None:
    """The attachment id the connector names (``attachment_id``), validated; None when it names none."""
    value = connector.get("attachment_id")
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
