"""Replicating a snapshot to another node inside a flow: the backend path or the generic one.

**Backend path** (the driver publishes ``snapshot_replicate``): :class:`StartReplicate` starts the
``replicate`` activity on the source node's agent and returns its id, which the engine saves in the
logbook before anything else happens; :class:`AwaitActivity` follows that activity (by the id from
flow storage) and turns its ``n of m`` into TaskFlow progress. After a controller crash the resumed
flow skips the finished start and re-attaches to the same activity: never a second transfer. Should the
crash come between the agent's start and the engine's save, the start runs again and the agent refuses
a twin (``AlreadyRunning``): the task adopts the running twin instead (or, when it already finished,
the destination is ``UpToDate``: nothing is sent). ``revert()`` cancels the activity (which rolls the
destination back); a replica the finished activity created is destroyed, only when it still carries
that activity's mark.

**Generic path** (no ``snapshot_replicate``): :class:`ControllerStream` streams ``zfs send`` from the
source through the controller to ``zfs receive`` on the destination with its own SSH access, planned by
GUID as the backend plans (full into a new dataset, or incremental from the newest common snapshot;
never ``-F``: a changed destination refuses by itself). Its revert destroys a dataset it created, or
rolls back to its base what it received, when every snapshot there is one the source sent.

:func:`replicate_paths` builds both and :func:`link_paths` puts them behind the capability check's
decider: one of them runs, the other is ignored; the choice is in the logbook.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from typing import Any

from taskflow import task
from taskflow.patterns import graph_flow, linear_flow

from ..activity.procs import kill_process_group, stderr_tail
from ..activity.relay import Relay, enlarge_pipe
from ..activity.states import SUCCEEDED, TERMINAL
from ..errors import AlreadyRunning, FlowError, UpToDate
from ..replication.plan import Conflict, incremental_path
from ..replication.wire import RECEIVER_PROP
from ..zfs.api import Zfs
from ..zfs.models import RecvSpec
from ..zfs.names import parse_dataset, parse_node_qualified
from .env import env

__all__ = ["AwaitActivity", "ControllerStream", "PathIs", "StartReplicate", "link_paths", "replicate_paths"]


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
        zfs = env().driver(destination_node).zfs
        ds = parse_dataset(destination)
        if not zfs.exists(ds):
            return
        if "" in (rec.result.get("created") or []):
            if zfs.get_with_source(ds, RECEIVER_PROP)[0] == rec.id:
                zfs.destroy(ds, recursive=True, deadline=30.0, missing_ok=True)
            return
        self._roll_back_increment(result["node"], str(rec.params.get("snapshot")), zfs, ds)

    @staticmethod
    def _roll_back_increment(src_node: str, snapshot: str, zfs: Zfs, ds: Any) -> None:
        """An increment the activity delivered into an existing dataset: the destination goes back to the
        snapshot before it, only when every snapshot from the delivered one on is one the source holds
        (by GUID) and the head did not move (read-only replicas do not)."""
        src = env().driver(src_node).zfs
        source_guids = {s.guid for s in src.list_snapshots(parse_dataset(snapshot.partition("@")[0]))}
        snaps = zfs.list_snapshots(ds)
        name = snapshot.partition("@")[2]
        i = next((i for i, s in enumerate(snaps) if s.snap == name), None)
        if i is None or i == 0 or not all(s.guid in source_guids for s in snaps[i:]):
            return
        zfs.rollback(snaps[i - 1].name, destroy_newer=True)


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
    """The generic path: the controller pipes ``zfs send`` (source) into ``zfs receive`` (destination)."""

    def execute(self, snapshot: str, destination_node: str, destination: str) -> dict[str, Any]:
        src_node, snap_name = _split(snapshot)
        e = env()
        src = e.driver(src_node).zfs
        dst = e.driver(destination_node).zfs
        nq = parse_node_qualified(snapshot)
        ds = parse_dataset(destination)
        src_snaps = src.list_snapshots(nq.name.dataset)  # type: ignore[union-attr]
        existed = dst.exists(ds)
        dst_snaps = dst.list_snapshots(ds) if existed else None
        plan = incremental_path(src_snaps, dst_snaps, snap_name.rpartition("@")[2])
        if isinstance(plan, Conflict):
            if plan.kind == "up-to-date":
                return {"created": False, "base": None, "sent": []}
            raise plan.error()
        spec = plan.send_spec()
        est = src.estimate_send_size(spec) or src.estimate_send_size_from_space(spec)
        self._pipe(src, src.send_argv(spec), dst, RecvSpec(target=ds).argv(dst.dialect), est)
        return {
            "created": not existed,
            "base": None if plan.base is None else plan.base.snap,
            "sent": [s.guid for s in src_snaps],
        }

    def _pipe(self, src: Zfs, send: list[str], dst: Zfs, recv: list[str], estimate: int) -> None:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        enlarge_pipe(w1)
        enlarge_pipe(w2)
        relay = Relay(r1, w2)
        with tempfile.TemporaryFile() as perr, tempfile.TemporaryFile() as cerr:
            try:
                procs = [
                    src.host.spawn(send, stdin=subprocess.DEVNULL, stdout=w1, stderr=perr),
                    dst.host.spawn(recv, stdin=r2, stdout=subprocess.DEVNULL, stderr=cerr),
                ]
            finally:
                for fd in (w1, r2):
                    os.close(fd)
            done = threading.Event()

            def report() -> None:
                while not done.wait(1.0):
                    if estimate:
                        self.update_progress(min(0.99, relay.count / estimate))

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
        if not isinstance(result, dict):
            return  # failed: a plain receive that failed leaves nothing (zfs-fuse), or a partial state
        dst = env().driver(destination_node).zfs
        ds = parse_dataset(destination)
        if not dst.exists(ds):
            return
        sent = set(result.get("sent") or [])
        snaps = dst.list_snapshots(ds)
        if result.get("created") and all(s.guid in sent for s in snaps):
            dst.destroy(ds, recursive=True, deadline=30.0, missing_ok=True)
        elif result.get("base"):
            base = next((s for s in snaps if s.snap == result["base"]), None)
            newer = [s for s in snaps if base is not None and s.createtxg > base.createtxg]
            if base is not None and newer and all(s.guid in sent for s in newer):
                dst.rollback(base.name, destroy_newer=True)


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
