"""Reading a ``zfs send`` stream to tell real changes from metadata noise (zfs-fuse 0.7 streams).

Why: a replica's head is "modified since its most recent snapshot" not only when someone wrote to it
but also when a file was merely *read* (atime), and a plain incremental ``zfs receive`` then refuses.
Before discarding such a head (a rollback to its snapshot), the destination must know that nothing but
noise would be lost. OpenZFS answers that with ``written`` and ``zfs diff``; zfs-fuse 0.7 has neither.
So the destination takes a temporary snapshot of its head and reads ``zfs send -i @base @probe``.

Measured on zfs-fuse 0.7 (fixtures in ``tests/unit/zfs/data/streams/``): an atime-only change sends an
``OBJECT`` record for every dnode of the touched dnode block, "free past the end" ``FREE`` records and
``FREEOBJECTS``, and no ``WRITE``. Writes, creates, removes and truncates all send ``WRITE`` records (file
data or directory ZAP blocks). A ``chmod`` or ``touch -m`` sends only ``OBJECT`` records, but the znode
in its bonus buffer then carries a ``ctime`` after the base snapshot's creation.

So a stream shows a **real change** when it has any record that carries data (``WRITE``,
``WRITE_BYREF``, ``WRITE_EMBEDDED``, ``SPILL``), or an ``OBJECT`` whose znode has a ``ctime``, ``mtime``
or creation time later than ``since`` (the base snapshot's ``creation``), or anything this reader does
not understand (an unknown record type, stream features, a truncated stream): when in doubt, it is a
change. Noise is everything else.

The record layout is ``dmu_replay_record_t`` (312 bytes, little endian as written by x86 nodes): a
``u32`` type, a ``u32`` payload length (the nvlist of a compound stream's ``BEGIN``), then the union.
``OBJECT`` is followed by its bonus buffer rounded up to 8 bytes, ``WRITE`` and ``SPILL`` by their
data. Caveat: the ctime test compares the destination's clock (a local chmod) with the source's (the
base's ``creation`` travels in the stream); clocks far apart could hide a metadata-only change made
within the skew of receiving the base. Data changes never depend on clocks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RECORD_SIZE", "StreamChanges", "classify_stream"]

RECORD_SIZE = 312
DRR_BEGIN, DRR_OBJECT, DRR_FREEOBJECTS, DRR_WRITE, DRR_FREE, DRR_END = 0, 1, 2, 3, 4, 5
DRR_WRITE_BYREF, DRR_SPILL, DRR_WRITE_EMBEDDED = 6, 7, 8
BEGIN_MAGIC = 0x2F5BACBAC
DMU_OT_ZNODE = 17  # bonus type of a file/directory dnode in pre-SA pools (zfs-fuse: v23)
_ZNODE_TIMES = struct.Struct("<QQQQQQQQ")  # atime, mtime, ctime, crtime: (seconds, nanoseconds) each
_U32X2 = struct.Struct("<II")
_DATA_TYPES = {DRR_WRITE: "WRITE", DRR_WRITE_BYREF: "WRITE_BYREF", DRR_SPILL: "SPILL"}


class _StreamError(Exception):
    """The stream cannot be read as a zfs-fuse 0.7 send stream."""


@dataclass
class StreamChanges:
    """What ``classify_stream`` found. ``real``: user-visible changes; ``reasons`` says which (a few)."""

    records: int = 0
    data_records: int = 0
    data_bytes: int = 0
    changed_objects: set[int] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    complete: bool = False  # the END record was reached

    @property
    def real(self) -> bool:
        """Real changes, or a stream that could not be read to its end (when in doubt: a change)."""
        return bool(self.reasons) or not self.complete

    def note(self, reason: str) -> None:
        if len(self.reasons) < 5:
            self.reasons.append(reason)

    def describe(self) -> str:
        if not self.real:
            return "metadata only (atime)"
        if not self.reasons:
            return "the stream ended before its END record"
        parts = []
        if self.data_records:
            parts.append(f"{self.data_records} data record(s), {self.data_bytes} bytes")
        if self.changed_objects:
            parts.append(f"{len(self.changed_objects)} object(s) with a newer ctime/mtime")
        return "; ".join(parts) or self.reasons[0]


Reader = Callable[[int], bytes]


def _read_exact(read: Reader, n: int) -> bytes:
    chunks = []
    left = n
    while left > 0:
        b = read(left)
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _skip(read: Reader, n: int) -> None:
    while n > 0:
        b = read(min(n, 1 << 20))
        if not b:
            raise _StreamError("the stream ends inside a record's payload")
        n -= len(b)


def classify_stream(read: Reader, since: int, *, stop_early: bool = True) -> StreamChanges:
    """Read a stream from ``read(n)`` (e.g. a pipe's ``read``) and classify its changes.

    ``since``: the base snapshot's ``creation`` (unix seconds). ``stop_early``: return at the first real
    change (the caller then stops the sender) instead of reading to the end (to count data bytes).
    Never raises for odd input: what it cannot read is reported as a real change.
    """
    out = StreamChanges()
    try:
        _classify(read, since, stop_early, out)
    except _StreamError as e:
        out.note(str(e))
    return out


def _classify(read: Reader, since: int, stop_early: bool, out: StreamChanges) -> None:
    depth = 0  # nesting of BEGIN .. END (a compound stream wraps substreams)
    while True:
        rec = _read_exact(read, RECORD_SIZE)
        if not rec:
            return
        if len(rec) < RECORD_SIZE:
            raise _StreamError("the stream ends inside a record")
        out.records += 1
        rtype, payload = _U32X2.unpack_from(rec, 0)
        if rtype == DRR_BEGIN:
            magic, versioninfo = struct.unpack_from("<QQ", rec, 8)
            if magic != BEGIN_MAGIC:
                raise _StreamError("not a zfs send stream (bad magic)")
            if versioninfo >> 2:
                raise _StreamError(f"stream features {versioninfo >> 2:#x} are not understood")
            _skip(read, payload)
            depth += 1
        elif rtype == DRR_END:
            depth -= 1
            if depth <= 0:
                out.complete = True
                return
        elif rtype == DRR_OBJECT:
            obj, _otype, bonustype, _blksz, bonuslen = struct.unpack_from("<QIIII", rec, 8)
            bonus = _read_exact(read, (bonuslen + 7) & ~7)
            if len(bonus) < ((bonuslen + 7) & ~7):
                raise _StreamError("the stream ends inside a bonus buffer")
            if bonustype == DMU_OT_ZNODE and bonuslen >= _ZNODE_TIMES.size:
                t = _ZNODE_TIMES.unpack_from(bonus, 0)
                mtime, ctime, crtime = t[2], t[4], t[6]
                if max(mtime, ctime, crtime) > since:
                    out.changed_objects.add(obj)
                    out.note(f"object {obj} changed after the base (ctime {ctime}, mtime {mtime})")
        elif rtype in _DATA_TYPES:
            obj = struct.unpack_from("<Q", rec, 8)[0]
            length = 0
            if rtype == DRR_WRITE:
                length = struct.unpack_from("<Q", rec, 32)[0]
            elif rtype == DRR_SPILL:
                length = struct.unpack_from("<Q", rec, 16)[0]
            out.data_records += 1
            out.data_bytes += length
            out.note(f"{_DATA_TYPES[rtype]} of object {obj} ({length} bytes)")
            if stop_early:
                return
            _skip(read, length)
        elif rtype == DRR_WRITE_EMBEDDED:
            out.data_records += 1
            out.note("WRITE_EMBEDDED record")
            return  # payload size depends on features this reader does not parse
        elif rtype in (DRR_FREE, DRR_FREEOBJECTS):
            pass
        else:
            raise _StreamError(f"unknown record type {rtype}")
        if stop_early and out.reasons:
            return
