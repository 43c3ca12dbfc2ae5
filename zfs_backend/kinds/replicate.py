"""The ``replicate`` activity kind: ``zfs send`` → relay → ``ssh DEST zfs receive``, on the source node.

It runs inside the source node's agent. Params are a :class:`~zfs_backend.replication.request.Request`
(``Request.to_params``), validated again here; any parameter it does not know is refused. Everything it
needs from the destination goes through the destination's own agent (:mod:`.receiver`, reached with
:class:`~.remote.RemoteReceiver`), which claims the destination tree for this activity (no other
replication, from any node, may receive into it meanwhile) and makes every check and change on the node
that holds the data. The life of one replication:

``prepare()`` (before anything is stored; a refusal stores nothing)
    the destination's ``begin``: its snapshots, space and the exact state of each head (noise such as
    atime is rolled back there; real changes are reported). Plans by GUID, refuses a diverged
    destination (unless ``rollback_destination``), no common base, short space, a running twin.
first stream
    ``rollback_destination`` (asked for explicitly): the destination's ``discard`` rolls back to the base
    and the activity's ``result`` names what was discarded. The stream is received **without** ``-F``:
    a plain receive refuses a changed destination by itself, so nothing the replication did not write
    can be lost. When it is refused as "modified" anyway (a change too fresh for the cheap check), the
    destination's ``clean`` checks that dataset exactly: noise is rolled back and the stream starts
    again; a real change fails the activity as diverged, with nothing discarded.
``parallel`` > 1 (a recursive tree)
    one stream per dataset, that many at a time, under the same claim (:mod:`.parallel`).
restart (``restart_mode = "rerun"``)
    after a cut link, a dead ``ssh``, an agent SIGKILL or a destination restart: ``begin`` again (the same
    claim), then from the resume token where the destination keeps one, or from the newest common
    snapshot; datasets this activity created and left partial are removed first. A stream resumed from
    a token counts on from the bytes the token says the destination holds (n never goes back).
``suspend()``
    where both ends resume receives (OpenZFS: ``recv -s``, ``send -t``; one stream, not a tree in
    parallel) the stream is stopped, so the destination keeps its receive token and no ``zfs send``,
    ``zfs receive`` or ``ssh`` is left on either node; ``resume`` restarts from that token as above, and
    ``cancel`` meanwhile discards the partial receive (the destination's ``abort``: ``recv -A``).
    Elsewhere (zfs-fuse) the relay pauses and the processes wait, blocked.
``cancel()`` or a final failure
    kills both sides; the destination's ``abort`` restores the tree as ``begin`` found it: partial
    receives discarded, received snapshots rolled back, datasets this activity created destroyed (only
    those provably its own). The source is never touched.
success
    the destination's ``finish`` verifies the snapshot GUID(s), marks the datasets the stream created
    (``zfs_backend:receiver``/``zfs_backend:source``), makes new replicas read-only, releases the claim.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ..activity.core import ActivityContext, register_kind
from ..activity.pipeline import Endpoint, PipelineActivity
from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from ..errors import DatasetNotFound, ReplicationConflict, UsageError, ZfsBackendError
from ..hosts.base import Host
from ..hosts.local import LocalHost
from ..replication.compress import check_codec
from ..replication.cursor import cursor_prefix, keep_cursor, relationship_bookmarks
from ..replication.estimate import check_space, estimate_send
from ..replication.parallel import ParallelStreams
from ..replication.plan import ALREADY_RUNNING, Conflict, Plan, check_children, incremental_path
from ..replication.raw import check_raw_source, raw_flags
from ..replication.remote import DestinationTree, RemoteReceiver
from ..replication.request import KIND, TUNING_PARAMS, Request
from ..replication.restart import MULTIPLEX_BELOW, RestartOps, stale_tokens
from ..replication.tls_channel import check_tls
from ..replication.tree_plan import streams_fit, tree_estimate
from ..replication.upkeep import (
    PERMANENT,
    ReceiverUpkeep,
    check_filesystem_versions,
    dialect_for_recv,
    stream_flags,
)
from ..zfs.api import Zfs
from ..zfs.models import RecvSpec, SendSpec, Snapshot
from ..zfs.names import DatasetName, parse_dataset
from ..zfs.resume_token import decode_resume_token

__all__ = ["KIND", "TUNING_PARAMS", "Replicate", "running_conflict"]


_START_LOCK = threading.Lock()


def running_conflict(
    records: list[ActivityRecord], req: Request, own_id: str | None = None
) -> Conflict | None:
    """A conflict when one of ``records`` is a non-terminal replication with the same key as ``req``."""
    for rec in records:
        if rec.kind != KIND or rec.state in TERMINAL or rec.id == own_id:
            continue
        try:
            other = Request.from_params(rec.params, also=TUNING_PARAMS)
        except ZfsBackendError:
            continue
        if other.key == req.key:
            return Conflict(
                ALREADY_RUNNING,
                f"{rec.id} already replicates {req.key[0]} to {req.key[1]}:{req.key[2]} ({rec.state})",
            )
    return None


def _rel_name(top: DatasetName, ds: DatasetName) -> str:
    return "" if ds == top else ds.name[len(top.name) + 1 :]


class Replicate(RestartOps, ParallelStreams, ReceiverUpkeep, PipelineActivity):
    """The ``replicate`` kind (see the module doc)."""

    KIND = KIND
    restart_mode = "rerun"
    max_retries = 5
    backoff_s = 2.0
    backoff_max_s = 30.0

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        self.request = Request.from_params(record.params, also=TUNING_PARAMS)
        p = record.params
        self.tune_retries(p, "bad replicate param")
        space_check = p.get("space_check", True)
        if not isinstance(space_check, bool):
            raise UsageError("replicate param 'space_check' must be true or false")
        self.space_check = space_check
        # The stream's ssh (and nothing else) goes to the destination directly, with the node's own
        # SSH configuration; the destination's narrow key lets it run only `zfs receive` there.
        self._peer = ctx.peer_host(self.request.destination_node, self.request.cipher)
        super().__init__(record, ctx)
        conflict = running_conflict(ctx.store.non_terminal(), self.request, own_id=record.id)
        if conflict is not None:
            raise conflict.error()
        self._local: Host = ctx.host(None)
        self._src = Zfs(self._local)
        self._current: Plan | None = None
        self._planned = None
        self._replan = False
        self._noop = False
        self._resumes_at: int | None = None
        self._last_renew = time.monotonic()

    @property
    def _cursor(self) -> str:
        return cursor_prefix(self.request.destination_node, str(self.request.destination))

    @property
    def receiver(self) -> RemoteReceiver:
        req = self.request
        return RemoteReceiver(self.ctx.peer_agent(req.destination_node), req.destination, self.id, req.grant)

    # -- hosting ----------------------------------------------------------------------------------
    def persist_new(self) -> ActivityRecord:
        """Check for a running twin and insert, under one lock (two starts cannot both pass); a refusal
        here gives the destination's claim back."""
        try:
            with _START_LOCK:
                conflict = running_conflict(self.ctx.store.non_terminal(), self.request, own_id=self.id)
                if conflict is not None:
                    raise conflict.error()
                return super().persist_new()
        except BaseException:
            with contextlib.suppress(Exception):
                self.receiver.release()
            raise

    # -- planning ---------------------------------------------------------------------------------
    def _source_tree(self) -> dict[str, list[Snapshot]]:
        """The source's snapshots, dataset by dataset (relative names; only the top unless recursive)."""
        req = self.request
        top = req.snapshot.dataset
        try:
            names = [d.name for d in self._src.list_datasets(top, recursive=True)] if req.recursive else [top]
            tree = {_rel_name(top, n): self._src.list_snapshots(n) for n in names}
        except DatasetNotFound:
            raise DatasetNotFound(f"{self.ctx.node}: source dataset {top} does not exist") from None
        if not any(s.snap == req.snapshot.snap for s in tree[""]):
            raise DatasetNotFound(f"{self.ctx.node}: snapshot {req.snapshot} does not exist")
        return tree

    def _plan_against(self, src: dict[str, list[Snapshot]], dst: DestinationTree, *, restart: bool) -> Plan:
        req, ks = self.request, self.kind_state
        top = dst.top
        rolled = bool(ks.get("discarded_done")) or not req.rollback_destination
        src_ds = req.snapshot.dataset
        outcome = incremental_path(
            src[""],
            None if top is None else top.snapshots,
            req.snapshot.snap,
            force_full_copy=req.force_full_copy and (top is None or not restart),
            incremental_from=None if restart else req.incremental_from,
            intermediates=req.intermediates,
            rollback_destination=not rolled,
            destination_modified=top is not None and top.changed,
            modified_detail="" if top is None else top.detail,
            bookmarks=() if req.recursive else relationship_bookmarks(self._src, src_ds, self._cursor),
        )
        where = f"{req.destination_node}:{req.destination}"
        if isinstance(outcome, Conflict):
            err = outcome.error()
            raise type(err)(f"{'on restart, ' if restart else ''}{where}: {outcome.reason}")
        discard: dict[str, int] = {}
        if outcome.rollback_to is not None and outcome.base_guid is not None:
            discard[""] = outcome.base_guid
        if req.recursive and outcome.base is not None:
            children = check_children(
                src,
                {rel: (d.snapshots, d.changed) for rel, d in dst.datasets.items()},
                outcome.base.snap,
                rollback_destination=not rolled,
            )
            if isinstance(children, Conflict):
                err = children.error()
                raise type(err)(f"{where}: {children.reason}")
            discard.update(children)
        if not rolled:
            ks["discard"] = discard
        return outcome

    def prepare(self) -> None:
        conflict = running_conflict(self.ctx.store.non_terminal(), self.request, own_id=self.id)
        if conflict is not None:
            raise conflict.error()
        if self.request.compress:
            check_codec(self.request.compress, self.ctx.peer_agent, self.request.destination_node)
        if self.request.transport == "tls":
            check_tls(self.ctx.node, self.ctx.peer_agent, self.request.destination_node)
        super().prepare()

    def plan(self) -> None:
        req = self.request
        if req.raw:  # refused before the destination is asked anything
            self.kind_state["encryption"] = check_raw_source(self._src, req.snapshot.dataset, self.ctx.node)
        src = self._source_tree()
        top = req.snapshot.dataset
        sent = sorted({s.guid for snaps in src.values() for s in snaps})
        dst = self.receiver.begin(
            f"{self.ctx.node}:{req.snapshot.dataset}", recursive=req.recursive, sent_guids=sent
        )
        try:
            check_filesystem_versions(
                self._src,
                [parse_dataset(f"{top}/{rel}") if rel else top for rel in src] if req.recursive else [top],
                dst,
                self.ctx.node,
                f"{req.destination_node}:{req.destination}",
            )
            plan = self._plan_against(src, dst, restart=False)
            self.kind_state["parallel_streams"] = streams_fit(src, dst, req.snapshot.snap)
            self.kind_state["stream_flags"] = (
                raw_flags(dst.stream, f"{req.destination_node} ({dst.dialect})")
                if req.raw
                else stream_flags(self._src.dialect, dst.stream)
            )
            if self.parallel_tree:
                est = tree_estimate(self._src, src, dst, req, self.kind_state["stream_flags"])
            else:
                est = estimate_send(self._src, self._send_spec(plan))
            if self.space_check:
                check_space(dst.available, est, f"{req.destination_node}:{req.destination}")
        except BaseException:
            with contextlib.suppress(Exception):
                self.receiver.release()
            raise
        targets = {
            rel: next(s.guid for s in snaps if s.snap == req.snapshot.snap)
            for rel, snaps in src.items()
            if any(s.snap == req.snapshot.snap for s in snaps)
        }
        self.kind_state.update(
            {
                "plan": plan.describe(),
                "full": plan.full,
                "base": None if plan.base is None else plan.base.snap,
                "base_guid": plan.base_guid,
                "target_guid": plan.target.guid,
                "target_guids": targets,
                "dest_existed": dst.exists,
                "dest_dialect": dst.dialect,
                "resumable": dst.resumable_receive,
                # suspend stops the stream, resume sends from the token: both ends must resume receives
                "suspend_teardown": bool(dst.resumable_receive and self._src.dialect.resumable_receive),
                "recv_properties": dst.recv_properties,
                "estimate": est.bytes,
                "estimate_exact": est.exact,
                "estimate_method": est.method,
                "stale_tokens": stale_tokens(dst),  # partial receives of an earlier run: dropped first
            }
        )
        if req.parallel > 1 and not self.parallel_tree:
            self.kind_state["plan"] += " (one stream: the destination cannot receive a new dataset unmounted)"
        self._current = plan
        self._planned = (src, dst) if self.parallel_tree else None

    def estimate_total(self) -> int:
        return int(self.kind_state.get("estimate", 0))

    # -- hooks ------------------------------------------------------------------------------------
    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        # Re-planning reads the destination, which may be unreachable right now: do it when the
        # pipeline is built, where a failure counts as one more (retried) attempt.
        self._replan = True

    def retryable(self, error: ZfsBackendError, status: int) -> bool:
        if isinstance(self.build_error, ReplicationConflict | DatasetNotFound | UsageError):
            return False  # a refusal on restart: the destination diverged, the snapshot is gone, ...
        return not isinstance(error, PERMANENT)

    def suspend_tears_down(self) -> bool:
        return bool(self.kind_state.get("suspend_teardown")) and not self.parallel_tree

    def stream_resumes_at(self) -> int | None:
        return self._resumes_at

    def build_producer(self, offset: int) -> Endpoint:
        self._noop = False
        self._resumes_at = None
        token = None
        if self._replan or self._current is None:
            self._replan = False
            token = self._prepare_restart()  # begins again: renews the claim
        else:
            self.receiver.renew()  # still ours? (a suspend before the first stream may have outlived it)
            self._last_renew = time.monotonic()
        if self._noop:
            return Endpoint(LocalHost(self.ctx.node), ["true"])
        if token is not None:
            with contextlib.suppress(ZfsBackendError):  # decoded once already (resume_mismatch)
                self._resumes_at = decode_resume_token(token).bytes or 0
            return Endpoint(self._local, self._src.resume_send_argv(token))
        assert self._current is not None
        self._first_stream_steps()
        return Endpoint(self._local, self._src.send_argv(self._send_spec(self._current)))

    def build_consumer(self, offset: int) -> Endpoint:
        if self._noop:
            return Endpoint(LocalHost(self.ctx.node), ["true"])
        ks = self.kind_state
        full = self._current is not None and self._current.full
        props = {"readonly": "on"} if full and ks.get("recv_properties") else {}
        self._peer.stream_multiplex = int(ks.get("estimate", 0)) < MULTIPLEX_BELOW
        spec = RecvSpec(
            target=self.request.destination, resumable=bool(ks.get("resumable")), set_properties=props
        )
        return self._recv_endpoint(spec.argv(dialect_for_recv(ks)))

    def on_success(self) -> None:
        targets = {str(k): int(v) for k, v in self.kind_state.get("target_guids", {}).items()}
        report = self.receiver.finish(targets)
        self.kind_state["created"] = report.get("created", [])
        if not self.request.recursive:  # the source keeps a bookmark of what the destination holds
            ks = self.kind_state
            ks["cursor"] = keep_cursor(self._src, self.request.snapshot, int(ks["target_guid"]), self._cursor)
        self.ctx.store.save_result(self.id, self._result())

    def rollback(self) -> None:
        if "target_guid" not in self.kind_state:
            return  # never planned: nothing was claimed
        report = self.receiver.abort()
        self.kind_state["abort"] = report
        self.ctx.store.save_result(self.id, self._result())
        if report.get("left"):
            self.ctx.log.warning("activity %s: cancel left %s", self.id, "; ".join(report["left"]))

    def on_final_failure(self) -> None:
        self.rollback()

    # -- helpers ----------------------------------------------------------------------------------
    def _result(self) -> dict[str, Any]:
        ks = self.kind_state
        out: dict[str, Any] = {
            "plan": ks.get("plan"),
            "destination": f"{self._peer.name}:{self.request.destination}",
        }
        if ks.get("discarded"):
            out["discarded"] = ks["discarded"]
        if ks.get("created"):
            out["created"] = ks["created"]
        if ks.get("cursor"):
            out["cursor"] = ks["cursor"]
        for key in ("resume_refused", "resume_discarded"):
            if ks.get(key):
                out[key] = ks[key]
        if ks.get("abort"):
            out["rolled_back"] = ks["abort"].get("actions", [])
            out["left_alone"] = ks["abort"].get("left", [])
        return out

    def _send_spec(self, plan: Plan) -> SendSpec:
        return plan.send_spec(
            recursive=self.request.recursive,
            properties=self.request.properties,
            flags=self.kind_state.get("stream_flags"),
        )


register_kind(KIND, Replicate)
