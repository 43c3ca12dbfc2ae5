"""Validate what goes into an SSH connection: node name, address, user, port and cipher list.

Each validator returns its argument unchanged or raises :class:`~zfs_backend.errors.InvalidName`;
an address never starts with ``-``, so none of these can be read as an option by ``ssh``.
"""

from __future__ import annotations

import re

from ..errors import InvalidName

__all__ = [
    "validate_address",
    "validate_cipher",
    "validate_node_name",
    "validate_port",
    "validate_user",
]

_NODE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_CIPHER_RE = re.compile(r"[A-Za-z0-9@.+-]+(?:,[A-Za-z0-9@.+-]+)*")


def validate_node_name(name: str) -> str:
    """Return ``name`` if it is a lowercase hostname-ish node name (``[a-z0-9][a-z0-9-]{0,62}``)."""
    if not isinstance(name, str) or not _NODE_RE.fullmatch(name):
        raise InvalidName(f"invalid node name {name!r}: want [a-z0-9][a-z0-9-]{{0,62}}")
    return name


def validate_address(address: str) -> str:
    """Return ``address`` if it is a DNS name, an IPv4 or an IPv6 address (never starting with ``-``)."""
    if isinstance(address, str) and (
        _HOSTNAME_RE.fullmatch(address) or (":" in address and _IPV6_RE.fullmatch(address))
    ):
        return address
    raise InvalidName(f"invalid node address {address!r}")


def validate_user(user: str) -> str:
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise InvalidName(f"invalid ssh user {user!r}")
    return user


def validate_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidName(f"invalid ssh port {port!r}")
    return port


def validate_cipher(cipher: str) -> str:
    """Return ``cipher`` if it is a comma-separated OpenSSH cipher list."""
    if not _CIPHER_RE.fullmatch(cipher):
        raise InvalidName(f"invalid ssh cipher {cipher!r}")
    return cipher
