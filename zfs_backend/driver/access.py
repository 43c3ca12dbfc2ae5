"""Who may use a volume: Cinder's connector turned into an NFS grant, and the connection info.

``initialize_connection(volume, connector)`` grants ``connector["ip"]`` read-write access to the
volume's export (:meth:`~zfs_backend.driver.nfs.GaneshaExports.grant`) and
``terminate_connection`` revokes it; an export grants nobody until then. The address is validated
here, before any command, so a connector without a usable ``ip`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidClient
from .layout import VOLUME_FILE
from .nfs import validate_client
from .options import NodeOptions

__all__ = ["client_address", "connection_info"]


def client_address(connector: object) -> str:
    """The canonical IP address of Cinder's ``connector`` (its ``ip`` key), or InvalidClient."""
    if not isinstance(connector, Mapping):
        raise InvalidClient("no connector: the client's address (connector['ip']) is needed to grant access")
    ip = connector.get("ip")
    if ip is None or ip == "":
        raise InvalidClient("the connector has no 'ip': the client's address is needed to grant access")
    return validate_client(ip)


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
