"""The single chokepoint that runs every zfs/zpool command on a host.

It checks the argv, logs it (logger ``zfs_backend.zfs``), times it, keeps a count of commands in
flight per node, and turns a known stderr into a typed error:

    "dataset does not exist", "no such pool", "could not find any snapshots" -> DatasetNotFound
    "already exists", "destination ... exists"                                -> DatasetExists
    "dataset is busy", "target is busy", "resource busy", "it's being held"   -> DatasetBusy
    "out of space", "no space left"                                           -> PoolFull
    "has children", "more recent snapshots", "dependent clones"               -> DatasetHasDependents
    "has been modified since most recent snapshot"                            -> DestinationModified
    "invalid option", "unrecognized command", "not implemented", "pyzfs"     -> UnsupportedFeature

Anything else is re-raised as the host's ``CommandFailed``. Each typed error keeps the original
``CommandFailed`` as ``__cause__`` and as ``.failure``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence

from ..errors import (
    CommandFailed,
    DatasetBusy,
    DatasetExists,
    DatasetHasDependents,
    DatasetNotFound,
    DestinationModified,
    PoolFull,
    UnsupportedFeature,
    UsageError,
    ZfsError,
)
from ..hosts.base import DEFAULT_TIMEOUT, CommandResult, Host

__all__ = ["ERROR_PATTERNS", "ZFS_PROGRAMS", "MappedError", "in_flight", "map_failure", "run"]

log = logging.getLogger("zfs_backend.zfs")

ZFS_PROGRAMS = frozenset({"zfs", "zpool"})

# Order matters: the first match wins ("cannot destroy: dataset is busy" before anything generic).
ERROR_PATTERNS: tuple[tuple[re.Pattern[str], type[ZfsError]], ...] = tuple(
    (re.compile(p, re.IGNORECASE), t)
    for p, t in (
        (r"has been modified\s+since most recent snapshot", DestinationModified),
        # OpenZFS 2.x refuses to destroy a held snapshot with "it's being held" (zfs-fuse: "busy")
        (
            r"dataset is busy|pool is busy|target is busy|resource busy|device busy|it's being held",
            DatasetBusy,
        ),
        (r"out of space|no space left", PoolFull),
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


def map_failure(failure: CommandFailed) -> MappedError:
    """The typed error for a failed zfs/zpool command, or ``failure`` itself if unknown."""
    for pattern, etype in ERROR_PATTERNS:
        if pattern.search(failure.stderr):
            # One line: the node and zfs's own reason, which names the dataset.
            reason = " ".join(failure.stderr.split()) if etype is DestinationModified else None
            err = etype(f"{failure.node}: {reason or _first_line(failure.stderr)}")
            err.failure = failure  # type: ignore[attr-defined]
            err.__cause__ = failure
            return err
    return failure


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
