"""The ``backup`` and ``restore`` activity kinds: a volume's dataset to stream files on a backup node and
back (the backup node's side is :mod:`.backupstore`).

``backup`` runs on the volume's node: a snapshot ``@backup-<backup id>`` of the dataset (the volume stays
in use and keeps its state: a ZFS snapshot is atomic), then ``zfs send [-i @backup-<parent>]`` → relay →
``ssh BACKUP_NODE zfs-backend backup-write VOLUME BACKUP`` (the backup node's narrow key; it only creates
the stream file of an entry its agent opened). ``incremental``: from the newest complete backup of the
volume, whose snapshot the dataset must still hold with the same GUID (else: make a full one). On success
the backup node's agent records the stream's size and SHA-256 in the manifest (``commit``) and older
``@backup-*`` snapshots of the dataset go, each only when its name and GUID are a manifest entry's (the
newest stays: the next incremental's base). Cancel or a final failure: the backup node drops the
unfinished entry and its partial file; the snapshot goes when its GUID is the one this backup made.

``restore`` runs on the node that will hold the restored volume: first the backup node's agent verifies
the whole chain (full → ... → the backup), every stream's SHA-256 against the manifest, and refuses a
corrupted one with one line before anything is applied; then each stream in order:
``ssh BACKUP_NODE zfs-backend backup-read VOLUME ID`` → relay → ``zfs receive DEST`` (never ``-F``; the
destination must not exist). Cancel or a final failure destroys the destination, which is provably this
restore's (it did not exist, it holds snapshots and every one has a GUID from the chain, no child); a
destination without a snapshot (a partial first stream, or someone's dataset) is left, and said so. On
success the restored dataset is marked (``zfs_backend:receiver``) and its ``@backup-*`` snapshots go.

Both kinds take ``grant``: the backup node's grant for the volume (``backup``; the controller asks for it,
see :mod:`.granted`), carried by every ``backup.*`` call.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..activity.core import ActivityContext, register_kind
from ..activity.pipeline import Endpoint, PipelineActivity
from ..activity.relay import MAX_BWLIMIT_BPS
from ..activity.report import ActivityRecord
from ..errors import (
    BackupCorrupt,
    BackupError,
    BackupNotFound,
    DatasetExists,
    DatasetNotFound,
    UsageError,
    ZfsBackendError,
)
from ..hosts.peer import DEFAULT_CIPHER, validate_cipher
from ..replication.upkeep import PERMANENT, dialect_for_recv
from ..replication.wire import RECEIVER_PROP, validate_grant
from ..zfs.api import Zfs
from ..zfs.models import RecvSpec, SendSpec
from ..zfs.names import DatasetName, SnapshotName, parse_dataset, validate_node
from .backupstore import validate_backup_id

__all__ = ["BACKUP_KIND", "RESTORE_KIND", "SNAP_PREFIX", "Backup", "Restore"]

BACKUP_KIND = "backup"
RESTORE_KIND = "restore"
SNAP_PREFIX = "backup-"


def _params(p: Any, kind: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(p, dict):
        raise UsageError(f"{kind} params must be a JSON object")
    unknown = sorted(set(p) - set(required) - set(optional) - {"max_retries", "backoff_s", "grant"})
    if unknown:
        raise UsageError(f"{kind} params {', '.join(map(repr, unknown))} are not accepted")
    for k in required:
        if not isinstance(p.get(k), str):
            raise UsageError(f"{kind} param {k!r} is required (a string)")
    return p


class _BackupBase(PipelineActivity):
    restart_mode = "rerun"
    max_retries = 3
    backoff_s = 2.0

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        p = record.params
        self.volume = validate_backup_id(p["volume_id"], "volume id")
        self.backup_node = validate_node(p["backup_node"])
        cipher = validate_cipher(p.get("cipher") or DEFAULT_CIPHER)
        bw = p.get("bwlimit_bps")
        if bw is not None and (
            isinstance(bw, bool) or not isinstance(bw, int) or not 0 < bw <= MAX_BWLIMIT_BPS
        ):
            raise UsageError(f"param 'bwlimit_bps' must be a whole number from 1 to {MAX_BWLIMIT_BPS}")
        self.bwlimit_bps = bw
        self.grant = None if p.get("grant") is None else validate_grant(p["grant"])
        self.tune_retries(p, "bad param")
        self._peer = ctx.peer_host(self.backup_node, cipher)
        super().__init__(record, ctx)
        self._zfs = Zfs(ctx.host(None))

    def _call(self, verb: str, **args: Any) -> Any:
        if self.grant is not None:
            args["grant"] = self.grant
        return self.ctx.peer_agent(self.backup_node).call(f"backup.{verb}", volume=self.volume, **args)

    def retryable(self, error: ZfsBackendError, status: int) -> bool:
        if isinstance(self.build_error, BackupError | DatasetNotFound | UsageError):
            return False
        return not isinstance(error, (*PERMANENT, BackupCorrupt))

    def _save(self, **result: Any) -> None:
        with contextlib.suppress(Exception):
            self._persist()
        self.ctx.store.save_result(self.id, result)
        with contextlib.suppress(Exception):
            self._refresh()


class Backup(_BackupBase):
    """The ``backup`` kind (see the module doc)."""

    KIND = BACKUP_KIND

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        p = _params(
            record.params,
            BACKUP_KIND,
            ("dataset", "volume_id", "backup_id", "backup_node"),
            ("incremental", "cipher", "bwlimit_bps"),
        )
        self.dataset = parse_dataset(p["dataset"])
        self.backup = validate_backup_id(p["backup_id"])
        if not isinstance(p.get("incremental", False), bool):
            raise UsageError("backup param 'incremental' must be true or false")
        self.incremental = bool(p.get("incremental", False))
        super().__init__(record, ctx)

    def _snap(self, backup: str) -> SnapshotName:
        return self.dataset.snapshot(f"{SNAP_PREFIX}{backup}")

    def plan(self) -> None:
        if not self._zfs.exists(self.dataset):
            raise DatasetNotFound(f"{self.ctx.node}: {self.dataset} does not exist")
        parent = None
        if self.incremental:
            done = [e for e in self._call("list") if e.get("state") == "complete"]
            if not done:
                raise BackupNotFound(f"volume {self.volume} has no backup yet: make a full one first")
            newest = max(done, key=lambda e: float(e.get("completed_at") or 0))
            snap = self._snap(str(newest["id"]))
            have = {s.name: s.guid for s in self._zfs.list_snapshots(self.dataset)}
            if have.get(snap) != newest.get("guid"):
                raise BackupNotFound(
                    f"volume {self.volume}: the base of its newest backup {newest['id']} is gone from "
                    f"{self.ctx.node} (moved or deleted): make a full backup"
                )
            parent = str(newest["id"])
        self._call("begin", backup=self.backup, holder=self.id, parent=parent)
        est = int(self._zfs.get_int(self.dataset, "referenced") or 0)
        self.kind_state.update({"parent": parent, "estimate": est})

    def estimate_total(self) -> int:
        return int(self.kind_state.get("estimate", 0))

    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        self._call("begin", backup=self.backup, holder=self.id, parent=self.kind_state.get("parent"))

    def build_producer(self, offset: int) -> Endpoint:
        ks = self.kind_state
        snap = self._snap(self.backup)
        if not self._zfs.exists(snap):
            self._zfs.snapshot(snap)
        ks["guid"] = int(self._zfs.get_int(snap, "guid") or 0)
        parent = ks.get("parent")
        spec = SendSpec(snap, incremental_from=self._snap(parent) if parent else None)
        if parent:
            from ..replication.estimate import estimate_send

            with contextlib.suppress(ZfsBackendError):
                self.revise_total(estimate_send(self._zfs, spec).bytes)
        return Endpoint(self._zfs.host, self._zfs.send_argv(spec))

    def build_consumer(self, offset: int) -> Endpoint:
        self._peer.stream_multiplex = True
        argv = ["zfs-backend", "backup-write", self.volume, self.backup]
        return Endpoint(self._peer, argv, counts_network=False)

    def on_success(self) -> None:
        ks = self.kind_state
        entry = self._call(
            "commit",
            backup=self.backup,
            holder=self.id,
            snapshot=f"{SNAP_PREFIX}{self.backup}",
            guid=ks["guid"],
        )
        # the newest stays (the next incremental's base); an older one goes only when it is a backup's
        # own snapshot: its name and GUID are an entry's of this volume's manifest
        ours = {self._snap(str(e.get("id"))): e.get("guid") for e in self._call("list")}
        for s in self._zfs.list_snapshots(self.dataset):
            if s.name != self._snap(self.backup) and s.name in ours and ours[s.name] == s.guid:
                with contextlib.suppress(ZfsBackendError):
                    self._zfs.destroy(s.name, deadline=30.0, missing_ok=True)
        self._save(backup=entry, backup_node=self.backup_node)

    def rollback(self) -> None:
        if "estimate" not in self.kind_state:
            return
        report = self._call("abort", backup=self.backup, holder=self.id)
        snap, guid = self._snap(self.backup), self.kind_state.get("guid")
        if guid and self._zfs.exists(snap) and self._zfs.get_int(snap, "guid") == int(guid):
            self._zfs.destroy(snap, deadline=30.0, missing_ok=True)  # the one it made (its GUID)
        self._save(aborted=report, backup_node=self.backup_node)

    def on_final_failure(self) -> None:
        self.rollback()


class Restore(_BackupBase):
    """The ``restore`` kind (see the module doc)."""

    KIND = RESTORE_KIND
    consumer_ends_stream = True  # zfs receive exits at the END record, maybe before ssh's EOF

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        p = _params(
            record.params,
            RESTORE_KIND,
            ("volume_id", "backup_id", "backup_node", "destination"),
            ("cipher", "bwlimit_bps"),
        )
        self.backup = validate_backup_id(p["backup_id"])
        self.destination: DatasetName = parse_dataset(p["destination"])
        super().__init__(record, ctx)

    def plan(self) -> None:
        dest = self.destination
        if self._zfs.exists(dest):
            raise DatasetExists(f"{self.ctx.node}: {dest} exists already; a restore only creates")
        if dest.parent is None or not self._zfs.exists(dest.parent):
            raise DatasetNotFound(f"{self.ctx.node}: the destination's parent {dest.parent} does not exist")
        chain = self._call("verify", backup=self.backup)  # BackupCorrupt: nothing applied
        self.kind_state.update(
            {
                "chain": [{"id": e["id"], "guid": int(e["guid"]), "size": int(e["size"])} for e in chain],
                "index": 0,
                "estimate": sum(int(e["size"]) for e in chain),
            }
        )

    def estimate_total(self) -> int:
        return int(self.kind_state.get("estimate", 0))

    def _guids(self) -> set[int]:
        return {int(e["guid"]) for e in self.kind_state.get("chain", [])}

    def _held(self) -> set[int]:
        if not self._zfs.exists(self.destination):
            return set()
        return {s.guid for s in self._zfs.list_snapshots(self.destination)}

    def build_producer(self, offset: int) -> Endpoint:
        ks = self.kind_state
        entry = ks["chain"][int(ks["index"])]
        if int(entry["guid"]) in self._held():  # received before a restart: nothing to stream
            return Endpoint(self._zfs.host, ["true"])
        self._peer.stream_multiplex = True
        argv = ["zfs-backend", "backup-read", self.volume, str(entry["id"])]
        return Endpoint(self._peer, argv, counts_network=False)

    def build_consumer(self, offset: int) -> Endpoint:
        ks = self.kind_state
        if int(ks["chain"][int(ks["index"])]["guid"]) in self._held():
            return Endpoint(self._zfs.host, ["true"])
        return Endpoint(self._zfs.host, RecvSpec(target=self.destination).argv(dialect_for_recv({})))

    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        if self._zfs.exists(self.destination) and not self._held():
            left = self._remove()  # a snapshot-less destination is not provably this restore's
            if left:
                raise DatasetExists(f"{self.ctx.node}: {left[0]}")

    def next_stream(self) -> bool:
        ks = self.kind_state
        ks["index"] = int(ks["index"]) + 1
        self._save(restored=[e["id"] for e in ks["chain"][: ks["index"]]], destination=str(self.destination))
        return int(ks["index"]) < len(ks["chain"])

    def on_success(self) -> None:
        last = int(self.kind_state["chain"][-1]["guid"])
        if last not in self._held():
            raise BackupError(f"{self.ctx.node}: {self.destination} does not hold the restored snapshot")
        self._zfs.set(self.destination, RECEIVER_PROP, self.id)
        chain = self._guids()
        for s in self._zfs.list_snapshots(self.destination):  # the chain's own (GUID), not a namesake
            if s.snap.startswith(SNAP_PREFIX) and s.guid in chain:
                self._zfs.destroy(s.name, deadline=30.0, missing_ok=True)
        self._save(destination=str(self.destination), restored=[e["id"] for e in self.kind_state["chain"]])

    def _remove(self) -> list[str]:
        """Destroy the destination when it is provably this restore's: it holds snapshots, every one from
        the chain (a plain receive of the chain's full stream made it: nobody else's dataset holds those
        GUIDs), and no child. A destination without a snapshot proves nothing (someone may have created
        it after the plan): it is left, and said so."""
        if not self._zfs.exists(self.destination):
            return []
        snaps = self._zfs.list_snapshots(self.destination)
        if not snaps:
            return [
                f"{self.destination}: holds no snapshot; nothing proves this restore created it; left alone"
            ]
        if any(s.guid not in self._guids() for s in snaps):
            return [f"{self.destination}: holds a snapshot this restore did not make; left alone"]
        if any(d.name != self.destination for d in self._zfs.list_datasets(self.destination, recursive=True)):
            return [f"{self.destination}: holds datasets this restore did not make; left alone"]
        self._zfs.destroy(self.destination, recursive=True, deadline=30.0, missing_ok=True)
        return []

    def rollback(self) -> None:
        if "chain" not in self.kind_state:
            return
        left = self._remove()
        self._save(destination=str(self.destination), left_alone=left, rolled_back=not left)

    def on_final_failure(self) -> None:
        self.rollback()


register_kind(BACKUP_KIND, Backup)
register_kind(RESTORE_KIND, Restore)
