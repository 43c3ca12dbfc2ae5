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
from .namecheck import (
    COMPONENT,
    MAX_NAME_LEN,
    MAX_PROPERTY_VALUE_LEN,
    check_common,
    check_component,
    check_dataset_name,
    fail,
    quote,
    validate_pool,
)

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

_NODE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NATIVE_PROP = re.compile(r"[a-z][a-z0-9_]*(@[A-Za-z0-9_.:-]+)?")
_USER_PROP = re.compile(r"[a-z][a-z0-9_:.-]*")


@dataclass(frozen=True, order=True)
class DatasetName:
    """A validated filesystem/volume name, ``pool/a/b``."""

    name: str

    def __post_init__(self) -> None:
        check_dataset_name(self.name)

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
        raise fail(kind, full, "at most one '@' or '#' is allowed")
    check_component(kind, full, short, what)


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
        check_common("snapshot", full)
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
        check_common("bookmark", full)
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
    check_common("snapshot", text)
    if text.count("@") != 1 or "#" in text:
        raise fail("snapshot", text, "expected exactly one '@' and no '#'")
    ds, _, snap = text.partition("@")
    try:
        dataset = DatasetName(ds)
    except InvalidName as e:
        raise fail("snapshot", text, str(e).split(": ", 1)[-1]) from None
    return SnapshotName(dataset, snap)


def parse_any(text: str) -> AnyName:
    """Parse a dataset, snapshot (``@``) or bookmark (``#``) name."""
    check_common("dataset", text)
    n_at, n_hash = text.count("@"), text.count("#")
    if n_at + n_hash > 1:
        raise fail("dataset", text, "at most one '@' or '#' is allowed")
    if n_at:
        return parse_snapshot(text)
    if n_hash:
        ds, _, mark = text.partition("#")
        try:
            dataset = DatasetName(ds)
        except InvalidName as e:
            raise fail("bookmark", text, str(e).split(": ", 1)[-1]) from None
        return BookmarkName(dataset, mark)
    return DatasetName(text)


def validate_node(name: str) -> str:
    """Return ``name`` if it is a valid node name (lowercase hostname label)."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid node name {name!r}: empty or not a string")
    if name.startswith("-"):
        raise fail("node", name, "must not start with '-'")
    if not _NODE.fullmatch(name):
        raise fail("node", name, "expected [a-z0-9][a-z0-9-]{0,62} (lowercase)")
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
        raise InvalidName(f"invalid node-qualified name {quote(str(text))}: expected NODE:pool/fs[@snap]")
    node, _, rest = text.partition(":")
    return NodeDataset(validate_node(node), parse_any(rest))


def validate_property(name: str) -> str:
    """Return ``name`` if it is a valid property name.

    Native names are ``[a-z][a-z0-9_]*`` (optionally ``written@snap``-style); any name with a colon
    is a user property (``[a-z][a-z0-9_:.-]*``, e.g. ``com.example:role``).
    """
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid property name {name!r}: empty or not a string")
    check_common("property", name)
    if ":" in name:
        if not _USER_PROP.fullmatch(name):
            raise fail("property", name, "user properties are lowercase [a-z][a-z0-9_:.-]*")
    elif "@" in name:
        if not _NATIVE_PROP.fullmatch(name):
            raise fail("property", name, "expected name@snapshot")
        check_component("property", name, name.partition("@")[2], "snapshot name")
    elif not _NATIVE_PROP.fullmatch(name):
        raise fail("property", name, "expected [a-z][a-z0-9_]*; user properties need a ':'")
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
    check_common("hold tag", tag)
    if not COMPONENT.fullmatch(tag):
        raise fail("hold tag", tag, "expected [A-Za-z0-9_.:-]+")
    return tag
