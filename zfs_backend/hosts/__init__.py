"""Reaching a storage node: one interface (:class:`Host`), local, SSH and fake implementations."""

from .base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv
from .fake import FakeHost
from .inventory import Inventory, NodeSpec, connect, load_inventory
from .local import LocalHost
from .ssh import SSHHost, known_hosts_name, validate_address, validate_node_name

__all__ = [
    "DEFAULT_TIMEOUT",
    "CommandResult",
    "FakeHost",
    "Host",
    "Inventory",
    "LocalHost",
    "NodeSpec",
    "SSHHost",
    "check_argv",
    "connect",
    "known_hosts_name",
    "load_inventory",
    "validate_address",
    "validate_node_name",
]
