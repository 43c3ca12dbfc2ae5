"""The ``replicate`` activity kind: ``zfs send`` → relay → ``ssh DEST zfs receive``, on the source node.

It runs inside the source node's agent (``ctx.host(None)`` is the node itself). Params are a
:class:`~zfs_backend.replication.request.Request` (``Request.to_params``), validated again here
before anything is stored. The life of one replication:

``plan()``
    reads both nodes and plans by GUID (:func:`~zfs_backend.replication.request.plan_live`), checks
    the destination's space, and records in ``kind_state`` what the destination held before
    (``dest_existed``, ``pre_guids``) — what a cancel restores — and the estimate (``m``).
first stream
    performs the rollback the caller asked for (``rollback_destination``: ``zfs rollback -r`` to the
    common base; the one step a cancel cannot undo), then streams. A non-recursive incremental is
    received with ``-F``: the destination's newest snapshot is then the base, so ``-F`` can destroy no
    snapshot and only discards atime/metadata noise (reads update atime, which makes a plain
    ``recv`` refuse); real changes were refused by the planner as "diverged".
restart (``restart_mode = "rerun"``)
    after a cut link, a dead ``ssh``, an agent SIGKILL or a destination restart, the stream is
    planned again from what the destination holds now: from the resume token where the destination
    has resumable receive, otherwise from the newest common snapshot (a partial new dataset of this
    activity is destroyed first). Failures that cannot heal (no space, diverged, host key) are final.
``cancel()``
    kills both sides; ``rollback()`` then discards the partial receive (``recv -A``), destroys a
    destination dataset this activity created, and rolls back any snapshot it received — the
    destination is left as it was (zfs-fuse leaves nothing of a killed receive).
success
    the destination must hold the snapshot with the same GUID (each child's too with ``recursive``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Any

import psutil

from ..activity.core import ActivityContext, register_kind
from ..activity.pipeline import Endpoint, PipelineActivity
from ..activity.report import ActivityRecord
from ..activity.states import TERMINAL
from ..config import load_settings
from ..errors import ReplicationConflict, ZfsBackendError
from ..hosts.base import Host
from ..hosts.local import LocalHost
from ..zfs.api import Zfs
from ..zfs.models import RecvSpec, SendSpec
from ..zfs.names import DatasetName
from .estimate import Estimate
from .plan import ALREADY_RUNNING, Conflict, Plan, incremental_path
from .request import Request, check_space, plan_live, read_destination
from .transport import PeerHost

__all__ = ["KIND", "Replicate", "running_conflict"]

KIND = "replicate"

# A stream failure whose stderr says one of these is final: retrying cannot help.
_PERMANENT = re.compile(
    r"out of space|no space left|has been modified|does not match incremental source|must specify -F"
    r"|destination '[^']*' exists|already exists|does not exist|Host key verification failed"
    r"|no matching cipher|Permission denied|replication conflict",
    re.IGNORECASE,
)
_START_LOCK = threading.Lock()


def running_conflict(
    records: list[ActivityRecord], req: Request, own_id: str | None = None
) -> Conflict | None:
    """A conflict when one of ``records`` is a non-terminal replication with the same key as ``req``."""
    for rec in records:
        if rec.kind != KIND or rec.state in TERMINAL or rec.id == own_id:
            continue
        try:
            other = Request.from_params(rec.params)
        except ZfsBackendError:
            continue
        if other.key == req.key:
            return Conflict(
                ALREADY_RUNNING,
                f"{rec.id} already replicates {req.key[0]} to {req.key[1]}:{req.key[2]} ({rec.state})",
            )
    return None


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


class Replicate(PipelineActivity):
    """The ``replicate`` kind (see the module doc)."""

    KIND = KIND
    restart_mode = "rerun"
    max_retries = 5
    backoff_s = 2.0
    backoff_max_s = 30.0

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        self.request = Request.from_params(record.params)
        p = record.params
        try:
            self.max_retries = int(p.get("max_retries", self.max_retries))
            self.backoff_s = float(p.get("backoff_s", self.backoff_s))
            self.space_check = bool(p.get("space_check", True))
        except (TypeError, ValueError) as e:
            raise ZfsBackendError(f"bad replicate param: {e}") from e
        ssh_config = p.get("ssh_config")
        # Control commands to the destination (listings, space, verification) share one ControlMaster
        # connection: a fresh SSH handshake costs ~0.25 s each, which dominated small replications.
        self._peer = PeerHost(
            self.request.destination_node,
            cipher=self.request.cipher,
            ssh_config=ssh_config,
            control_dir=str(load_settings().agent_socket.parent / "ssh"),
        )
        super().__init__(record, ctx)
        conflict = running_conflict(ctx.store.non_terminal(), self.request, own_id=record.id)
        if conflict is not None:
            raise conflict.error()
        self._local: Host = ctx.host(None)
        self._src = Zfs(self._local)
        self._dst = Zfs(self._peer)
        self._current: tuple[Plan, Estimate] | None = None
        self._replan = False
        self._noop = False

    # -- hosting ----------------------------------------------------------------------------------
    def persist_new(self) -> ActivityRecord:
        """Check for a running twin and insert, under one lock (two starts cannot both pass)."""
        with _START_LOCK:
            conflict = running_conflict(self.ctx.store.non_terminal(), self.request, own_id=self.id)
            if conflict is not None:
                raise conflict.error()
            return super().persist_new()

    # -- hooks ------------------------------------------------------------------------------------
    def plan(self) -> None:
        req = self.request
        plan, est, state = plan_live(self._src, self._dst, req)
        if self.space_check:
            check_space(state, est, self._peer.name)
        self.kind_state.update(
            {
                "plan": plan.describe(),
                "full": plan.full,
                "base": None if plan.base is None else plan.base.snap,
                "target_guid": plan.target.guid,
                "dest_existed": state.snapshots is not None,
                "pre_guids": [s.guid for s in state.snapshots or []],
                "rollback_to": None if plan.rollback_to is None else plan.rollback_to.snap,
                "destroys": [s.snap for s in plan.destroys],
                "rolled_back": False,
                "estimate": est.bytes,
                "estimate_exact": est.exact,
                "estimate_method": est.method,
            }
        )
        self._current = (plan, est)
        _ = self._dst.dialect  # probe the destination now, not on the stream's clock

    def estimate_total(self) -> int:
        return int(self.kind_state.get("estimate", 0))

    def on_restart(self, checkpoint: dict[str, Any]) -> None:
        # Re-planning reads the destination, which may be unreachable right now: do it when the
        # pipeline is built, where a failure counts as one more (retried) attempt.
        self._replan = True

    def retryable(self, error: str, status: int) -> bool:
        return not _PERMANENT.search(error)

    def extra_cpu_pids(self) -> list[int]:
        return _same_mount_ns_daemons()

    def build_producer(self, offset: int) -> Endpoint:
        req = self.request
        self._noop = False
        token = None
        if self._replan or self._current is None:
            self._replan = False
            token = self._prepare_restart()
        if self._noop:
            return Endpoint(LocalHost(self.ctx.node), ["true"])
        if token is not None:
            return Endpoint(self._local, self._src.resume_send_argv(token))
        assert self._current is not None
        plan = self._current[0]
        rollback_to = self.kind_state.get("rollback_to")
        if rollback_to and not self.kind_state.get("rolled_back"):
            self.ctx.log.warning(
                "activity %s: rolling %s:%s back to @%s (destroys %s)",
                self.id,
                self._peer.name,
                req.destination,
                rollback_to,
                ", ".join(self.kind_state.get("destroys", [])) or "changes since it",
            )
            self._dst.rollback(req.destination.snapshot(rollback_to), destroy_newer=True)
            self.kind_state["rolled_back"] = True
        if req.recursive and not plan.full and plan.base is not None:
            self._reset_tree_to_base(plan.base.snap)
        return Endpoint(self._local, self._src.send_argv(self._send_spec(plan)))

    def _reset_tree_to_base(self, base: str) -> None:
        """A recursive incremental is received without ``-F`` (which could destroy destination-only
        children or snapshots). Reading a replica on zfs-fuse updates atimes, which makes a plain
        receive refuse ("modified since most recent snapshot"): roll each destination dataset of the
        tree back to ``@base``, which discards only changes made after it and never destroys a snapshot
        (a child holding newer snapshots is a conflict, not something to destroy)."""
        req = self.request
        for ds in self._dst.list_datasets(req.destination, recursive=True):
            snaps = self._dst.list_snapshots(ds.name)
            if not snaps or base not in [s.snap for s in snaps]:
                continue  # a child that does not hold the base is received fresh by the -R stream
            if snaps[-1].snap != base:
                raise ReplicationConflict(
                    f"{self._peer.name}:{ds.name} holds snapshots newer than @{base}: "
                    "the destination diverged (use --rollback-destination)"
                )
            self._dst.rollback(ds.name.snapshot(base))

    def build_consumer(self, offset: int) -> Endpoint:
        if self._noop:
            return Endpoint(LocalHost(self.ctx.node), ["true"])
        req = self.request
        plan = self._current[0] if self._current is not None else None
        incremental = plan is not None and not plan.full
        spec = RecvSpec(
            target=req.destination,
            force=incremental and not req.recursive,
            resumable=self._dst.dialect.resumable_receive,
        )
        return Endpoint(self._peer, self._dst.recv_argv(spec))

    def on_success(self) -> None:
        req = self.request
        want = int(self.kind_state["target_guid"])
        got = {s.guid for s in self._dst.list_snapshots(req.destination)}
        if want not in got:
            raise ZfsBackendError(
                f"{self._peer.name}:{req.destination} does not hold @{req.snapshot.snap} with GUID {want}"
            )
        if req.recursive:
            self._verify_children()

    def rollback(self) -> None:
        req, ks, dst = self.request, self.kind_state, self._dst
        if "dest_existed" not in ks or not dst.exists(req.destination):
            return  # never planned, or nothing there (a killed receive into a new dataset leaves none)
        if not ks["dest_existed"]:
            dst.destroy(req.destination, recursive=True, missing_ok=True)
            return
        if dst.dialect.resumable_receive and dst.resume_token(req.destination):
            dst.abort_resumable_receive(req.destination)
        pre = set(ks.get("pre_guids", []))
        snaps = dst.list_snapshots(req.destination)
        if any(s.guid not in pre for s in snaps):
            keep = [s for s in snaps if s.guid in pre]
            if keep:
                dst.rollback(keep[-1].name, destroy_newer=True)

    # -- helpers ----------------------------------------------------------------------------------
    def _send_spec(self, plan: Plan) -> SendSpec:
        return plan.send_spec(recursive=self.request.recursive, properties=self.request.properties)

    def _prepare_restart(self) -> str | None:
        """Plan the next stream from what the destination holds now. Returns a resume token when the
        receive can be resumed; sets ``_noop`` when the target is already there."""
        req, ks, dst = self.request, self.kind_state, self._dst
        if dst.dialect.resumable_receive and dst.exists(req.destination):
            token = dst.resume_token(req.destination)
            if token:
                self._current = None
                return token
        state = read_destination(dst, req.destination)
        want = int(ks["target_guid"])
        if state.snapshots is not None and any(s.guid == want for s in state.snapshots):
            self._noop = True  # the last attempt completed before its end was recorded
            return None
        if state.snapshots is not None and not ks.get("dest_existed"):
            # a partial dataset this activity created (zfs-fuse -R): start it over
            dst.destroy(req.destination, recursive=True, missing_ok=True)
            state = read_destination(dst, req.destination)
        chain = self._src.list_snapshots(req.snapshot.dataset)
        rolled = ks.get("rolled_back") or not ks.get("rollback_to")
        outcome = incremental_path(
            chain,
            state.snapshots,
            req.snapshot.snap,
            force_full_copy=req.force_full_copy and state.snapshots is None,
            incremental_from=None,  # the newest common snapshot: earlier attempts may have moved it
            intermediates=req.intermediates,
            rollback_destination=not rolled,
        )
        if isinstance(outcome, Conflict):
            raise ReplicationConflict(f"replication conflict on restart: {outcome.reason}")
        self._current = (outcome, Estimate(int(ks.get("estimate", 0)), False, "restart"))
        ks["plan"] = outcome.describe()
        return None

    def _verify_children(self) -> None:
        req = self.request
        top = req.snapshot.dataset
        for ds in self._src.list_datasets(top, recursive=True):
            if ds.name == top:
                continue
            snap = next((s for s in self._src.list_snapshots(ds.name) if s.snap == req.snapshot.snap), None)
            if snap is None:
                continue
            rel = ds.name.name[len(top.name) + 1 :]
            child = DatasetName(f"{req.destination}/{rel}")
            got = {s.guid for s in self._dst.list_snapshots(child)}
            if snap.guid not in got:
                raise ZfsBackendError(
                    f"{self._peer.name}:{child} does not hold @{snap.snap} with GUID {snap.guid}"
                )


register_kind(KIND, Replicate)
