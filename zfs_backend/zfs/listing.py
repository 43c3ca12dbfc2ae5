"""Listing as data: the ``zfs list``/``zfs get``/``zpool list`` argv :class:`~zfs_backend.zfs.api.Zfs`
runs to read datasets, snapshots and pool capacity, and their output read back into
:class:`~zfs_backend.zfs.models.Dataset`, :class:`~zfs_backend.zfs.models.Snapshot` and
:class:`~zfs_backend.zfs.models.PoolCapacity`. Pure: nothing here runs a command.

``parsable``: the dialect's ``zfs list -p`` (else ``zfs get -Hp``: zfs-fuse's ``zfs list`` has no
``-p``). ``exact``: ``zpool list -p`` (else human units, approximate). A row (or an origin) with a
name this project does not accept is skipped (the origin: None) with a warning naming ``host``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..errors import InvalidName
from .models import Bookmark, Dataset, PoolCapacity, Snapshot
from .names import BookmarkName, DatasetName, SnapshotName, parse_any, parse_dataset, parse_snapshot
from .parse import ParseError, parse_get, parse_human_size, parse_int, parse_table

__all__ = [
    "datasets_argv",
    "pool_capacity_argv",
    "read_datasets",
    "read_pool_capacity",
    "read_snapshots",
    "snapshots_argv",
]

log = logging.getLogger("zfs_backend.zfs")

_SPACE_PROPS = ("guid", "createtxg", "used", "referenced")
_DATASET_PROPS = ("type", *_SPACE_PROPS, "available", "mountpoint", "mounted", "origin")
_SNAPSHOT_PROPS = (*_SPACE_PROPS, "creation")
_DATASET_COLS = ("name", *_DATASET_PROPS)
_SNAPSHOT_COLS = ("name", *_SNAPSHOT_PROPS)


def _req_int(props: Mapping[str, str], key: str, name: str) -> int:
    v = parse_int(props.get(key, "-"))
    if v is None:
        raise ParseError(f"{name}: no value for {key}")
    return v


def _by_name(text: str, cols: tuple[str, ...], *, parsable: bool) -> dict[str, dict[str, str]]:
    """name -> {property: value}, from a ``list -Hp -o cols`` table or ``get -Hp`` triples."""
    if parsable:
        return {r[0]: dict(zip(cols[1:], r[1:], strict=True)) for r in parse_table(text, len(cols))}
    return parse_get(text)


def _origin(text: str, host: str) -> SnapshotName | None:
    if text in ("-", ""):
        return None
    try:
        return parse_snapshot(text)
    except InvalidName as e:
        log.warning("%s: origin with an unsupported name: %s", host, e)
        return None


def datasets_argv(root: DatasetName | None, recursive: bool, *, parsable: bool) -> list[str]:
    """Filesystems and volumes under ``root`` (all when None; ``-r`` only with a root)."""
    where = [str(root)] if root is not None else []
    rflag = ["-r"] if recursive and root is not None else []
    if parsable:
        cols = ",".join(_DATASET_COLS)
        return ["zfs", "list", "-Hp", *rflag, "-t", "filesystem,volume", "-o", cols, *where]
    return ["zfs", "get", "-Hp", *rflag, "-o", "name,property,value", ",".join(_DATASET_PROPS), *where]


def read_datasets(text: str, *, parsable: bool, host: str) -> list[Dataset]:
    """The output of :func:`datasets_argv` as datasets, sorted by name."""
    out = []
    for name, props in _by_name(text, _DATASET_COLS, parsable=parsable).items():
        if props.get("type") not in ("filesystem", "volume"):
            continue
        try:
            ds_name = parse_dataset(name)
        except InvalidName as e:
            log.warning("%s: skipping dataset with an unsupported name: %s", host, e)
            continue
        mp = props.get("mountpoint", "-")
        out.append(
            Dataset(
                name=ds_name,
                type=props["type"],
                guid=_req_int(props, "guid", name),
                createtxg=_req_int(props, "createtxg", name),
                used=_req_int(props, "used", name),
                referenced=_req_int(props, "referenced", name),
                available=_req_int(props, "available", name),
                mountpoint=None if mp in ("-", "none", "legacy") else mp,
                mounted={"yes": True, "no": False}.get(props.get("mounted", "-")),
                origin=_origin(props.get("origin", "-"), host),
            )
        )
    return sorted(out, key=lambda d: d.name)


def snapshots_argv(*datasets: DatasetName, parsable: bool) -> list[str]:
    """The snapshots of ``datasets`` (zfs-fuse, no ``list -p`` nor ``get -t``: depth 1 = each dataset,
    its snapshots and children, which :func:`read_snapshots` leaves out), in one command."""
    names = [str(d) for d in datasets]
    if parsable:
        cols = ",".join(_SNAPSHOT_COLS)
        return ["zfs", "list", "-Hp", "-t", "snapshot", "-d", "1", "-o", cols, *names]
    props = ",".join(_SNAPSHOT_PROPS)
    return ["zfs", "get", "-Hp", "-d", "1", "-o", "name,property,value", props, *names]


def read_snapshots(text: str, dataset: DatasetName, *, parsable: bool, host: str) -> list[Snapshot]:
    """The output of :func:`snapshots_argv`: the snapshots of ``dataset`` itself, sorted by createtxg."""
    prefix = f"{dataset}@"
    out = []
    for name, props in _by_name(text, _SNAPSHOT_COLS, parsable=parsable).items():
        if not name.startswith(prefix):
            continue
        try:
            snap = parse_snapshot(name)
        except InvalidName as e:
            log.warning("%s: skipping snapshot with an unsupported name: %s", host, e)
            continue
        out.append(
            Snapshot(
                name=snap,
                guid=_req_int(props, "guid", name),
                createtxg=_req_int(props, "createtxg", name),
                used=_req_int(props, "used", name),
                referenced=_req_int(props, "referenced", name),
                creation=_req_int(props, "creation", name),
            )
        )
    return sorted(out, key=lambda s: (s.createtxg, s.name.snap))


def read_bookmarks(text: str, dataset: DatasetName, *, host: str) -> list[Bookmark]:
    """``zfs list -Hp -t bookmark -d 1 -o name,guid,createtxg DATASET``: its own bookmarks, by createtxg.
    A line that does not parse (name, numbers) is skipped with a warning: input from a command."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0].startswith(f"{dataset}#"):
            continue
        try:
            mark = parse_any(parts[0])
            if not isinstance(mark, BookmarkName):
                continue
            out.append(Bookmark(mark, int(parts[1]), int(parts[2])))
        except (InvalidName, ValueError) as e:
            log.warning("%s: skipping a bookmark line %r: %s", host, line[:200], e)
    return sorted(out, key=lambda b: (b.createtxg, b.mark))


def pool_capacity_argv(pool: str, *, exact: bool) -> list[str]:
    """``zpool list`` of one (validated) pool: name, size, allocated, free."""
    return ["zpool", "list", "-Hp" if exact else "-H", "-o", "name,size,allocated,free", pool]


def read_pool_capacity(text: str, pool: str, *, exact: bool) -> PoolCapacity:
    """The output of :func:`pool_capacity_argv` (human units, approximate, unless ``exact``)."""
    rows = parse_table(text, 4)
    if len(rows) != 1:
        raise ParseError(f"zpool list {pool}: expected one row, got {len(rows)}")
    parse = parse_int if exact else parse_human_size
    size, alloc, free = (parse(v) for v in rows[0][1:])
    if size is None or alloc is None or free is None:
        raise ParseError(f"zpool list {pool}: missing size/allocated/free: {rows[0]!r}")
    return PoolCapacity(pool=pool, size=size, allocated=alloc, free=free, exact=exact)
