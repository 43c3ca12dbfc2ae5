"""The grammar of ZFS names as plain checks on strings: no classes, no imports beyond ``re``.

``names`` builds its validated name types on these; a node's forced SSH command
(``agent/peer_exec.py``, run once per replication) calls :func:`check_dataset_name` directly, so it
starts without the cost of ``dataclasses`` (which imports ``inspect`` and ``ast``). The rules are
those ``names``' docstring states; errors are :class:`~zfs_backend.errors.InvalidName`.
"""

from __future__ import annotations

import re

from ..errors import InvalidName

__all__ = [
    "COMPONENT",
    "MAX_NAME_LEN",
    "MAX_PROPERTY_VALUE_LEN",
    "check_common",
    "check_component",
    "check_dataset_name",
    "check_dataset_path",
    "fail",
    "quote",
    "validate_pool",
]

MAX_NAME_LEN = 255  # ZFS_MAX_DATASET_NAME_LEN (256) includes the terminating NUL
MAX_PROPERTY_VALUE_LEN = 8191  # ZAP_MAXVALUELEN (8192) includes the NUL

COMPONENT = re.compile(r"[A-Za-z0-9_.:-]+")
_RESERVED_POOL_PREFIXES = ("mirror", "raidz", "draid", "spare")
_RESERVED_POOLS = frozenset({"log"})


def quote(text: str) -> str:
    """The offending input, quoted on one line (ascii() escapes newlines, controls, unicode)."""
    r = ascii(text)
    return r if len(r) <= 80 else r[:76] + "...'"


def fail(kind: str, text: str, why: str) -> InvalidName:
    return InvalidName(f"invalid {kind} name {quote(text)}: {why}")


def check_common(kind: str, text: object, max_len: int = MAX_NAME_LEN) -> str:
    if not isinstance(text, str):
        raise InvalidName(f"invalid {kind} name {text!r}: not a string")
    if not text:
        raise fail(kind, text, "empty")
    if text.startswith("-"):
        raise fail(kind, text, "must not start with '-'")
    if not text.isascii():
        raise fail(kind, text, "only ASCII characters are allowed")
    for ch in text:
        if ch.isspace() or not ch.isprintable():
            raise fail(kind, text, f"contains whitespace or control character {ch!r}")
    if len(text) > max_len:
        raise fail(kind, text, f"longer than {max_len} characters ({len(text)})")
    return text


def check_component(kind: str, text: str, comp: str, what: str) -> None:
    if not comp:
        raise fail(kind, text, f"empty {what}")
    if comp in (".", ".."):
        raise fail(kind, text, f"{what} must not be '.' or '..'")
    if "%" in comp:
        raise fail(kind, text, "'%' is reserved for internal use")
    if not COMPONENT.fullmatch(comp):
        bad = next(c for c in comp if not COMPONENT.fullmatch(c))
        raise fail(kind, text, f"invalid character {bad!r} in {what} {comp!r}")


def _check_pool(kind: str, text: str, pool: str) -> None:
    check_component(kind, text, pool, "pool name")
    if not pool[0].isalpha():
        raise fail(kind, text, "pool name must start with a letter")
    if pool in _RESERVED_POOLS or pool.startswith(_RESERVED_POOL_PREFIXES):
        raise fail(kind, text, f"pool name {pool!r} is reserved")
    if len(pool) >= 2 and pool[0] == "c" and pool[1].isdigit():
        raise fail(kind, text, "pool name must not look like a disk (c[0-9]...)")


def validate_pool(name: str) -> str:
    """Return ``name`` if it is a valid pool name."""
    check_common("pool", name)
    if "/" in name or "@" in name or "#" in name:
        raise fail("pool", name, "a pool name has no '/', '@' or '#'")
    _check_pool("pool", name, name)
    return name


def check_dataset_path(kind: str, text: str, path: str) -> None:
    parts = path.split("/")
    _check_pool(kind, text, parts[0])
    for comp in parts[1:]:
        check_component(kind, text, comp, "component")


def check_dataset_name(text: str) -> str:
    """Return ``text`` if it is a valid dataset (filesystem or volume) name, ``pool/a/b``."""
    check_common("dataset", text)
    if "@" in text or "#" in text:
        raise fail("dataset", text, "a dataset name has no '@' or '#'")
    check_dataset_path("dataset", text, text)
    return text
