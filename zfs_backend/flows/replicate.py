"""Replicating a snapshot to another node inside a flow: the backend path or the generic one.

**Backend path** (the driver publishes ``snapshot_replicate``): :class:`StartReplicate` starts the
``replicate`` activity on the source node's agent and returns its id, which the engine saves in the
logbook before anything else happens; :class:`AwaitActivity` follows that activity (by the id from
flow storage) and turns its ``n of m`` into TaskFlow progress. After a controller crash the resumed
flow skips the finished start and re-attaches to the same activity: never a second transfer. Should the
crash come between the agent's start and the engine's save, the start runs again and the agent refuses
a twin (``AlreadyRunning``): the task adopts the running twin instead (or, when it already finished,
the destination is ``UpToDate``: nothing is sent). ``revert()`` cancels the activity (which rolls the
destination back); what the finished activity delivered is undone by :func:`undo_delivery`.

**Generic path** (no ``snapshot_replicate``): :class:`ControllerStream` streams ``zfs send`` from the
source through the controller to ``zfs receive`` on the destination with its own SSH access, under the
same proofs as the backend path: the destination's agent's ``recv.begin`` / ``finish`` / ``abort`` (over
the controller's session to it, :class:`~..replication.remote.RemoteReceiver`) claim the dataset, lock it
read-only, report its head, mark what the stream created as this stream's (a holder id of its own) and,
on a failure, put it back as it was. Planned by GUID as the backend plans (full into a new dataset, or
incremental from the newest common snapshot; never ``-F``). Its revert is :func:`undo_delivery` too.

:func:`undo_delivery` (a revert after the transfer finished) discards only what is provably the
replication's: a dataset it created when it still carries the holder's mark, has no child, its snapshots
are the source's (or it stayed read-only) and its head holds no later write; an increment into an
existing dataset only through :meth:`~..replication.head.DestinationHead.guarded_rollback` (every
newer snapshot the source's, the head unmoved since, re-checked right before ``rollback -r`` with the
dataset unmounted). Anything else is kept, and the revert logs why.

:func:`replicate_paths` builds both and :func:`link_paths` puts them behind the capability check's
decider: one of them runs, the other is ignored; the choice is in the logbook.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Collection
from typing import Any

from taskflow import task
from taskflow.patterns import graph_flow, linear_flow

from ..activity.procs import kill_process_group, stderr_tail
from ..activity.relay import Relay, enlarge_pipe
from ..activity.states import SUCCEEDED, TERMINAL
from ..activity.store import new_activity_id
from ..errors import AlreadyRunning, FlowError, ReplicationConflict, UpToDate, ZfsBackendError
from ..replication.head import DestinationHead
from ..replication.plan import Conflict, incremental_path
from ..replication.remote import RemoteReceiver
from ..replication.wire import RECEIVER_PROP
from ..zfs.api import Zfs
from ..zfs.cmd import spawn_stream
from ..zfs.models import RecvSpec
from ..zfs.names import DatasetName, parse_dataset, parse_node_qualified
from .env import env

__all__ = [
    "AwaitActivity",
    "ControllerStream",
    "PathIs",
    "StartReplicate",
    "link_paths",
    "replicate_paths",
    "undo_delivery",
]

log = logging.getLogger("zfs_backend.flows")

#: how often the controller's stream renews its claim on the destination (the claim's TTL is 300 s)
RENEW_EVERY_S = 60.0


def _split(snapshot: str) -> tuple[str, str]:
    nq = parse_node_qualified(snapshot)
    return nq.node, str(nq.name)


class StartReplicate(task.Task):
    """Start ``snapshot_replicate`` (``node:pool/fs@snap`` to ``destination_node:destination``);
    provides ``{"activity": id or None, "node": source}``."""

    def execute(self, snapshot: str, destination_node: str, destination: str) -> dict[str, Any]:
        from ..replication.api import snapshot_replicate

        src, snap = _split(snapshot)
        e = env()
        try:
            act = snapshot_replicate(
                snapshot, None, f"{destination_node}:{destination}", settings=e.settings, node_for=e.agent
            )
            return {"activity": act.id, "node": src}
        except AlreadyRunning:
            twin = self._twin(src, snap, destination_node, destination)
            if twin is None:
                raise
            return {"activity": twin, "node": src}
        except UpToDate:
            return {"activity": None, "node": src}

    @staticmethod
    def _twin(src: str, snap: str, dest_node: str, dest: str) -> str | None:
        for a in env().agent(src).list():
            rec = a.record()
            p = rec.params
            same = (p.get("snapshot"), p.get("destination_node"), p.get("destination")) == (
                snap,
                dest_node,
                dest,
            )
            if rec.kind == "replicate" and rec.state not in TERMINAL and same:
                return rec.id
        return None

    def revert(self, destination_node: str, destination: str, result: Any, **kwargs: Any) -> None:
        if not isinstance(result, dict) or not result.get("activity"):
            return
        act = env().agent(result["node"]).get(result["activity"])
        if act.state not in TERMINAL:
            act.cancel()  # the activity rolls the destination back
            act.wait(120)
            return
        rec = act.record()
        if rec.state != SUCCEEDED:
            return
        dst = env().driver(destination_node).zfs
        ds = parse_dataset(destination)
        if not dst.exists(ds):
            return
        snapshot = str(rec.params.get("snapshot"))
        try:
            source = env().driver(result["node"]).zfs
            source_guids = {s.guid for s in source.list_snapshots(parse_dataset(snapshot.partition("@")[0]))}
        except ZfsBackendError as e:  # without the source's GUIDs nothing there is provably its
            log.warning(
                "revert: %s:%s kept; the source's snapshots cannot be read: %s", destination_node, ds, e
            )
            return
        undo_delivery(
            dst,
            ds,
            holder=rec.id,
            created="" in (rec.result.get("created") or []),
            source_guids=source_guids,
            delivered=snapshot.partition("@")[2],
        )


def undo_delivery(
    zfs: Zfs, ds: DatasetName, *, holder: str, created: bool, source_guids: Collection[int], delivered: str
) -> str:
    """Undo a finished replication of ``@delivered`` into ``ds`` (see the module doc), as far as it is
    provably the replication's; returns what was done or why nothing was (also logged)."""
    if not zfs.exists(ds):
        return f"{ds}: gone already"
    snaps = zfs.list_snapshots(ds)
    if created:
        return _destroy_created(zfs, ds, holder, snaps, source_guids)
    return _roll_back_increment(zfs, ds, snaps, source_guids, delivered)


def _destroy_created(
    zfs: Zfs, ds: DatasetName, holder: str, snaps: list[Any], source_guids: Collection[int]
) -> str:
    """A replica the replication created goes only when it carries the holder's mark (the receiver
    writes it at ``finish`` on what the stream created), has no child, holds snapshots and every one is
    the source's or it is still read-only as ``finish`` left it (a standby's later increments are then
    received data too), and its head holds no write after its newest snapshot (checked unmounted)."""
    mark = zfs.get_with_source(ds, RECEIVER_PROP)[0]
    value, source = zfs.get_with_source(ds, "readonly")
    # zfs-fuse says off/temporary of a mounted read-only dataset: temporary means the opposite persists
    frozen = (value == "on") != (source == "temporary")
    why = ""
    if mark != holder:
        why = f"{ds}: kept; it does not carry this replication's mark ({holder})"
    elif not snaps:
        why = f"{ds}: kept; it holds no snapshot (nothing to tell its data from someone's writes)"
    elif not frozen and not all(s.guid in source_guids for s in snaps):
        why = f"{ds}: kept; it is writable and holds a snapshot the source did not send"
    elif any(d.name != ds for d in zfs.list_datasets(ds, recursive=True)):
        why = f"{ds}: kept; it holds datasets this replication did not create"
    else:
        head = DestinationHead(zfs)
        try:
            with head.quiet(ds):
                newest = zfs.list_snapshots(ds)[-1]
                changes = head.changes(ds, newest)
                if changes.changed:
                    why = f"{ds}: kept; it was written to after @{newest.snap} ({changes.detail})"
                else:
                    zfs.destroy(ds, recursive=True, deadline=30.0, missing_ok=True)
        except ReplicationConflict as e:
            why = str(e)
    if why:
        log.warning("revert: %s", why)
        return why
    return f"{ds}: destroyed (created by {holder})"


def _roll_back_increment(
    zfs: Zfs, ds: DatasetName, snaps: list[Any], source_guids: Collection[int], delivered: str
) -> str:
    """An increment delivered into an existing dataset: the destination goes back to the snapshot
    before it, only when every snapshot from the delivered one on is one the source holds (by GUID) and
    the head did not move after the newest (a replica written to after the replication keeps those
    writes): :meth:`~..replication.head.DestinationHead.guarded_rollback`."""
    i = next((i for i, s in enumerate(snaps) if s.snap == delivered), None)
    if i is None or i == 0:
        why = f"{ds}: kept; @{delivered} is not there above an earlier snapshot"
        log.warning("revert: %s", why)
        return why
    try:
        gone = DestinationHead(zfs).guarded_rollback(ds, snaps[i - 1].guid, source_guids)
    except ReplicationConflict as e:
        log.warning("revert: %s", e)
        return str(e)
    removed = ", ".join("@" + s.snap for s in gone.snapshots) or "nothing"
    return f"{ds}: rolled back to @{snaps[i - 1].snap} (removed {removed})"


class AwaitActivity(task.Task):
    """Follow the activity :class:`StartReplicate` started (by its id in flow storage) to its end,
    reporting its ``n of m`` as progress; fails when it fails."""

    def execute(self, replication: dict[str, Any]) -> dict[str, Any]:
        if not replication.get("activity"):
            self.update_progress(1.0)
            return {"activity": None, "bytes": 0}
        act = env().agent(replication["node"]).get(replication["activity"])
        while True:
            rec = act.wait_record(2.0)
            n, m = rec.progress.pair
            if m:
                self.update_progress(min(1.0, n / m))
            if rec.state in TERMINAL:
                break
        if rec.state != SUCCEEDED:
            raise FlowError(f"replication {rec.id} {rec.state}: {rec.error}")
        return {"activity": rec.id, "bytes": rec.progress.done}


class ControllerStream(task.Task):
    """The generic path: the controller pipes ``zfs send`` (source) into ``zfs receive`` (destination),
    under a claim of its own on the destination (see the module doc); provides ``created``, ``holder``
    (the claim's id, the replica's mark), ``base``, ``sent`` (the source's GUIDs) and ``snapshot``."""

    def execute(self, snapshot: str, destination_node: str, destination: str) -> dict[str, Any]:
        src_node, snap_name = _split(snapshot)
        e = env()
        src = e.driver(src_node).zfs
        dst = e.driver(destination_node).zfs
        nq = parse_node_qualified(snapshot)
        ds = parse_dataset(destination)
        src_ds = nq.name.dataset  # type: ignore[union-attr]
        src_snaps = src.list_snapshots(src_ds)
        sent = [s.guid for s in src_snaps]
        short = snap_name.rpartition("@")[2]
        rx = RemoteReceiver(e.agent(destination_node).client, ds, new_activity_id())
        tree = rx.begin(f"{src_node}:{src_ds}", recursive=False, sent_guids=sent)
        out: dict[str, Any] = {
            "created": False,
            "holder": None,
            "base": None,
            "sent": sent,
            "snapshot": short,
        }
        try:
            top = tree.top
            plan = incremental_path(
                src_snaps,
                top.snapshots if tree.exists and top is not None else None,
                short,
                destination_modified=bool(top and top.changed),
                modified_detail=top.detail if top else "",
            )
            if isinstance(plan, Conflict):
                if plan.kind != "up-to-date":
                    raise plan.error()
                rx.release()
                return out  # nothing delivered: nothing for a revert to undo (no holder)
            spec = plan.send_spec()
            est = src.estimate_send_size(spec) or src.estimate_send_size_from_space(spec)
            self._pipe(src, src.send_argv(spec), dst, RecvSpec(target=ds).argv(dst.dialect), est, rx.renew)
            done = rx.finish({"": plan.target.guid}, readonly_replica=True)
        except BaseException:
            left = rx.abort().get("left") or []
            if left:
                log.warning("controller stream into %s:%s aborted; %s", destination_node, ds, "; ".join(left))
            raise
        out.update(
            created="" in (done.get("created") or []),
            holder=rx.holder,
            base=None if plan.base is None else plan.base.snap,
        )
        return out

    def _pipe(
        self,
        src: Zfs,
        send: list[str],
        dst: Zfs,
        recv: list[str],
        estimate: int,
        renew: Callable[[], None] = lambda: None,
    ) -> None:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        enlarge_pipe(w1)
        enlarge_pipe(w2)
        relay = Relay(r1, w2)
        with tempfile.TemporaryFile() as perr, tempfile.TemporaryFile() as cerr:
            try:
                procs = [
                    spawn_stream(src.host, send, stdin=subprocess.DEVNULL, stdout=w1, stderr=perr),
                    spawn_stream(dst.host, recv, stdin=r2, stdout=subprocess.DEVNULL, stderr=cerr),
                ]
            finally:
                for fd in (w1, r2):
                    os.close(fd)
            done = threading.Event()

            def report() -> None:
                ticks = 0
                while not done.wait(1.0):
                    ticks += 1
                    if estimate:
                        self.update_progress(min(0.99, relay.count / estimate))
                    if ticks % int(RENEW_EVERY_S) == 0:
                        try:
                            renew()  # the claim outlives a long stream
                        except Exception as e:  # the stream's end (finish) says whether it still holds
                            log.warning("controller stream: renewing the claim failed: %s", e)

            t = threading.Thread(target=report, daemon=True)
            t.start()
            try:
                result = relay.run()
            finally:
                done.set()
                relay.close()
                for p in procs:
                    if p.poll() is None and result != Relay.EOF:
                        kill_process_group(p.pid, 1.0)
            rcs = [p.wait() for p in procs]
            if result != Relay.EOF or rcs != [0, 0]:
                raise FlowError(
                    f"controller stream failed: send {rcs[0]} {stderr_tail(perr)}; receive {rcs[1]} "
                    f"{stderr_tail(cerr)}".strip()
                )
        self.update_progress(1.0)

    def revert(self, destination_node: str, destination: str, result: Any, **kwargs: Any) -> None:
        if not isinstance(result, dict) or not result.get("holder"):
            return  # failed: execute's recv.abort put the destination back as recv.begin found it
        undo_delivery(
            env().driver(destination_node).zfs,
            parse_dataset(destination),
            holder=str(result["holder"]),
            created=bool(result.get("created")),
            source_guids=set(result.get("sent") or []),
            delivered=str(result.get("snapshot") or ""),
        )


def replicate_paths(prefix: str, rebind: dict[str, str]) -> tuple[linear_flow.Flow, linear_flow.Flow]:
    """The backend path and the generic path of one replication, for a graph flow to pick from with
    :func:`link_paths`. ``rebind`` maps ``snapshot`` (``node:pool/fs@snap``), ``destination_node`` and
    ``destination`` to the storage names holding them."""
    backend = linear_flow.Flow(f"{prefix}.backend").add(
        StartReplicate(f"{prefix}.start", provides=f"{prefix}.replication", rebind=rebind),
        AwaitActivity(f"{prefix}.await", rebind={"replication": f"{prefix}.replication"}),
    )
    generic = linear_flow.Flow(f"{prefix}.generic").add(ControllerStream(f"{prefix}.stream", rebind=rebind))
    return backend, generic


def link_paths(
    g: graph_flow.Flow, check: task.Task, backend: linear_flow.Flow, generic: linear_flow.Flow
) -> None:
    """In ``g``: after ``check`` (a :class:`~.tasks.CheckCapabilities`), only the path it chose runs; the
    other is ignored (TaskFlow deciders, at flow depth: what follows both still runs)."""
    g.link(check, backend, decider=PathIs("backend"), decider_depth="FLOW")
    g.link(check, generic, decider=PathIs("generic"), decider_depth="FLOW")


class PathIs:
    """A decider: true when the capability check chose ``want`` (picklable, unlike a lambda)."""

    def __init__(self, want: str) -> None:
        self.want = want

    def __call__(self, history: dict[str, Any]) -> bool:  # TaskFlow passes it by this name
        return any(
            isinstance(r, tuple | list) and r and r[0] in ("backend", "generic") and r[0] == self.want
            for r in history.values()
        )
