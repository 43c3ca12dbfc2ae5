"""The SSH ciphers a replication's stream may use: the default, and the only ones a request may pick.

A request names its cipher (``Request.cipher``); the agent accepts nothing outside this list, so a
caller cannot weaken the stream's encryption or pass anything that ``ssh -c`` would read otherwise.
(``zfs_backend.hosts.validate.validate_cipher`` checks the syntax of an operator's configured list.)
"""

from __future__ import annotations

from ..errors import InvalidName

__all__ = ["CIPHERS", "DEFAULT_CIPHER", "validate_cipher"]

DEFAULT_CIPHER = "aes128-gcm@openssh.com"
#: the ciphers a request may pick for its stream (all authenticated or CTR modes OpenSSH 9 offers)
CIPHERS = frozenset(
    {
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    }
)


def validate_cipher(cipher: str) -> str:
    if not isinstance(cipher, str) or cipher not in CIPHERS:
        raise InvalidName(f"invalid ssh cipher {cipher!r}: one of {', '.join(sorted(CIPHERS))}")
    return cipher
