"""Validated names: datasets, snapshots, bookmarks, nodes, properties.

Every name that reaches a zfs/zpool argv passes through here first. The grammar is OpenZFS's
(``zfs_namecheck.c``) made stricter where the extra freedom only invites trouble:

- a component is ``[A-Za-z0-9_.:-]+``: ZFS also allows a space; we reject it (zfs-fuse accepts
  ``pool/fs@a b`` and such names break every line-oriented tool). ASCII only. ``%`` is reserved for
  ZFS's internal clones and never valid.
- components are non-empty and neither ``.`` nor ``..`` (no ``a//b``, no trailing ``/``).
- the pool (first component) starts with a letter, is not reserved (``mirror*``, ``raidz*``,
  ``draid*``, ``spare*``, ``log``) and does not look like a Solaris disk (``c0...``).
- at most one ``@`` (snapshot) or ``#`` (bookmark) in the whole name, never both.
- the whole name is shorter than 256 characters (ZFS_MAX_DATASET_NAME_LEN with its NUL).
- nothing starts with ``-``, so no name can be taken for an option.

Node names are lowercase hostnames (``[a-z0-9][a-z0-9-]{0,62}``); property names are lowercase
(``[a-z][a-z0-9_:.-]*``), and anything that is not a plain native name must be a user property,
which contains a colon. Errors are :class:`~zfs_backend.errors.InvalidName` with one line naming
what was wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from ..errors import InvalidName

__all__ = [
    "MAX_NAME_LEN",
    "AnyName",
    "BookmarkName",
    "DatasetName",
    "NodeDataset",
    "SnapshotName",
    "parse_any",
    "parse_dataset",
    "parse_node_qualified",
    "parse_snapshot",
    "validate_hold_tag",
    "validate_node",
    "validate_pool",
    "validate_property",
    "validate_property_value",
]

MAX_NAME_LEN = 255  # ZFS_MAX_DATASET_NAME_LEN (256) includes the terminating NUL
MAX_PROPERTY_VALUE_LEN = 8191  # ZAP_MAXVALUELEN (8192) includes the NUL

_COMPONENT = re.compile(r"[A-Za-z0-9_.:-]+")
_NODE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NATIVE_PROP = re.compile(r"[a-z][a-z0-9_]*(@[A-Za-z0-9_.:-]+)?")
_USER_PROP = re.compile(r"[a-z][a-z0-9_:.-]*")
_RESERVED_POOL_PREFIXES = ("mirror", "raidz", "draid", "spare")
_RESERVED_POOLS = frozenset({"log"})


def _q(text: str) -> str:
    """The offending input, quoted on one line (ascii() escapes newlines, controls, unicode)."""
    r = ascii(text)
    return r if len(r) <= 80 else r[:76] + "...'"


def _fail(kind: str, text: str, why: str) -> InvalidName:
    return InvalidName(f"invalid {kind} name {_q(text)}: {why}")


def _check_common(kind: str, text: object, max_len: int = MAX_NAME_LEN) -> str:
    if not isinstance(text, str):
        raise InvalidName(f"invalid {kind} name {text!r}: not a string")
    if not text:
        raise _fail(kind, text, "empty")
    if text.startswith("-"):
        raise _fail(kind, text, "must not start with '-'")
    if not text.isascii():
        raise _fail(kind, text, "only ASCII characters are allowed")
    for ch in text:
        if ch.isspace() or not ch.isprintable():
            raise _fail(kind, text, f"contains whitespace or control character {ch!r}")
    if len(text) > max_len:
        raise _fail(kind, text, f"longer than {max_len} characters ({len(text)})")
    return text


def _check_component(kind: str, text: str, comp: str, what: str) -> None:
    if not comp:
        raise _fail(kind, text, f"empty {what}")
    if comp in (".", ".."):
        raise _fail(kind, text, f"{what} must not be '.' or '..'")
    if "%" in comp:
        raise _fail(kind, text, "'%' is reserved for internal use")
    if not _COMPONENT.fullmatch(comp):
        bad = next(c for c in comp if not _COMPONENT.fullmatch(c))
        raise _fail(kind, text, f"invalid character {bad!r} in {what} {comp!r}")


def _check_pool(kind: str, text: str, pool: str) -> None:
    _check_component(kind, text, pool, "pool name")
    if not pool[0].isalpha():
        raise _fail(kind, text, "pool name must start with a letter")
    if pool in _RESERVED_POOLS or pool.startswith(_RESERVED_POOL_PREFIXES):
        raise _fail(kind, text, f"pool name {pool!r} is reserved")
    if len(pool) >= 2 and pool[0] == "c" and pool[1].isdigit():
        raise _fail(kind, text, "pool name must not look like a disk (c[0-9]...)")


def validate_pool(name: str) -> str:
    """Return ``name`` if it is a valid pool name."""
    _check_common("pool", name)
    if "/" in name or "@" in name or "#" in name:
        raise _fail("pool", name, "a pool name has no '/', '@' or '#'")
    _check_pool("pool", name, name)
    return name


def _check_dataset_path(kind: str, text: str, path: str) -> None:
    parts = path.split("/")
    _check_pool(kind, text, parts[0])
    for comp in parts[1:]:
        _check_component(kind, text, comp, "component")


@dataclass(frozen=True, order=True)
class DatasetName:
    """A validated filesystem/volume name, ``pool/a/b``."""

    name: str

    def __post_init__(self) -> None:
        _check_common("dataset", self.name)
        if "@" in self.name or "#" in self.name:
            raise _fail("dataset", self.name, "a dataset name has no '@' or '#'")
        _check_dataset_path("dataset", self.name, self.name)

    @property
    def pool(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.name.split("/"))

    @property
    def parent(self) -> DatasetName | None:
        head, sep, _ = self.name.rpartition("/")
        return DatasetName(head) if sep else None

    @property
    def is_pool_root(self) -> bool:
        return "/" not in self.name

    def child(self, component: str) -> DatasetName:
        return DatasetName(f"{self.name}/{component}")

    def snapshot(self, snap: str) -> SnapshotName:
        return SnapshotName(self, snap)

    def is_descendant_of(self, other: DatasetName) -> bool:
        return self.name.startswith(other.name + "/")

    def __str__(self) -> str:
        return self.name


def _check_short(kind: str, full: str, short: str, what: str) -> None:
    if "@" in short or "#" in short:
        raise _fail(kind, full, "at most one '@' or '#' is allowed")
    _check_component(kind, full, short, what)


@dataclass(frozen=True, order=True)
class SnapshotName:
    """A validated snapshot name: ``dataset@snap``."""

    dataset: DatasetName
    snap: str

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, DatasetName):
            raise InvalidName(f"invalid snapshot name: dataset {self.dataset!r} is not a DatasetName")
        if not isinstance(self.snap, str):
            raise InvalidName(f"invalid snapshot name: {self.snap!r} is not a string")
        full = f"{self.dataset.name}@{self.snap}"
        _check_common("snapshot", full)
        _check_short("snapshot", full, self.snap, "snapshot name")

    @property
    def name(self) -> str:
        return f"{self.dataset.name}@{self.snap}"

    @property
    def pool(self) -> str:
        return self.dataset.pool

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class BookmarkName:
    """A validated bookmark name: ``dataset#mark`` (OpenZFS only)."""

    dataset: DatasetName
    mark: str

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, DatasetName):
            raise InvalidName(f"invalid bookmark name: dataset {self.dataset!r} is not a DatasetName")
        if not isinstance(self.mark, str):
            raise InvalidName(f"invalid bookmark name: {self.mark!r} is not a string")
        full = f"{self.dataset.name}#{self.mark}"
        _check_common("bookmark", full)
        _check_short("bookmark", full, self.mark, "bookmark name")

    @property
    def name(self) -> str:
        return f"{self.dataset.name}#{self.mark}"

    def __str__(self) -> str:
        return self.name


AnyName = Union[DatasetName, SnapshotName, BookmarkName]  # noqa: UP007 - a runtime alias


def parse_dataset(text: str) -> DatasetName:
    return DatasetName(text)


def parse_snapshot(text: str) -> SnapshotName:
    """Parse ``pool/fs@snap``."""
    _check_common("snapshot", text)
    if text.count("@") != 1 or "#" in text:
        raise _fail("snapshot", text, "expected exactly one '@' and no '#'")
    ds, _, snap = text.partition("@")
    try:
        dataset = DatasetName(ds)
    except InvalidName as e:
        raise _fail("snapshot", text, str(e).split(": ", 1)[-1]) from None
    return SnapshotName(dataset, snap)


def parse_any(text: str) -> AnyName:
    """Parse a dataset, snapshot (``@``) or bookmark (``#``) name."""
    _check_common("dataset", text)
    n_at, n_hash = text.count("@"), text.count("#")
    if n_at + n_hash > 1:
        raise _fail("dataset", text, "at most one '@' or '#' is allowed")
    if n_at:
        return parse_snapshot(text)
    if n_hash:
        ds, _, mark = text.partition("#")
        try:
            dataset = DatasetName(ds)
        except InvalidName as e:
            raise _fail("bookmark", text, str(e).split(": ", 1)[-1]) from None
        return BookmarkName(dataset, mark)
    return DatasetName(text)


def validate_node(name: str) -> str:
    """Return ``name`` if it is a valid node name (lowercase hostname label)."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid node name {name!r}: empty or not a string")
    if name.startswith("-"):
        raise _fail("node", name, "must not start with '-'")
    if not _NODE.fullmatch(name):
        raise _fail("node", name, "expected [a-z0-9][a-z0-9-]{0,62} (lowercase)")
    return name


@dataclass(frozen=True)
class NodeDataset:
    """A node-qualified name as written on the command line: ``NODE:pool/fs[@snap]``."""

    node: str
    name: AnyName

    def __post_init__(self) -> None:
        validate_node(self.node)
        if not isinstance(self.name, DatasetName | SnapshotName | BookmarkName):
            raise InvalidName(f"invalid node-qualified name: {self.name!r} is not a validated name")

    def __str__(self) -> str:
        return f"{self.node}:{self.name}"


def parse_node_qualified(text: str) -> NodeDataset:
    """Parse ``NODE:pool/fs@snap``. The node is everything before the first ``:``."""
    if not isinstance(text, str) or ":" not in text:
        raise InvalidName(f"invalid node-qualified name {_q(str(text))}: expected NODE:pool/fs[@snap]")
    node, _, rest = text.partition(":")
    return NodeDataset(validate_node(node), parse_any(rest))


def validate_property(name: str) -> str:
    """Return ``name`` if it is a valid property name.

    Native names are ``[a-z][a-z0-9_]*`` (optionally ``written@snap``-style); any name with a colon
    is a user property (``[a-z][a-z0-9_:.-]*``, e.g. ``com.example:role``).
    """
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid property name {name!r}: empty or not a string")
    _check_common("property", name)
    if ":" in name:
        if not _USER_PROP.fullmatch(name):
            raise _fail("property", name, "user properties are lowercase [a-z][a-z0-9_:.-]*")
    elif "@" in name:
        if not _NATIVE_PROP.fullmatch(name):
            raise _fail("property", name, "expected name@snapshot")
        _check_component("property", name, name.partition("@")[2], "snapshot name")
    elif not _NATIVE_PROP.fullmatch(name):
        raise _fail("property", name, "expected [a-z][a-z0-9_]*; user properties need a ':'")
    return name


def validate_property_value(prop: str, value: str) -> str:
    """Return ``value`` if it can be set safely: one line, no tab or NUL, bounded length."""
    if not isinstance(value, str):
        raise InvalidName(f"invalid value for property {prop!r}: not a string")
    if any(c in value for c in "\n\r\t\0"):
        raise InvalidName(f"invalid value for property {prop!r}: contains a newline, tab or NUL")
    if len(value) > MAX_PROPERTY_VALUE_LEN:
        raise InvalidName(f"invalid value for property {prop!r}: longer than {MAX_PROPERTY_VALUE_LEN}")
    return value


def validate_hold_tag(tag: str) -> str:
    """Return ``tag`` if it is a safe hold tag (same charset as a name component)."""
    _check_common("hold tag", tag)
    if not _COMPONENT.fullmatch(tag):
        raise _fail("hold tag", tag, "expected [A-Za-z0-9_.:-]+")
    return tag
