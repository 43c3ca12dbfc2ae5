"""What the kinds that stream into a destination agent's receiver share (``replicate``, ``migrate``; the
stderr patterns and receive flags also serve ``standby`` and ``backup``).

* ``PERMANENT``: the types of a stream failure that retrying cannot help (no space, a diverged base, a
  refused key), as ``zfs.cmd.stream_error`` types the stream's stderr.
* ``ReceiverUpkeep``: the hooks of such a kind: a "modified" refusal cleaned by the destination and
  streamed again (at most ``_MAX_CLEANS`` times), the claim renewed while the stream runs, and the node's
  zfs-fuse daemon counted in the activity's CPU.
* ``dialect_for_recv``: the destination's receive flags (reported by its ``begin``) as a dialect.
* ``stream_flags`` and ``check_filesystem_versions``: what the destination can receive, as it reported
  it in ``begin``: the send flags both ends have, and a refusal before any stream of what its zfs could
  not read (any filesystem of a zfs with newer filesystem versions: OpenZFS into zfs-fuse).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import psutil

from ..errors import (
    DatasetExists,
    DatasetNotFound,
    HostKeyMismatch,
    PeerRefused,
    PoolFull,
    ReplicationConflict,
    StreamMismatch,
    UnsupportedFeature,
    ZfsBackendError,
)
from ..zfs.cmd import modified_target
from ..zfs.dialect import Dialect
from ..zfs.names import DatasetName
from .remote import DestinationTree, RemoteReceiver

if TYPE_CHECKING:
    from ..zfs.api import Zfs

__all__ = [
    "PERMANENT",
    "RENEW_EVERY_S",
    "ReceiverUpkeep",
    "check_filesystem_versions",
    "dialect_for_recv",
    "stream_flags",
]

#: a stream failure of one of these types is final: retrying cannot help
PERMANENT: tuple[type[ZfsBackendError], ...] = (
    PoolFull,
    StreamMismatch,
    DatasetExists,
    DatasetNotFound,
    HostKeyMismatch,
    PeerRefused,
    ReplicationConflict,
)
RENEW_EVERY_S = 60.0
_MAX_CLEANS = 10


_DAEMONS: dict[str, list[tuple[int, float]]] = {}  # name -> [(pid, create_time)], re-scanned when stale


def _same_mount_ns_daemons(name: str = "zfs-fuse") -> list[int]:
    """Pids of ``name`` daemons in this process's mount namespace (the node's own zfs-fuse). The scan
    of every process costs ~30 ms, so its result is kept while those processes live."""
    cached = _DAEMONS.get(name)
    if cached:
        try:
            if all(psutil.Process(pid).create_time() == ct for pid, ct in cached):
                return [pid for pid, _ in cached]
        except psutil.Error:
            pass
    pids = _scan_daemons(name)
    with contextlib.suppress(psutil.Error):
        _DAEMONS[name] = [(pid, psutil.Process(pid).create_time()) for pid in pids]
    return pids


def _scan_daemons(name: str) -> list[int]:
    try:
        mine = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return []
    out = []
    for p in psutil.process_iter(["name"]):
        if p.info.get("name") != name:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{p.pid}/ns/mnt") == mine:
                out.append(p.pid)
    return out


class ReceiverUpkeep:
    """The hooks of a kind that streams into a destination agent's receiver (``replicate``,
    ``migrate``): a "modified" refusal cleaned by the destination and streamed again, the claim renewed
    while the stream runs, zfs-fuse's daemon counted in the CPU."""

    kind_state: dict[str, Any]
    _replan: bool
    _last_renew: float

    @property
    def receiver(self) -> RemoteReceiver:
        raise NotImplementedError

    def recover_failure(self, error: ZfsBackendError) -> bool:
        """A receive refused as "modified": have the destination check that dataset exactly. Noise is
        rolled back there and the stream starts again; a real change raises (the activity fails as
        diverged, nothing discarded)."""
        target = modified_target(error)
        if target is None:
            return False
        cleans = int(self.kind_state.get("cleans", 0)) + 1
        if cleans > _MAX_CLEANS:
            raise ReplicationConflict(f"the destination keeps changing under the receive: {error}")
        self.kind_state["cleans"] = cleans
        self.receiver.clean(target)
        self._replan = True
        return True

    def on_tick(self) -> None:
        if time.monotonic() - self._last_renew >= RENEW_EVERY_S:
            self._last_renew = time.monotonic()
            self.receiver.renew()

    def extra_cpu_pids(self) -> list[int]:
        return _same_mount_ns_daemons()


def dialect_for_recv(ks: dict[str, Any]) -> Dialect:
    """The destination's receive flags as a dialect (the destination reported them in ``begin``)."""
    return Dialect(
        name=str(ks.get("dest_dialect") or "destination"),
        resumable_receive=bool(ks.get("resumable")),
        recv_properties=bool(ks.get("recv_properties")),
    )


#: ``zfs send`` flags that keep blocks as they are on disk, by the dialect's name for each
STREAM_FLAGS = {
    "large_blocks": "send_large_blocks",
    "compressed": "send_compressed",
    "embedded": "send_embedded",
}


def stream_flags(source: Dialect, destination: Mapping[str, Any]) -> dict[str, bool]:
    """``-L``/``-c``/``-e`` where both ends have them: the source's dialect, and the destination's as it
    reported it in ``begin`` (a ``zfs`` that can send a feature's stream can receive it)."""
    return {k: bool(getattr(source, d)) and bool(destination.get(d)) for k, d in STREAM_FLAGS.items()}


def check_filesystem_versions(
    zfs: Zfs, datasets: Iterable[DatasetName], destination: DestinationTree, node: str, where: str
) -> None:
    """Refuse (``UnsupportedFeature``), before any stream and changing nothing, what the destination's
    zfs could not read: ``zpl_version`` (the highest filesystem version, ``zfs upgrade -v``) of the
    destination (reported in its ``begin``) lower than the source's zfs's, or than a source dataset's
    ``version`` property (read only when the source's own ``zpl_version`` is unknown: a known one bounds
    every dataset it holds, so a replication pays no extra command). The first covers every filesystem
    of an OpenZFS source (5) into zfs-fuse 0.7 (4): a version 5 one's stream is rejected by its
    ``zfs receive`` ("stream has unsupported feature"), and a version 4 one's is received but its root
    cannot be read there (ENOENT; found on the Vagrant tier, tests/vagrant/test_mixed_dialects.py).
    Either unknown (an agent before this check): not checked."""
    top = destination.zpl_version
    if top is None:
        return
    dst = f"{where} ({destination.dialect or 'its zfs'})"
    mine = zfs.dialect.zpl_version
    if mine is not None and mine > top:
        raise UnsupportedFeature(
            f"{dst} reads filesystems up to version {top} and {node} ({zfs.dialect}) writes them up to "
            f"version {mine}: a filesystem sent from a newer zfs cannot be read there, so it is refused "
            "before sending; nothing changed there"
        )
    if mine is not None:  # no dataset is newer than the zfs that holds it: nothing more to read
        return
    for ds in datasets:  # the source's own versions unknown: each dataset's, one `zfs get` each
        version = zfs.get(ds, ["version"]).get("version", "-").strip()
        if version.isdigit() and int(version) > top:
            raise UnsupportedFeature(
                f"{node}:{ds} is a version {version} filesystem and {dst} receives filesystems up to "
                f"version {top} (zfs upgrade -v): refused before sending, nothing changed there"
            )
