"""The backup node's side of volume backups: a directory of stream files with a manifest per volume, as
Cinder's posix backup driver keeps backups on a filesystem.

Layout under ``Settings.backup_dir`` (``$ZFS_BACKEND_HOME/backups``; directories 0700, files 0600)::

    <volume id>/manifest.json        {"volume": id, "backups": [entry, ...]}  (rewritten atomically)
    <volume id>/<backup id>.zstream  one ``zfs send`` stream: full, or incremental from its parent
    <volume id>/<backup id>.zstream.partial   while it is being written

An entry: ``id``, ``parent`` (None: a full stream), ``snapshot`` (the source snapshot's short name),
``guid`` and ``base_guid`` (the parent's GUID: what an incremental needs on the receiving side),
``size`` and ``sha256`` of the stream file, ``created_at``, ``state`` (``writing`` or ``complete``), the
``holder`` (the backup activity's id) while writing, and the ``peer`` node that wrote it (None: the
controller's socket) with its ``grant``. What a peer may see and do: :mod:`.backup_access`. A restore
replays the chain full → ... → backup.

Who writes what: the node's **agent** (``backup.*`` ops, reached by peers on its peer socket) opens an
entry (``begin``), checks and records the written file (``commit``: size and SHA-256 computed here, from
the file itself), drops an unfinished one (``abort``, only its own holder's, never a complete entry),
lists, and verifies a chain before a restore (``verify``: every stream's SHA-256, a mismatch refused
with one line). The stream itself arrives through the peer's narrow key as ``zfs-backend backup-write
VOLUME BACKUP`` (``peer-exec``), which only creates the ``.partial`` file of an entry the agent opened
(``O_EXCL``, never over an existing file), and leaves through ``zfs-backend backup-read VOLUME BACKUP``,
which only reads a complete entry's file and fails at the end if its SHA-256 does not match.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import AlreadyRunning, BackupCorrupt, BackupError, BackupNotFound, UsageError
from ..private import private_dir, private_open
from ..replication.wire import validate_backup_id

__all__ = ["BackupStore", "read_stream", "validate_backup_id", "write_stream"]

_CHUNK = 1 << 20
_HOLDER = re.compile(r"act-[0-9A-HJKMNP-TV-Z]{26}")


def _holder(value: object) -> str:
    if not isinstance(value, str) or not _HOLDER.fullmatch(value):
        raise UsageError(f"invalid activity id {ascii(value)[:80]}")
    return value


def _sha256(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class BackupStore:
    """The backups kept on this node (see the module doc). Thread-safe; a file lock per volume keeps
    the manifest consistent with the ``backup-write``/``backup-read`` processes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- files

    def _dir(self, volume: str, create: bool = False) -> Path:
        d = self.root / validate_backup_id(volume, "volume id")
        if create:
            private_dir(d)
        return d

    def stream_path(self, volume: str, backup: str, partial: bool = False) -> Path:
        name = f"{validate_backup_id(backup)}.zstream" + (".partial" if partial else "")
        return self._dir(volume) / name

    @contextlib.contextmanager
    def _locked(self, volume: str) -> Iterator[Path]:
        d = self._dir(volume, create=True)
        fd = private_open(d / ".lock", os.O_RDWR)
        try:
            with self._lock:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield d
        finally:
            os.close(fd)

    def _load(self, volume: str) -> dict[str, Any]:
        try:
            with open(self._dir(volume) / "manifest.json", encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"volume": volume, "backups": []}
        except (OSError, ValueError) as e:
            raise BackupError(f"{volume}: unreadable manifest: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("backups"), list):
            raise BackupError(f"{volume}: malformed manifest")
        return data

    def _save(self, d: Path, manifest: dict[str, Any]) -> None:
        tmp = d / "manifest.json.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = private_open(tmp, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / "manifest.json")
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _entry(manifest: dict[str, Any], backup: str) -> dict[str, Any] | None:
        return next((e for e in manifest["backups"] if e.get("id") == backup), None)

    def find(self, volume: str, backup: str) -> dict[str, Any] | None:
        """The manifest entry of ``backup`` of ``volume``, or None (also when the store holds nothing of
        ``volume``: its directory is not made). Both ids validated."""
        if not self._dir(volume).is_dir():
            return None
        return self._entry(self._load(volume), validate_backup_id(backup))

    # ---------------------------------------------------------------- agent ops

    def begin(
        self,
        volume: str,
        backup: str,
        holder: str,
        parent: str | None = None,
        *,
        peer: str | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """Open the entry ``backup`` for ``holder`` (again after a restart: its partial file goes).
        ``peer``/``grant``: the peer node writing it and its grant (recorded in the entry)."""
        validate_backup_id(backup)
        _holder(holder)
        if parent is not None:
            validate_backup_id(parent, "parent backup id")
        with self._locked(volume) as d:
            m = self._load(volume)
            e = self._entry(m, backup)
            if e is not None and e.get("state") == "complete":
                raise BackupError(f"backup {backup} of volume {volume} exists already")
            if e is not None and e.get("holder") != holder:
                raise AlreadyRunning(f"backup {backup} of volume {volume} is written by {e.get('holder')}")
            base_guid = None
            if parent is not None:
                pe = self._entry(m, parent)
                if pe is None or pe.get("state") != "complete":
                    raise BackupNotFound(f"volume {volume} has no complete backup {parent} to build on")
                base_guid = pe.get("guid")
            with contextlib.suppress(FileNotFoundError):
                self.stream_path(volume, backup, partial=True).unlink()
            if e is None:
                e = {
                    "id": backup,
                    "parent": parent,
                    "base_guid": base_guid,
                    "state": "writing",
                    "holder": holder,
                    "peer": peer,
                    "grant": grant,
                    "created_at": time.time(),
                }
                m["backups"].append(e)
                self._save(d, m)
            return dict(e)

    def commit(self, volume: str, backup: str, holder: str, *, snapshot: str, guid: int) -> dict[str, Any]:
        """Record the written stream of ``backup``: its size and SHA-256, read from the file."""
        _holder(holder)
        with self._locked(volume) as d:
            m = self._load(volume)
            e = self._entry(m, backup)
            if e is None or e.get("holder") != holder or e.get("state") != "writing":
                raise BackupNotFound(f"no backup {backup} of volume {volume} is being written by {holder}")
            part = self.stream_path(volume, backup, partial=True)
            if not part.exists():
                raise BackupNotFound(f"backup {backup} of volume {volume}: no stream was written")
            size, digest = _sha256(part)
            os.replace(part, self.stream_path(volume, backup))
            e.update(
                {
                    "state": "complete",
                    "holder": None,
                    "size": size,
                    "sha256": digest,
                    "snapshot": str(snapshot),
                    "guid": int(guid),
                    "completed_at": time.time(),
                }
            )
            self._save(d, m)
            return dict(e)

    def abort(self, volume: str, backup: str, holder: str) -> dict[str, Any]:
        """Drop ``holder``'s unfinished entry and its partial file; a complete entry is never touched."""
        _holder(holder)
        with self._locked(volume) as d:
            m = self._load(volume)
            e = self._entry(m, backup)
            if e is None or e.get("holder") != holder or e.get("state") != "writing":
                return {"removed": False}
            with contextlib.suppress(FileNotFoundError):
                self.stream_path(volume, backup, partial=True).unlink()
            m["backups"].remove(e)
            self._save(d, m)
            return {"removed": True}

    def list(self, volume: str | None = None) -> builtins.list[dict[str, Any]]:
        vols = [volume] if volume is not None else sorted(p.name for p in self.root.glob("*") if p.is_dir())
        out = []
        for v in vols:
            if not self._dir(v).is_dir():
                continue
            for e in self._load(v)["backups"]:
                out.append({**e, "volume": v})
        return out

    def chain(self, volume: str, backup: str) -> builtins.list[dict[str, Any]]:
        """The complete entries a restore of ``backup`` replays, full first."""
        m = self._load(volume)
        out: list[dict[str, Any]] = []
        cur: str | None = validate_backup_id(backup)
        while cur is not None:
            e = self._entry(m, cur)
            if e is None or e.get("state") != "complete":
                what = "is not complete" if e is not None else "is missing"
                raise BackupNotFound(f"backup {cur} of volume {volume} {what}")
            if len(out) > len(m["backups"]):
                raise BackupError(f"volume {volume}: the manifest's chain loops")
            out.append(dict(e))
            cur = e.get("parent")
        return list(reversed(out))

    def verify(self, volume: str, backup: str) -> builtins.list[dict[str, Any]]:
        """The chain of ``backup``, every stream file checked against its size and SHA-256."""
        chain = self.chain(volume, backup)
        for e in chain:
            path = self.stream_path(volume, e["id"])
            try:
                size, digest = _sha256(path)
            except FileNotFoundError:
                raise BackupCorrupt(
                    f"backup {e['id']} of volume {volume}: stream file {path.name} is missing"
                ) from None
            if (size, digest) != (e.get("size"), e.get("sha256")):
                raise BackupCorrupt(
                    f"backup {e['id']} of volume {volume}: stream file {path.name} is corrupted "
                    f"(sha256 {digest[:16]}…, {size} bytes; the manifest says {str(e.get('sha256'))[:16]}…, "
                    f"{e.get('size')} bytes); nothing was restored"
                )
        return chain


# ---------------------------------------------------------------- peer-exec streams


def write_stream(store: BackupStore, volume: str, backup: str, src: IO[bytes]) -> int:
    """``backup-write``: copy ``src`` into the partial file of an entry the agent opened. Returns bytes."""
    with store._locked(volume):
        e = store._entry(store._load(volume), validate_backup_id(backup))
        if e is None or e.get("state") != "writing":
            raise BackupNotFound(f"no backup {backup} of volume {volume} is open for writing")
        fd = os.open(
            store.stream_path(volume, backup, partial=True),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
    n = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            n += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return n


def read_stream(store: BackupStore, volume: str, backup: str, dst: IO[bytes]) -> int:
    """``backup-read``: copy a complete entry's stream to ``dst``; ``BackupCorrupt`` at the end when its
    SHA-256 differs from the manifest's (the receiver then gets a failed producer)."""
    e = store._entry(store._load(volume), validate_backup_id(backup))
    if e is None or e.get("state") != "complete":
        raise BackupNotFound(f"no complete backup {backup} of volume {volume}")
    h, n = hashlib.sha256(), 0
    with open(store.stream_path(volume, backup), "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            dst.write(chunk)
            n += len(chunk)
    dst.flush()
    if h.hexdigest() != e.get("sha256"):
        raise BackupCorrupt(f"backup {backup} of volume {volume}: stream file is corrupted (sha256 mismatch)")
    return n
