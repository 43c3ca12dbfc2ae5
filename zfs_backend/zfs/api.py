"""Typed zfs/zpool verbs on one host: ``Zfs(host)``.

Every command goes through :func:`zfs_backend.zfs.cmd.run` (the chokepoint) and takes only
validated names (:mod:`~zfs_backend.zfs.names`). Output is read in exact bytes: ``-p`` where the
dialect has it, else ``zfs get -Hp`` (zfs-fuse's ``zfs list`` has no ``-p``), and ``zpool list``
human units on zfs-fuse (approximate, flagged ``exact=False``); the listings' argv and parsing are
in :mod:`~zfs_backend.zfs.listing`. On this machine (a ``LocalHost``, e.g. a node's agent) where pyzfs is
importable, existence, single snapshots, holds and bookmarks go through ``libzfs_core`` instead
(:mod:`~zfs_backend.zfs.lzc`; ``lzc=False`` forces the CLI), with the same typed results and errors.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..errors import DatasetBusy, DatasetNotFound, InvalidName, UnsupportedFeature, UsageError
from ..hosts.base import DEFAULT_TIMEOUT, CommandResult, Host
from . import cmd, listing, lzc
from .dialect import Dialect, probe
from .estimate import estimate_from_space
from .models import Bookmark, Dataset, PoolCapacity, RecvSpec, SendSpec, Snapshot
from .names import (
    AnyName,
    BookmarkName,
    DatasetName,
    SnapshotName,
    parse_snapshot,
    validate_hold_tag,
    validate_pool,
    validate_property,
    validate_property_value,
)
from .parse import parse_int, parse_send_estimate

__all__ = ["Zfs"]

log = logging.getLogger("zfs_backend.zfs")

_TOKEN = re.compile(r"[0-9A-Za-z-]{1,8192}")


def _opts(props: Mapping[str, str] | None) -> list[str]:
    out: list[str] = []
    for k, v in (props or {}).items():
        out += ["-o", f"{validate_property(k)}={validate_property_value(k, v)}"]
    return out


def _expect(name: object, *types: type) -> None:
    if not isinstance(name, types):
        want = " or ".join(t.__name__ for t in types)
        raise UsageError(f"expected a validated {want}, got {name!r}")


class Zfs:
    """zfs/zpool on one host. ``clock``/``sleep`` are injectable for the busy-retry loop."""

    def __init__(
        self,
        host: Host,
        *,
        dialect: Dialect | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        lzc: bool | None = None,
    ) -> None:
        self.host = host
        self._lzc = lzc
        self._dialect = dialect
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Zfs({self.host!r})"

    @property
    def lzc(self) -> bool:
        """Whether existence, snapshots, holds and bookmarks go through libzfs_core (``lzc`` given, or
        :func:`.lzc.usable_for` the host: importable, and the host is this machine)."""
        if self._lzc is None:
            self._lzc = lzc.usable_for(self.host)
        return self._lzc

    @property
    def dialect(self) -> Dialect:
        """The host's dialect, probed once (cached per host)."""
        if self._dialect is None:
            self._dialect = probe(self.host)
        return self._dialect

    def _run(self, argv: Sequence[str], *, check: bool = True) -> CommandResult:
        return cmd.run(self.host, argv, timeout=self.timeout, check=check)

    def _need(self, flag: str, what: str) -> None:
        if not getattr(self.dialect, flag):
            raise UnsupportedFeature(f"{self.host.name}: {what} is not available on {self.dialect}")

    # ---------------------------------------------------------------- queries

    def list_datasets(self, root: DatasetName | None = None, recursive: bool = True) -> list[Dataset]:
        """Filesystems and volumes under ``root`` (all when None), sorted by name."""
        if root is not None:
            _expect(root, DatasetName)
        parsable = self.dialect.parsable_list
        res = self._run(listing.datasets_argv(root, recursive, parsable=parsable))
        return listing.read_datasets(res.text, parsable=parsable, host=self.host.name)

    def list_snapshots(self, dataset: DatasetName) -> list[Snapshot]:
        """The snapshots of ``dataset`` itself (not of its children), sorted by createtxg."""
        return self.list_snapshots_of([dataset])[dataset]

    def list_snapshots_of(self, datasets: list[DatasetName]) -> dict[DatasetName, list[Snapshot]]:
        """:meth:`list_snapshots` of each of ``datasets`` (each must exist), in one command."""
        for d in datasets:
            _expect(d, DatasetName)
        parsable = self.dialect.parsable_list
        text = self._run(listing.snapshots_argv(*datasets, parsable=parsable)).text if datasets else ""
        return {d: listing.read_snapshots(text, d, parsable=parsable, host=self.host.name) for d in datasets}

    def exists(self, name: AnyName) -> bool:
        _expect(name, DatasetName, SnapshotName, BookmarkName)
        if self.lzc and not isinstance(name, BookmarkName):  # lzc_exists says False for a bookmark
            return lzc.exists(name)
        try:
            self._run(["zfs", "get", "-H", "-o", "value", "type", str(name)])
        except DatasetNotFound:
            return False
        return True

    def get(self, name: AnyName, props: Iterable[str]) -> dict[str, str]:
        """Raw ``-p`` values of ``props`` (``-`` where unset/not applicable)."""
        _expect(name, DatasetName, SnapshotName, BookmarkName)
        wanted = [validate_property(p) for p in props]
        if not wanted:
            return {}
        res = self._run(["zfs", "get", "-Hp", "-o", "property,value", ",".join(wanted), str(name)])
        return {
            row[0]: row[1]
            for row in (ln.split("\t", 1) for ln in res.text.splitlines() if ln)
            if len(row) == 2
        }

    def get_int(self, name: AnyName, prop: str) -> int | None:
        return parse_int(self.get(name, [prop]).get(prop, "-"))

    def set(self, name: AnyName, prop: str, value: str) -> None:
        _expect(name, DatasetName, SnapshotName)
        self._run(
            ["zfs", "set", f"{validate_property(prop)}={validate_property_value(prop, value)}", str(name)]
        )

    def get_with_source(self, name: AnyName, prop: str) -> tuple[str, str]:
        """``(value, source)`` of one property; source is ``local``, ``default``, ``inherited``,
        ``received``, ``temporary`` or ``-``."""
        _expect(name, DatasetName, SnapshotName, BookmarkName)
        res = self._run(["zfs", "get", "-H", "-o", "value,source", validate_property(prop), str(name)])
        value, _, source = res.text.rstrip("\n").partition("\t")
        return value, source.split(" ")[0]

    def inherit(self, name: DatasetName, prop: str) -> None:
        """Drop a local value: ``prop`` inherits (or takes its default) again."""
        _expect(name, DatasetName)
        self._run(["zfs", "inherit", validate_property(prop), str(name)])

    def mountpoint(self, name: DatasetName) -> str | None:
        """Where ``name`` mounts, or None (none/legacy/not applicable)."""
        _expect(name, DatasetName)
        mp = self.get(name, ["mountpoint"]).get("mountpoint", "-")
        return None if mp in ("-", "none", "legacy") else mp

    def is_mounted(self, name: DatasetName) -> bool:
        _expect(name, DatasetName)
        return self.get(name, ["mounted"]).get("mounted") == "yes"

    def pool_capacity(self, pool: str) -> PoolCapacity:
        validate_pool(pool)
        exact = self.dialect.zpool_list_parsable
        res = self._run(listing.pool_capacity_argv(pool, exact=exact))
        return listing.read_pool_capacity(res.text, pool, exact=exact)

    # ---------------------------------------------------------------- changes

    def create(
        self, name: DatasetName, props: Mapping[str, str] | None = None, parents: bool = False
    ) -> None:
        _expect(name, DatasetName)
        self._run(["zfs", "create", *(["-p"] if parents else []), *_opts(props), str(name)])

    def destroy(
        self,
        name: AnyName,
        recursive: bool = False,
        deadline: float = 10.0,
        *,
        dependents: bool = False,
        missing_ok: bool = False,
        defer: bool = False,
    ) -> None:
        """Destroy ``name`` (-r: with children/snapshots; ``dependents`` -R: with clones too; ``defer``
        -d: a snapshot with clones is marked ``defer_destroy`` and ZFS destroys it with its last clone).

        "dataset is busy" is retried until ``deadline`` seconds have passed: right after a receive,
        zfs-fuse reports busy for about a second. ``missing_ok``: a missing name is not an error.
        """
        _expect(name, DatasetName, SnapshotName, BookmarkName)
        flags = [*(["-r"] if recursive else []), *(["-R"] if dependents else []), *(["-d"] if defer else [])]
        argv = ["zfs", "destroy", *flags, str(name)]
        start = self._clock()
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                self._run(argv)
                return
            except DatasetNotFound:
                if missing_ok:
                    return
                raise
            except DatasetBusy:
                left = start + deadline - self._clock()
                if left <= 0:
                    raise
                log.info("%s: %s busy (attempt %d), retrying", self.host.name, name, attempt)
                self._sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def snapshot(
        self, name: SnapshotName, recursive: bool = False, props: Mapping[str, str] | None = None
    ) -> None:
        _expect(name, SnapshotName)
        if self.lzc and not recursive and not props:
            return lzc.snapshot([name])
        self._run(["zfs", "snapshot", *(["-r"] if recursive else []), *_opts(props), str(name)])

    def bookmark(self, snapshot: SnapshotName, mark: BookmarkName) -> None:
        """``zfs bookmark snapshot dataset#mark`` (OpenZFS)."""
        _expect(snapshot, SnapshotName)
        _expect(mark, BookmarkName)
        self._need("bookmarks", "zfs bookmark")
        if self.lzc:
            return lzc.bookmark(snapshot, mark)
        self._run(["zfs", "bookmark", str(snapshot), str(mark)])

    def list_bookmarks(self, dataset: DatasetName) -> list[Bookmark]:
        """The bookmarks of ``dataset`` itself, sorted by createtxg; none where the dialect has none."""
        _expect(dataset, DatasetName)
        if not self.dialect.bookmarks:
            return []
        if self.lzc:
            return lzc.list_bookmarks(dataset)
        argv = ["zfs", "list", "-Hp", "-t", "bookmark", "-d", "1", "-o", "name,guid,createtxg", str(dataset)]
        return listing.read_bookmarks(self._run(argv).text, dataset, host=self.host.name)

    def rollback(self, snapshot: SnapshotName, destroy_newer: bool = False) -> None:
        """Roll back to ``snapshot``; ``destroy_newer`` (-r) destroys later snapshots."""
        _expect(snapshot, SnapshotName)
        self._run(["zfs", "rollback", *(["-r"] if destroy_newer else []), str(snapshot)])

    def clone(
        self,
        snapshot: SnapshotName,
        target: DatasetName,
        props: Mapping[str, str] | None = None,
        parents: bool = False,
    ) -> None:
        _expect(snapshot, SnapshotName)
        _expect(target, DatasetName)
        self._run(["zfs", "clone", *(["-p"] if parents else []), *_opts(props), str(snapshot), str(target)])

    def promote(self, name: DatasetName) -> None:
        _expect(name, DatasetName)
        self._run(["zfs", "promote", str(name)])

    def rename(self, old: AnyName, new: AnyName, parents: bool = False) -> None:
        """Rename a dataset (``parents``: -p) or a snapshot (within the same dataset)."""
        if isinstance(old, SnapshotName) and isinstance(new, SnapshotName):
            if old.dataset != new.dataset:
                raise UsageError(f"rename {old} -> {new}: snapshots stay in the same dataset")
            if parents:
                raise UsageError("rename -p applies to datasets, not snapshots")
        elif not (isinstance(old, DatasetName) and isinstance(new, DatasetName)):
            raise UsageError(f"rename {old!r} -> {new!r}: both must be datasets or both snapshots")
        self._run(["zfs", "rename", *(["-p"] if parents else []), str(old), str(new)])

    def mount(self, name: DatasetName) -> None:
        _expect(name, DatasetName)
        self._run(["zfs", "mount", str(name)])

    def unmount(self, name: DatasetName, force: bool = False, deadline: float = 0.0) -> None:
        """Unmount ``name``; "busy" (a file still open) is retried until ``deadline`` seconds have passed.
        An unmounted dataset cannot be written to by anyone: what a quiesce waits for."""
        _expect(name, DatasetName)
        argv = ["zfs", "unmount", *(["-f"] if force else []), str(name)]
        start, delay = self._clock(), 0.05
        while True:
            try:
                self._run(argv)
                return
            except DatasetBusy:
                left = start + deadline - self._clock()
                if left <= 0:
                    raise
                self._sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    # ---------------------------------------------------------------- holds

    def holds(self, snapshot: SnapshotName) -> list[str]:
        """The hold tags on ``snapshot``."""
        _expect(snapshot, SnapshotName)
        self._need("holds", "zfs holds")
        if self.lzc:
            return lzc.holds(snapshot)
        res = self._run(["zfs", "holds", "-H", str(snapshot)])
        return sorted(line.split("\t")[1] for line in res.text.splitlines() if line.count("\t") >= 1)

    def held_snapshots(self, root: DatasetName | None = None) -> list[tuple[SnapshotName, int]]:
        """Snapshots that carry user holds (``userrefs`` > 0) under ``root`` (default: every pool), with
        their count: readable on zfs-fuse too, which cannot list the tags. A name this project does not
        accept is skipped (none of its holds are there)."""
        if root is not None:
            _expect(root, DatasetName)
        argv = ["zfs", "list", "-H", "-t", "snapshot", "-o", "name,userrefs"]
        res = self._run([*argv, "-r", str(root)] if root is not None else argv)
        out: list[tuple[SnapshotName, int]] = []
        for line in res.text.splitlines():
            name, _tab, refs = line.partition("\t")
            if not refs.strip().isdigit() or int(refs) == 0:
                continue
            try:
                out.append((parse_snapshot(name), int(refs)))
            except InvalidName:
                continue
        return out

    def hold(self, snapshot: SnapshotName, tag: str, recursive: bool = False) -> None:
        """``zfs hold``: where the dialect has user holds (zfs-fuse too, although it cannot list them)."""
        _expect(snapshot, SnapshotName)
        self._need("user_holds", "zfs hold")
        if self.lzc and not recursive:
            return lzc.hold(snapshot, validate_hold_tag(tag))
        self._run(["zfs", "hold", *(["-r"] if recursive else []), validate_hold_tag(tag), str(snapshot)])

    def release(self, snapshot: SnapshotName, tag: str, recursive: bool = False) -> None:
        _expect(snapshot, SnapshotName)
        self._need("user_holds", "zfs release")
        if self.lzc and not recursive:
            return lzc.release(snapshot, validate_hold_tag(tag))
        self._run(["zfs", "release", *(["-r"] if recursive else []), validate_hold_tag(tag), str(snapshot)])

    # ---------------------------------------------------------------- send / receive

    def send_argv(self, spec: SendSpec) -> list[str]:
        """The ``zfs send`` argv (not run: the replication layer pipes it)."""
        return spec.argv(self.dialect)

    def recv_argv(self, spec: RecvSpec) -> list[str]:
        """The ``zfs receive`` argv (not run)."""
        return spec.argv(self.dialect)

    def resume_send_argv(self, token: str) -> list[str]:
        """``zfs send -t <token>`` to resume an interrupted resumable receive."""
        self._need("resumable_receive", "send -t")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise InvalidName("invalid receive_resume_token: expected [0-9A-Za-z-]+")
        return ["zfs", "send", "-t", token]

    def resume_token(self, name: DatasetName) -> str | None:
        """The target's ``receive_resume_token`` after a cut resumable receive, or None."""
        _expect(name, DatasetName)
        if not self.dialect.resumable_receive:
            return None
        tok = self.get(name, ["receive_resume_token"]).get("receive_resume_token", "-")
        return None if tok in ("-", "") else tok

    def abort_resumable_receive(self, name: DatasetName) -> None:
        """``zfs receive -A``: discard the partial state of a resumable receive."""
        _expect(name, DatasetName)
        self._need("resumable_receive", "receive -A")
        self._run(["zfs", "receive", "-A", str(name)])

    def estimate_send_size(self, spec: SendSpec) -> int | None:
        """Bytes ``spec`` would send, by ``zfs send -nvP``; None where the dialect cannot."""
        if not self.dialect.send_estimate:
            return None
        res = self._run(spec.estimate_argv(self.dialect))
        return parse_send_estimate(res.text + "\n" + res.err_text)

    def estimate_send_size_from_space(self, spec: SendSpec) -> int:
        """A heuristic size from space accounting (see :mod:`zfs_backend.zfs.estimate`)."""
        return estimate_from_space(self, spec)
