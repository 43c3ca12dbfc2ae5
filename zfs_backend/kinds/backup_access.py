"""The ``backup.*`` ops and ``peer-exec``'s backup streams, as the controller and as a peer may use them.

The controller's socket (``peer`` None) reaches the whole store (:mod:`.backupstore`). A **peer session**
(``authority``: :class:`~zfs_backend.replication.authority.PeerAuthority`) reaches only:

* ``backup.begin``: with a live ``backup`` grant of this peer for that volume (bound to the backup's
  holder; the entry records the peer and the grant, which is consumed by ``commit`` or ``abort``);
* ``backup.commit`` / ``backup.abort``: the entries this peer is writing;
* ``backup.list`` / ``backup.verify`` / ``backup-read``: the backups of volumes this peer holds a live
  backup grant for, or entries it wrote itself; ``backup-write``: an entry it opened.

Everything else is refused with one line (``NotGranted`` / ``BackupNotFound``), before any file is touched.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackupNotFound, NotGranted, ProtocolError
from ..replication.authority import PeerAuthority
from .backupstore import BackupStore, validate_backup_id

__all__ = ["admit", "op"]


def _may_read(store: BackupStore, auth: PeerAuthority, peer: str, volume: str, backup: str) -> None:
    if volume in auth.granted_volumes(peer):
        return
    e = store.find(volume, backup)
    if e is None or e.get("peer") != peer:
        raise NotGranted(f"{peer} holds no backup grant for volume {volume}")


def _writing(store: BackupStore, peer: str, volume: str, backup: str) -> dict[str, Any]:
    e = store.find(volume, backup)
    if e is None or e.get("peer") != peer or e.get("state") != "writing":
        raise BackupNotFound(f"no backup {backup} of volume {volume} is being written by {peer}")
    return e


def op(
    store: BackupStore, auth: PeerAuthority | None, peer: str | None, verb: str, args: dict[str, Any]
) -> Any:
    """One ``backup.<verb>`` op; ``peer`` None: the controller's socket (everything)."""
    try:
        if verb == "list":
            vol = args.get("volume")
            entries = store.list(None if vol is None else validate_backup_id(vol, "volume id"))
            if peer is None or auth is None:
                return entries
            granted = auth.granted_volumes(peer)
            return [e for e in entries if e["volume"] in granted or e.get("peer") == peer]
        volume = validate_backup_id(args["volume"], "volume id")
        backup = validate_backup_id(args["backup"])
        if verb == "verify":
            if peer is not None and auth is not None:
                _may_read(store, auth, peer, volume, backup)
            return store.verify(volume, backup)
        holder = str(args["holder"])
        if verb == "begin":
            parent = args.get("parent")
            grant = None
            if peer is not None and auth is not None:
                g = auth.backup_grant(peer, volume, args.get("grant"))
                e = store.find(volume, backup)
                if e is not None and e.get("peer") != peer:
                    raise NotGranted(f"backup {backup} of volume {volume} is not {peer}'s")
                auth.grants.bind(g.id, holder)
                grant = g.id
            return store.begin(
                volume, backup, holder, None if parent is None else str(parent), peer=peer, grant=grant
            )
        if verb in ("commit", "abort"):
            e = store.find(volume, backup)
            if peer is not None and verb == "abort" and (e is None or e.get("peer") != peer):
                return {"removed": False}
            if peer is not None:
                e = _writing(store, peer, volume, backup)
            if verb == "commit":
                out = store.commit(
                    volume, backup, holder, snapshot=str(args["snapshot"]), guid=int(args["guid"])
                )
            else:
                out = store.abort(volume, backup, holder)
            if auth is not None and e is not None and e.get("grant"):
                auth.grants.consume(str(e["grant"]), holder)
            return out
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"backup.{verb}: bad arguments: {e}") from None
    raise ProtocolError(f"unknown op backup.{verb}")


def admit(
    store: BackupStore, auth: PeerAuthority, peer: str, what: str, args: dict[str, Any]
) -> dict[str, Any]:
    """``peer.admit`` for ``backup-write`` (an entry this peer opened) / ``backup-read`` (see module doc)."""
    volume = validate_backup_id(args.get("volume"), "volume id")
    backup = validate_backup_id(args.get("backup"))
    if what == "backup-write":
        _writing(store, peer, volume, backup)
    else:
        _may_read(store, auth, peer, volume, backup)
    return {"volume": volume, "backup": backup}
