"""Has a dataset's head changed since its newest snapshot, and is that a real change or only noise?

A plain incremental ``zfs receive`` refuses a destination "modified since most recent snapshot", and
reading a file counts as a modification (atime). Before anything discards such a head, this module
tells the two apart, exactly, on the node itself:

* OpenZFS: ``written`` (bytes written since the newest snapshot) is 0 for an untouched head; otherwise
  ``zfs diff`` lists the changed files (it does not report atime-only changes). No output: noise. An
  unmounted head cannot be diffed (OpenZFS refuses); nothing reads it either, so ``written`` > 0 there
  is a change.
* zfs-fuse 0.7 (no ``written``, no ``diff``): a temporary snapshot of the head and
  ``zfs send -i @newest @probe`` read by :func:`~zfs_backend.zfs.stream.classify_stream`; the probe
  snapshot is destroyed afterwards. Costs ~0.1 s (three zfs commands) on the lab.

The answer is :class:`HeadChanges`: ``changed`` (real changes, which only an explicit
``rollback_destination`` may discard), ``noisy`` (the head differs from its snapshot by metadata noise
only: safe to roll back), ``detail`` (one line) and ``bytes`` (data written, where known).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from dataclasses import dataclass

from ..errors import ZfsBackendError
from . import cmd
from .api import Zfs
from .models import Snapshot
from .names import DatasetName
from .stream import classify_stream

__all__ = ["PROBE_PREFIX", "HeadChanges", "bytes_since", "head_changes"]

PROBE_PREFIX = "zfs-backend-probe-"


@dataclass(frozen=True)
class HeadChanges:
    changed: bool
    noisy: bool
    detail: str
    bytes: int = 0

    @property
    def clean(self) -> bool:
        return not self.changed and not self.noisy


CLEAN = HeadChanges(False, False, "unchanged")


def head_changes(zfs: Zfs, dataset: DatasetName, newest: Snapshot, *, count: bool = False) -> HeadChanges:
    """How ``dataset``'s head differs from ``newest`` (its newest snapshot). Runs on the node that holds
    the dataset; creates and destroys one temporary snapshot on dialects without ``written``/``diff``.
    ``count``: read the whole probe stream to count the bytes written (else it stops at the first sign
    of a change)."""
    if zfs.dialect.written_property:
        written = zfs.get_int(dataset, "written")
        if written == 0:
            return CLEAN
        if zfs.dialect.diff:
            try:
                res = cmd.run(
                    zfs.host, ["zfs", "diff", "-H", str(newest.name), str(dataset)], timeout=zfs.timeout
                )
            except ZfsBackendError as e:
                # OpenZFS diffs mounted datasets only ("Cannot diff an unmounted snapshot"). Unmounted,
                # nothing reads the head (no atime noise): what was written is a change.
                if "unmounted" not in str(e):
                    raise
                detail = f"{written} bytes written after @{newest.snap} (unmounted: not diffed)"
                return HeadChanges(True, False, detail, written or 0)
            lines = [ln for ln in res.text.splitlines() if ln.strip()]
            if not lines:
                return HeadChanges(False, True, "metadata only (atime)", written or 0)
            first = lines[0].replace("\t", " ")
            more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
            return HeadChanges(True, False, f"{first}{more}", written or 0)
        return HeadChanges(True, False, f"{written} bytes written after @{newest.snap}", written or 0)
    return _probe_stream(zfs, dataset, newest, count)


def bytes_since(zfs: Zfs, dataset: DatasetName, base: Snapshot) -> int:
    """Bytes of data the head of ``dataset`` holds that ``base`` does not (what a rollback to ``base``
    discards, newer snapshots included): ``written@base`` where the dialect has it, else the data
    records of a probe stream from ``base``."""
    if zfs.dialect.written_property:
        return zfs.get_int(dataset, f"written@{base.snap}") or 0
    return _probe_stream(zfs, dataset, base, True).bytes


def _probe_stream(zfs: Zfs, dataset: DatasetName, newest: Snapshot, count: bool) -> HeadChanges:
    probe = dataset.snapshot(PROBE_PREFIX + secrets.token_hex(4))
    zfs.snapshot(probe)
    try:
        argv = ["zfs", "send", "-i", str(newest.name), str(probe)]
        proc = cmd.spawn_stream(zfs.host, argv, stdin=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            found = classify_stream(proc.stdout.read, newest.creation, stop_early=not count)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            _out, err = proc.communicate()
        if not found.complete and not found.reasons:  # the sender failed before the END record
            why = err.decode(errors="replace").strip() or f"zfs send exited {proc.returncode}"
            raise ZfsBackendError(f"{zfs.host.name}: cannot read the changes of {dataset}: {why}")
    finally:
        zfs.destroy(probe, deadline=10.0, missing_ok=True)
    if found.real:
        return HeadChanges(True, False, found.describe(), found.data_bytes)
    if found.records <= 2:  # BEGIN + END: nothing at all
        return CLEAN
    return HeadChanges(False, True, found.describe())
