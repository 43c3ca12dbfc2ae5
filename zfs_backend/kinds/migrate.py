"""The ``migrate`` activity kind: move a dataset (a volume) to another node while it stays in use.

It runs inside the **source** node's agent and reuses the ``replicate`` machinery: the stream is
``zfs send`` → the activity's relay → ``ssh DEST zfs receive`` (:class:`~.transport.PeerHost`, the node's
narrow key), and everything it needs from the destination goes through the destination agent's
receiving end (:class:`~.remote.RemoteReceiver`: one claim for the whole migration, read-only lock,
exact change detection, finish/abort). Nothing is ever received with ``-F``. Phases (``result.phase``):

``full``
    snapshot ``@migrate-<id>-0``, a full stream into a dataset that must not exist on the destination.
``catchup``
    while the volume stays in use: snapshot ``@migrate-<id>-<i>``, incremental from the previous one;
    again until a round moves less than ``catchup_below`` bytes or ``max_rounds`` rounds ran.
``quiesce``
    the source dataset is made read-only (writes fail from then on: nothing acknowledged after the
    last snapshot), a last snapshot and its increment, then the destination's ``finish`` verifies the
    final GUID. The activity succeeds with the source still read-only and intact: the caller (the
    migration flow's ``driver.migration.Switch``) switches the export to the new node and removes the old
    copy only after it checked the new one (``result`` says what to undo: ``readonly_was``, the snapshots).

``hold_at`` (``catchup``, ``quiesce`` or both: ``catchup+quiesce``): the activity suspends itself before
that phase, once each (an operator pre-syncs and cuts over later with ``resume``; the driver's controller
always holds it before the quiesce to unexport the source first). ``cancel()`` or a final failure, at
any phase: the destination's ``abort`` destroys the dataset this migration created (provably its own:
every snapshot's GUID one it sent), the source gets its ``readonly`` back and loses the
``@migrate-<id>-*`` snapshots; the volume is where it was, usable. A restart (agent crash, cut link)
asks the destination what it holds and goes on from the newest snapshot both sides have, as
``replicate`` does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ..activity.core import ActivityContext, register_kind
from ..activity.pipeline import Endpoint, PipelineActivity
from ..activity.report import ActivityRecord
from ..activity.states import RUNNING, SUSPENDED
from ..errors import (
    DatasetBusy,
    DatasetNotFound,
    DestinationExistsConflict,
    ReplicationConflict,
    UsageError,
    ZfsBackendError,
)
from ..hosts.local import LocalHost
from ..replication.estimate import Estimate, check_space, estimate_send
from ..replication.migrate_request import KIND, PHASES, SNAP_PREFIX, MigrateRequest
from ..replication.plan import ALREADY_RUNNING, Conflict
from ..replication.remote import RemoteReceiver
from ..replication.upkeep import PERMANENT, ReceiverUpkeep, check_filesystem_versions, dialect_for_recv
from ..zfs.api import Zfs
from ..zfs.models import RecvSpec, SendSpec
from ..zfs.names import DatasetName, SnapshotName

__all__ = ["KIND", "PHASES", "SNAP_PREFIX", "Migrate", "MigrateRequest", "restore_readonly"]

#: how long the quiesce waits for the source to be free (the controller has unexported it)
UNMOUNT_WAIT_S = 60.0
_START_LOCK = threading.Lock()


def restore_readonly(zfs: Zfs, ds: DatasetName, how: str | None) -> None:
    """Give ``ds`` back the ``readonly`` it had before a quiesce (``how``: ``local`` = it was set off
    locally, ``inherit`` = it inherited; None: nothing was changed)."""
    if how == "local":
        zfs.set(ds, "readonly", "off")
    elif how == "inherit":
        zfs.inherit(ds, "readonly")


class Migrate(ReceiverUpkeep, PipelineActivity):
    """The ``migrate`` kind (see the module doc)."""

    KIND = KIND
    restart_mode = "rerun"
    max_retries = 5
    backoff_s = 2.0
    backoff_max_s = 30.0

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        self.request = MigrateRequest.from_params(record.params)
        p = record.params
        self.tune_retries(p, "bad migrate param")
        self.space_check = p.get("space_check", True) is not False
        self.bwlimit_bps = self.request.bwlimit_bps
        self._peer = ctx.peer_host(self.request.destination_node, self.request.cipher)
        super().__init__(record, ctx)
        self._check_twin()
        self._zfs = Zfs(ctx.host(None))
        self._replan = False
        self._noop = False
        self._last_renew = time.monotonic()

    def _check_twin(self) -> None:
        for rec in self.ctx.store.non_terminal():
            same = rec.params.get("dataset") == str(self.request.dataset)
            if rec.kind == KIND and rec.id != self.id and same:
                raise Conflict(ALREADY_RUNNING, f"{rec.id} already migrates {self.request.dataset}").error()

    @property
    def receiver(self) -> RemoteReceiver:
        req = self.request
        return RemoteReceiver(self.ctx.peer_agent(req.destination_node), req.destination, self.id, req.grant)

    def _source(self) -> str:
        return f"{self.ctx.node}:{self.request.dataset}"

    def _snap(self, i: int) -> SnapshotName:
        return self.request.dataset.snapshot(f"{SNAP_PREFIX}{self.id}-{i}")

    def _guids(self) -> list[int]:
        return [int(g) for g in self.kind_state.get("snaps", [])]

    # -- hosting ----------------------------------------------------------------------------------
    def persist_new(self) -> ActivityRecord:
        try:
            with _START_LOCK:
                self._check_twin()
                return super().persist_new()
        except BaseException:
            with contextlib.suppress(Exception):
                self.receiver.release()
            raise

    def plan(self) -> None:
        req = self.request
        if not self._zfs.exists(req.dataset):
            raise DatasetNotFound(f"{self.ctx.node}: {req.dataset} does not exist")
        dst = self.receiver.begin(self._source(), recursive=False, sent_guids=[])
        try:
            if dst.exists:
                raise DestinationExistsConflict(
                    f"{req.destination_node}:{req.destination} exists already; a migration only creates"
                )
            where = f"{req.destination_node}:{req.destination}"
            check_filesystem_versions(self._zfs, [req.dataset], dst, self.ctx.node, where)
            est = int(self._zfs.get_int(req.dataset, "referenced") or 0)
            if self.space_check:
                check_space(dst.available, Estimate(est, False, "referenced"), f"{req.destination_node}")
        except BaseException:
            with contextlib.suppress(Exception):
                self.receiver.release()
            raise
        self.kind_state.update(
            {
                "phase": "full",
                "round": 0,
                "snaps": [],
                "rounds": [],
                "estimate": est,
                "dest_dialect": dst.dialect,
                "resumable": False,
                "recv_properties": dst.recv_properties,
            }
        )

    def estimate_total(self) -> int:
        return int(self.kind_state.get("estimate", 0))

    # -- the streams ------------------------------------------------------------------------------
    def _ensure_snapshot(self, i: int) -> int:
        """Snapshot round ``i`` (adopting it when a crash came between the snapshot and its record) and
        tell the destination its GUID is one this migration sends (what lets ``abort`` remove it)."""
        snaps = self._guids()
        if i < len(snaps):
            return snaps[i]
        name = self._snap(i)
        if not self._zfs.exists(name):
            self._zfs.snapshot(name)
        guid = int(self._zfs.get_int(name, "guid") or 0)
        self.kind_state["snaps"] = [*snaps, guid]
        self._persist()
        self.receiver.begin(self._source(), recursive=False, sent_guids=self._guids())
        return guid

    def _quiesce(self) -> None:
        """No write is acknowledged after the last snapshot: the source read-only, then unmounted (each
        step recorded before it is made, so that a cancel undoes it).

        Read-only alone is not a barrier: measured on zfs-fuse, an NFS client writes through nfs-ganesha
        after ``zfs set readonly=on`` (the server's open file handles bypass it). An unmount succeeds only
        once nothing holds a file of the dataset open, and nothing writes to an unmounted dataset. The
        controller unexports the volume before it lets this phase run (it starts the activity with
        ``hold_at="quiesce"``); a source still in use after ``UNMOUNT_WAIT_S`` fails the migration, the
        volume where it was."""
        ks, ds = self.kind_state, self.request.dataset
        if ks.get("quiesced_at"):
            return
        value, source = self._zfs.get_with_source(ds, "readonly")
        ks["readonly_was"] = (
            None if value == "on" and source != "temporary" else ("local" if source == "local" else "inherit")
        )
        self._persist()
        if ks["readonly_was"] is not None:
            self._zfs.set(ds, "readonly", "on")
        if self._zfs.is_mounted(ds):
            ks["unmounted"] = True
            self._persist()
            try:
                self._zfs.unmount(ds, deadline=UNMOUNT_WAIT_S)
            except DatasetBusy:
                raise ZfsBackendError(
                    f"{self.ctx.node}:{ds} is still in use after {UNMOUNT_WAIT_S:.0f} s (exported, or a file "
                    "open on the node): it cannot be quiesced; the volume stays where it is"
                ) from None
        ks["quiesced_at"] = time.time()
        self._save()

    def build_producer(self, offset: int) -> Endpoint:
        ks = self.kind_state
        self._noop = False
        if ks["phase"] == "quiesce":
            self._quiesce()
        i = int(ks["round"])
        self._ensure_snapshot(i)
        base = self._snap(i - 1) if i > 0 else None
        if self._replan:
            self._replan = False
            base = self._plan_restart(i)
        if self._noop:
            return Endpoint(LocalHost(self.ctx.node), ["true"])
        spec = SendSpec(self._snap(i), incremental_from=base)
        if i > 0:
            with contextlib.suppress(ZfsBackendError):
                self.revise_total(self.streamed + estimate_send(self._zfs, spec).bytes)
        return Endpoint(self._zfs.host, self._zfs.send_argv(spec))

    def build_consumer(self, offset: int) -> Endpoint:
        if self._noop:
            return Endpoint(LocalHost(self.ctx.node), ["true"])
        spec = RecvSpec(target=self.request.destination)
        self._peer.stream_multiplex = True
        return Endpoint(self._peer, spec.argv(dialect_for_recv(self.kind_state)), counts_network=False)

    def _plan_restart(self, i: int) -> SnapshotName | None:
        """After a restart: what the destination holds now decides the next stream (the same claim)."""
        receiver = self.receiver
        dst = receiver.begin(self._source(), recursive=False, sent_guids=self._guids())
        top = dst.top
        have = set() if top is None else {s.guid for s in top.snapshots}
        if self._guids()[i] in have:
            self._noop = True
            return None
        if i == 0:
            if top is not None:  # a partial full receive of ours: start over, keeping the claim
                receiver.abort(keep_claim=True)
                receiver.begin(self._source(), recursive=False, sent_guids=self._guids())
            return None
        if self._guids()[i - 1] not in have:
            raise ReplicationConflict(
                f"on restart, {self.request.destination_node}:{self.request.destination} no longer holds "
                f"@{self._snap(i - 1).snap}"
            )
        return self._snap(i - 1)

    def next_stream(self) -> bool:
        ks = self.kind_state
        moved = self._delivered - self.streamed
        ks["rounds"] = [*ks.get("rounds", []), moved]
        phase = ks["phase"]
        if phase == "quiesce":
            return False
        rounds = len(ks["rounds"])
        if phase == "full" or (moved >= self.request.catchup_below and rounds < self.request.max_rounds):
            nxt = "catchup"
        else:
            nxt = "quiesce"
        ks["phase"] = nxt
        ks["round"] = int(ks["round"]) + 1
        self._save()
        holds = (self.request.hold_at or "").split("+")
        done = ks.get("holds_done") or ([ks["held"]] if ks.get("held") else [])
        if nxt in holds and nxt not in done:
            ks["held"] = nxt  # the hold it is at (or was at last)
            ks["holds_done"] = [*done, nxt]
            self._save()
            self._transition(SUSPENDED, verb="suspend", only_from=RUNNING)
        return True

    # -- hooks ------------------------------------------------------------------------------------
    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        self._replan = True

    def retryable(self, error: ZfsBackendError, status: int) -> bool:
        if isinstance(self.build_error, ReplicationConflict | DatasetNotFound | UsageError):
            return False
        return not isinstance(error, PERMANENT)

    def on_success(self) -> None:
        ks = self.kind_state
        final = self._guids()[-1]
        report = self.receiver.finish({"": final})
        ks["phase"] = "done"
        ks["verified"] = bool(report.get("verified"))
        self._save()

    def rollback(self) -> None:
        ks = self.kind_state
        if "phase" not in ks:
            return  # never planned: nothing claimed, nothing made
        report = self.receiver.abort()
        ks["abort"] = report
        left = list(report.get("left", []))
        ds = self.request.dataset
        try:
            restore_readonly(self._zfs, ds, ks.get("readonly_was"))
            ks["readonly_was"] = None
            if ks.get("unmounted") and not self._zfs.is_mounted(ds):
                self._zfs.mount(ds)
            ks["unmounted"] = False
            for s in self._zfs.list_snapshots(ds):
                if s.snap.startswith(f"{SNAP_PREFIX}{self.id}-"):
                    self._zfs.destroy(s.name, deadline=30.0, missing_ok=True)
        except ZfsBackendError as e:
            left.append(f"{self.ctx.node}:{ds}: {e}")
            raise
        finally:
            ks["left_alone"] = left
            self._save()

    def on_final_failure(self) -> None:
        self.rollback()

    # -- helpers ----------------------------------------------------------------------------------
    def _save(self) -> None:
        """Persist the checkpoint and publish what the migration did so far as its ``result``."""
        ks = self.kind_state
        snaps = [str(self._snap(i)) for i in range(len(self._guids()))]
        result: dict[str, Any] = {
            "phase": ks.get("phase"),
            "source": self._source(),
            "destination": f"{self.request.destination_node}:{self.request.destination}",
            "rounds": ks.get("rounds", []),
            "snapshots": snaps,
            "final_guid": self._guids()[-1] if self._guids() else None,
            "readonly_was": ks.get("readonly_was"),
            "unmounted": bool(ks.get("unmounted")),
            "quiesced_at": ks.get("quiesced_at"),
            "held": ks.get("held"),
        }
        if ks.get("verified"):
            result["verified"] = True
        if "abort" in ks:
            result["rolled_back"] = ks["abort"].get("actions", [])
            result["left_alone"] = ks.get("left_alone", [])
        with contextlib.suppress(Exception):
            self._persist()
        self.ctx.store.save_result(self.id, result)
        with contextlib.suppress(Exception):
            self._refresh()


register_kind(KIND, Migrate)
