"""The single chokepoint that runs every zfs/zpool command on a host, starts the sides of a stream,
and turns a zfs stderr into a typed error.

``run`` checks the argv, logs it (logger ``zfs_backend.zfs``), times it and keeps a count of commands
in flight per node. ``spawn_stream`` starts one side of a ``zfs send`` → ``zfs receive`` stream (its
own process group, logged). ``classify`` is the one table from stderr to error type, for commands and
streams alike (first match wins)::

    "has been modified since most recent snapshot"                            -> DestinationModified
    "dataset is busy", "target is busy", "resource busy", "it's being held"   -> DatasetBusy
    "out of space", "no space left"                                           -> PoolFull
    "has children", "more recent snapshots", "dependent clones"               -> DatasetHasDependents
    "already exists", "destination ... exists"                                -> DatasetExists
    "dataset does not exist", "no such pool", "could not find any snapshots" -> DatasetNotFound
    "invalid option", "unrecognized command", "not implemented", "pyzfs"     -> UnsupportedFeature

and, in a stream's stderr only (both sides', ``ssh``'s and the peer's forced command's)::

    "does not match incremental source"                                       -> StreamMismatch
    "destination has snapshots"                                               -> DatasetHasDependents
    "Host key verification failed"                                            -> HostKeyMismatch
    "Permission denied", "no matching cipher", "refused by the peer"          -> PeerRefused
    "replication conflict"                                                    -> ReplicationConflict
    "corrupted" (a backup stream file's checksum)                             -> BackupCorrupt

``map_failure`` makes a failed command's typed error (the host's ``CommandFailed`` when unknown; the
typed one keeps it as ``__cause__`` and ``.failure``); ``stream_error`` a failed stream's (its whole
message; ``StreamFailed`` when unknown). Callers test the type, never the text.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any

from ..errors import (
    BackupCorrupt,
    CommandFailed,
    DatasetBusy,
    DatasetExists,
    DatasetHasDependents,
    DatasetNotFound,
    DestinationModified,
    HoldNotFound,
    HostKeyMismatch,
    PeerRefused,
    PoolFull,
    ReplicationConflict,
    StreamFailed,
    StreamMismatch,
    UnsupportedFeature,
    UsageError,
    ZfsBackendError,
    ZfsError,
)
from ..hosts.base import DEFAULT_TIMEOUT, CommandResult, Host

__all__ = [
    "ERROR_PATTERNS",
    "STREAM_PATTERNS",
    "ZFS_PROGRAMS",
    "MappedError",
    "classify",
    "in_flight",
    "map_failure",
    "modified_target",
    "run",
    "spawn_stream",
    "stream_error",
]

log = logging.getLogger("zfs_backend.zfs")

ZFS_PROGRAMS = frozenset({"zfs", "zpool"})

# Order matters: the first match wins ("cannot destroy: dataset is busy" before anything generic).
# A stream's stderr arrives joined on " | " (``activity.procs.stderr_tail``): "[\s|]+" spans lines.
ERROR_PATTERNS: tuple[tuple[re.Pattern[str], type[ZfsError]], ...] = tuple(
    (re.compile(p, re.IGNORECASE), t)
    for p, t in (
        (r"has been modified[\s|]+since most recent snapshot", DestinationModified),
        # OpenZFS 2.x refuses to destroy a held snapshot with "it's being held" (zfs-fuse: "busy")
        (
            r"dataset is busy|pool is busy|target is busy|resource busy|device busy|it's being held",
            DatasetBusy,
        ),
        (r"out of space|no space left", PoolFull),
        (r"no such tag", HoldNotFound),
        (r"has children|more recent snapshots|dependent clones", DatasetHasDependents),
        (r"already exists|destination '[^']*' exists|must specify -F to overwrite", DatasetExists),
        (r"does not exist|no such pool|no such dataset|could not find any snapshots", DatasetNotFound),
        (
            r"invalid option|unrecognized command|function not implemented|pyzfs\.py not found"
            r"|operation not supported",
            UnsupportedFeature,
        ),
    )
)
#: what only a stream's stderr says (a receive's refusals, ssh's, the peer's forced command's)
STREAM_PATTERNS: tuple[tuple[re.Pattern[str], type[ZfsBackendError]], ...] = tuple(
    (re.compile(p, re.IGNORECASE), t)
    for p, t in (
        (r"does not match incremental source", StreamMismatch),
        (r"destination has snapshots", DatasetHasDependents),
        (r"Host key verification failed", HostKeyMismatch),
        (r"Permission denied|no matching cipher|refused by the peer", PeerRefused),
        (r"replication conflict", ReplicationConflict),
        (r"\bcorrupted\b", BackupCorrupt),
    )
)
_MODIFIED_TARGET = re.compile(r"destination (\S+) has been modified[\s|]+since most recent snapshot", re.I)

_lock = threading.Lock()
_in_flight: Counter[str] = Counter()


def in_flight(node: str | None = None) -> int:
    """How many zfs/zpool commands are running now (on ``node``, or everywhere)."""
    with _lock:
        return _in_flight[node] if node is not None else sum(_in_flight.values())


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


MappedError = ZfsError | CommandFailed


def classify(stderr: str, *, stream: bool = False) -> type[ZfsBackendError] | None:
    """The error type a zfs stderr stands for (see the module doc); ``stream``: a stream's stderr, which
    may also carry a receive's, ssh's and the peer's refusals. None: nothing known."""
    for pattern, etype in ERROR_PATTERNS + (STREAM_PATTERNS if stream else ()):
        if pattern.search(stderr):
            return etype
    return None


def map_failure(failure: CommandFailed) -> MappedError:
    """The typed error for a failed zfs/zpool command, or ``failure`` itself if unknown."""
    etype = classify(failure.stderr)
    if etype is None or not issubclass(etype, ZfsError):
        return failure
    # One line: the node and zfs's own reason, which names the dataset.
    reason = " ".join(failure.stderr.split()) if etype is DestinationModified else None
    err = etype(f"{failure.node}: {reason or _first_line(failure.stderr)}")
    err.failure = failure  # type: ignore[attr-defined]
    err.__cause__ = failure
    return err


def stream_error(message: str) -> ZfsBackendError:
    """A failed stream's typed error, with its whole ``message`` (what each side said): the type
    ``classify`` gives its stderr, else ``StreamFailed``."""
    return (classify(message, stream=True) or StreamFailed)(message)


def modified_target(error: ZfsBackendError) -> str | None:
    """The dataset a ``DestinationModified`` names (the one to check and clean); None for any other."""
    if not isinstance(error, DestinationModified):
        return None
    m = _MODIFIED_TARGET.search(str(error))
    return None if m is None else m.group(1)


def spawn_stream(
    host: Host,
    argv: Sequence[str],
    *,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
) -> subprocess.Popen[bytes]:
    """Start one side of a stream (``zfs send``, ``zfs receive``, or what wraps them: ``ssh``, a codec) on
    ``host``, in its own process group; its stderr goes to ``stderr`` for ``stream_error``."""
    args = list(argv)
    if not args:
        raise UsageError("a stream side needs a command")
    log.debug("%s: stream side %s", host.name, " ".join(args))
    return host.spawn(args, stdin=stdin, stdout=stdout, stderr=stderr)


def run(
    host: Host,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    check: bool = True,
) -> CommandResult:
    """Run a zfs/zpool ``argv`` on ``host``.

    With ``check`` a non-zero exit raises the mapped typed error (see the module docstring);
    without, the result is returned as is. ``CommandTimeout`` passes through.
    """
    args = tuple(argv)
    if not args or args[0] not in ZFS_PROGRAMS:
        raise UsageError(f"not a zfs/zpool command: {list(args)[:3]!r}")
    node = host.name
    with _lock:
        _in_flight[node] += 1
    t0 = time.monotonic()
    try:
        res = host.run(args, input=input, timeout=timeout, check=False)
    except CommandFailed as e:  # e.g. the binary is missing (LocalHost maps it to rc 127)
        log.warning("%s: %s failed: %s", node, " ".join(args), e)
        if check:
            raise map_failure(e)  # noqa: B904 - map_failure sets __cause__
        return _as_result(node, args, e)
    finally:
        with _lock:
            _in_flight[node] -= 1
            if _in_flight[node] <= 0:
                del _in_flight[node]
    dt = time.monotonic() - t0
    if res.returncode == 0:
        log.debug("%s: %s ok in %.3f s", node, " ".join(args), dt)
        return res
    # A caller that passes check=False expects failures (probes): keep those at debug.
    log.log(
        logging.INFO if check else logging.DEBUG,
        "%s: %s exited %d in %.3f s: %s",
        node,
        " ".join(args),
        res.returncode,
        dt,
        _first_line(res.err_text),
    )
    if not check:
        return res
    raise map_failure(CommandFailed(node, args, res.returncode, res.err_text))


def _as_result(node: str, args: tuple[str, ...], e: CommandFailed) -> CommandResult:
    return CommandResult(node, args, e.returncode, b"", e.stderr.encode())
