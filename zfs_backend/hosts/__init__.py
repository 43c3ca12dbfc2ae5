"""Reaching a storage node: one interface (:class:`Host`), local, SSH and fake implementations, and
:class:`PeerHost` (another node as reached from this one with OpenSSH: a replication stream's ``ssh``)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv
    from .fake import FakeHost
    from .inventory import Inventory, connect, load_inventory
    from .local import LocalHost
    from .node_spec import NodeSpec
    from .paramiko_conn import known_hosts_name
    from .peer import PeerHost
    from .ssh import SSHHost
    from .validate import validate_address, validate_node_name

__all__ = [
    "DEFAULT_TIMEOUT",
    "CommandResult",
    "FakeHost",
    "Host",
    "Inventory",
    "LocalHost",
    "NodeSpec",
    "PeerHost",
    "SSHHost",
    "check_argv",
    "connect",
    "known_hosts_name",
    "load_inventory",
    "validate_address",
    "validate_node_name",
]

_EXPORTS = {
    "CommandResult": "base",
    "DEFAULT_TIMEOUT": "base",
    "FakeHost": "fake",
    "Host": "base",
    "Inventory": "inventory",
    "LocalHost": "local",
    "NodeSpec": "node_spec",
    "PeerHost": "peer",
    "SSHHost": "ssh",
    "check_argv": "base",
    "connect": "inventory",
    "known_hosts_name": "paramiko_conn",
    "load_inventory": "inventory",
    "validate_address": "validate",
    "validate_node_name": "validate",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
