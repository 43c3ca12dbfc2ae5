"""Hot-standby flows: factories TaskFlow re-imports by name to resume a flow (``flow_from_detail``), and
the functions the CLI calls.

Every activity these flows start in which one node writes into another starts under a grant of the
destination's agent (``replication.granted``): the seed and final replications (``snapshot_replicate``),
each sync (:class:`~.standby_tasks.StartSync`: the standby's grant, no expiry). A failover revokes the old
direction's grant on the old standby (:class:`~.standby_tasks.StopSync`; a forced one in
``driver.failover.fail_over``); ``standby_remove`` revokes the relationship's.

``create_flow``
    capabilities (``standby_sync``; the seed's path) → busy (dual state) → a seed snapshot → a full
    replication of it (backend activity, or the controller's stream) → the ``standby-sync`` activity on
    the primary's agent → the volume's replication record → status back.
``failover_flow`` (controlled)
    the standby exists → busy → quiesce the primary (unexported, read-only: every acknowledged write is
    in the dataset) → stop its sync → a final snapshot and its increment → a sync the other way round
    (the old primary is the standby now) → the record → promote the standby (writable, exported to the
    same clients, the volume's node and location updated) → status back. The promotion is the last step
    that changes anything: a failure before it reverts without losing a write.
``force_failover_flow`` (the primary is unreachable)
    the standby exists → busy → fence and promote the standby at the newest snapshot it holds, reporting
    the window of data lost → the record (``failed-over``, the old primary named) → status back. Back:
    ``standby_create`` onto the old primary once it answers sets its copy aside (renamed, kept whole:
    ``driver.failover.set_aside``) and seeds it anew; it is the standby again, to fail over to either way.

Any failing step reverts the flow: every task undoes its own effect, so primary and standby are left as
they were (a sync cancelled by a controlled failover is started again from the last common snapshot).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from taskflow import task
from taskflow.patterns import graph_flow

from ..config import Settings
from ..errors import FlowError
from ..kinds.standby import PREFIX
from ..replication.granted import revoke_grants
from ..zfs.names import validate_node
from .engine import FlowRun, run_flow
from .env import env
from .replicate import link_paths, replicate_paths
from .standby_tasks import (
    CheckStandby,
    FinalSnapshot,
    ForcePromote,
    Promote,
    Quiesce,
    RecordFailover,
    RecordStandby,
    ReplicaMark,
    SeedSnapshot,
    StartSync,
    StopSync,
)
from .tasks import CheckCapabilities, MarkBusy, MarkDone

log = logging.getLogger("zfs_backend.flows")

__all__ = [
    "create_flow",
    "failover_flow",
    "force_failover_flow",
    "standby_create",
    "standby_failover",
    "standby_remove",
    "standby_status",
]


class StandbyDataset(task.Task):
    """The volume's dataset name on the standby node (its driver's parent, created when missing)."""

    default_provides = "standby_dataset"

    def execute(self, volume: str, standby_node: str) -> str:
        d = env().driver(standby_node)
        return str(d.dataset_of(env().service().get_volume(volume).model()))


def _chain(g: graph_flow.Flow, *atoms: Any) -> None:
    for a, b in itertools.pairwise(atoms):
        g.link(a, b)


def create_flow(volume: str) -> graph_flow.Flow:
    check = CheckCapabilities("check", need=("standby_sync",), rebind={"node": "primary"})
    busy = MarkBusy("busy")
    names = StandbyDataset("standby-dataset")
    seed = SeedSnapshot("seed-snapshot", provides=("seed_snapshot", "seed_base"), rebind={"node": "primary"})
    backend, generic = replicate_paths(
        "seed",
        {"snapshot": "seed_snapshot", "destination": "standby_dataset", "destination_node": "standby_node"},
    )
    sync = StartSync(
        "start-sync",
        provides="sync_activity",
        rebind={"node": "primary", "to_node": "standby_node", "base": "seed_base"},
    )
    mark = ReplicaMark("replica-mark")
    record = RecordStandby("record")
    done = MarkDone("done")
    g = graph_flow.Flow(f"standby-create-{volume}")
    g.add(check, busy, names, seed, backend, generic, mark, sync, record, done)
    link_paths(g, check, backend, generic)
    _chain(g, check, busy, names, seed)
    for path in (backend, generic):
        g.link(seed, path)
        g.link(path, mark)
    _chain(g, mark, sync, record, done)
    return g


def failover_flow(volume: str) -> graph_flow.Flow:
    standby = CheckStandby("standby")
    check = CheckCapabilities("check", need=("standby_sync",), rebind={"node": "primary"})
    busy = MarkBusy("busy")
    names = StandbyDataset("standby-dataset")
    quiesce = Quiesce("quiesce")
    stop = StopSync("stop-sync")
    final = FinalSnapshot(
        "final-snapshot", provides=("final_snapshot", "final_base"), rebind={"node": "primary"}
    )
    backend, generic = replicate_paths(
        "final",
        {"snapshot": "final_snapshot", "destination": "standby_dataset", "destination_node": "standby_node"},
    )
    promote = Promote("promote")
    reverse = StartSync(
        "reverse-sync",
        provides="new_sync",
        rebind={"node": "standby_node", "to_node": "primary", "base": "final_base"},
    )
    record = RecordFailover("record", inject={"report": None})
    done = MarkDone("done")
    g = graph_flow.Flow(f"standby-failover-{volume}")
    g.add(
        standby,
        check,
        busy,
        names,
        quiesce,
        stop,
        final,
        backend,
        generic,
        promote,
        reverse,
        record,
        done,
    )
    link_paths(g, check, backend, generic)
    _chain(g, standby, check, busy, names, quiesce, stop, final)
    for path in (backend, generic):
        g.link(final, path)
        g.link(path, reverse)
    # the promotion comes last: until then nothing is written anywhere but by the flow itself, so a
    # revert loses nothing (the new sync's increments are of a read-only replica)
    _chain(g, reverse, record, promote, done)
    return g


def force_failover_flow(volume: str) -> graph_flow.Flow:
    standby = CheckStandby("standby")
    check = CheckCapabilities("check", rebind={"node": "standby_node"})
    busy = MarkBusy("busy")
    force = ForcePromote("force-promote")
    record = RecordFailover("record", inject={"new_sync": None, "final_base": None})
    done = MarkDone("done")
    g = graph_flow.Flow(f"standby-force-failover-{volume}")
    g.add(standby, check, busy, force, record, done)
    _chain(g, standby, check, busy, force, record, done)
    return g


# ---- what the CLI calls -----------------------------------------------------------------------------


def standby_create(
    settings: Settings,
    volume: str,
    standby: str,
    *,
    interval_s: float = 5.0,
    max_lag_s: float = 0.0,
    compress: bool = False,
    on_progress: Any = None,
) -> FlowRun:
    """``compress``: the syncs' streams in zstd on the wire (``replication.compress``)."""
    rec = env().service().get_volume(volume)
    validate_node(standby)
    if standby == rec.node:
        raise FlowError(f"volume {volume} is on {standby}: pick another node for its standby")
    if not 0.5 <= float(interval_s) <= 86400:
        raise FlowError("--interval must be 0.5-86400 seconds")
    if not 0 <= float(max_lag_s) <= 366 * 86400:  # NaN fails too
        raise FlowError("--max-lag must be 0-31622400 seconds")
    rel = env().service().replication(volume)
    if rel is not None and rel.replication_status in ("enabled", "enabling", "failing-over"):
        raise FlowError(f"volume {volume} already has a standby on {rel.standby_node}")
    aside = None
    if (
        rel is not None
        and rel.replication_status == "failed-over"
        and rel.detail.get("old_primary") == standby
    ):
        # the old primary of a forced failover becomes the standby again: its copy (which may hold writes
        # the standby never received) is kept aside whole, and the node takes a new seed
        from ..driver.failover import set_aside

        for holder in rel.detail.get("fenced") or ():  # its old sync, refused since: stopped for good
            _stop_quietly(standby, str(holder))
        aside = set_aside(env().driver(standby), rec.model())
    store = {
        "volume": rec.name,
        "primary": rec.node,
        "standby_node": standby,
        "interval_s": float(interval_s),
        "max_lag_s": float(max_lag_s),
        "compress": "zstd" if compress else None,
    }
    run = run_flow(settings, create_flow, {"volume": rec.name}, store, on_progress=on_progress)
    if aside is not None:
        run.results["set_aside"] = f"{standby}:{aside}"
    return run


def _stop_quietly(node: str, activity: str) -> None:
    try:
        act = env().agent(node).get(activity)
        if act.state not in ("succeeded", "failed", "cancelled"):
            act.cancel()
            act.wait(60)
    except Exception as e:  # gone already (an agent keeps a bounded history), or another node's id
        log.info("%s: %s not stopped: %s", node, activity, e)


def standby_failover(
    settings: Settings, volume: str, *, force: bool = False, on_progress: Any = None
) -> FlowRun:
    rec = env().service().get_volume(volume)
    store = {"volume": rec.name, "primary": rec.node}
    factory = force_failover_flow if force else failover_flow
    return run_flow(settings, factory, {"volume": rec.name}, store, on_progress=on_progress)


def standby_status(volume: str | None = None) -> list[dict[str, Any]]:
    """Each standby relationship (or ``volume``'s): lag (age of the newest snapshot the standby holds),
    the last sync's bytes and duration, the sync activity's state, the last error."""
    import time

    svc = env().service()
    rels = [svc.replication(volume)] if volume is not None else svc.replications()
    out = []
    for rel in rels:
        if rel is None:
            raise FlowError(f"volume {volume} has no standby")
        vol = svc.get_volume(rel.volume_id)
        row: dict[str, Any] = {
            "volume": vol.name,
            "primary": vol.node,
            "standby": rel.standby_node,
            "replication_status": rel.replication_status,
            "activity": rel.activity_id,
            "interval_s": rel.interval_s,
            "max_lag_s": rel.max_lag_s,
            "state": None,
            "lag_s": None,
            "last_sync": None,
            "last_error": None,
            "detail": rel.detail,
        }
        if rel.activity_id:
            try:
                rec = env().agent(vol.node).get(rel.activity_id).record()
                res = rec.result or {}
                newest = res.get("newest") or {}
                row.update(
                    state=rec.state,
                    lag_s=None
                    if not newest.get("taken_at")
                    else round(time.time() - float(newest["taken_at"]), 3),
                    newest=newest.get("snapshot"),
                    syncs=res.get("syncs"),
                    last_sync=res.get("last_sync"),
                    last_error=rec.error or res.get("last_error"),
                    total_bytes=res.get("total_bytes"),
                )
            except Exception as e:  # the primary unreachable: say so, do not fail the listing
                row.update(state="unknown", last_error=f"cannot reach {vol.node}'s agent: {e}")
        out.append(row)
    return out


def standby_remove(volume: str) -> dict[str, Any]:
    """End the relationship: cancel the sync (when the primary answers), remove the relationship's own
    snapshots on the primary (the standby prefix, not held), revoke the primary's grants on the standby's
    dataset (best effort: logged when the standby does not answer), destroy the replica on the standby
    only when it is provably this relationship's: it still carries the mark its seed left
    (``replica_mark`` in the record, see :class:`~.standby_tasks.ReplicaMark`), or a controlled failover
    made it the standby (the volume's own former primary). Anything else there is left, and ``left`` says
    so. Drops the record."""
    from ..replication.wire import RECEIVER_PROP

    svc = env().service()
    rel = svc.replication(volume)
    if rel is None:
        raise FlowError(f"volume {volume} has no standby")
    vol = svc.get_volume(volume)
    out: dict[str, Any] = {"volume": vol.name, "cancelled": None, "destroyed": None}
    if rel.activity_id and rel.replication_status == "enabled":
        act = env().agent(vol.node).get(rel.activity_id)
        if act.state not in ("succeeded", "failed", "cancelled"):
            act.cancel()
        out["cancelled"] = rel.activity_id
    # the relationship's snapshots on the primary (the last common one a cancelled sync leaves, those a
    # failover left): named by the standby's prefix, no longer held by any sync
    d = env().driver(vol.node)
    for snap in d.zfs.list_snapshots(d.dataset_of(vol.model())):
        if snap.snap.startswith(PREFIX) and d.zfs.get(snap.name, ["userrefs"]).get("userrefs") in ("0", "-"):
            d.zfs.destroy(snap.name, missing_ok=True)
            out.setdefault("pruned", []).append(snap.snap)
    if rel.standby_node and rel.standby_node != vol.node:
        d = env().driver(rel.standby_node)
        ds = d.dataset_of(vol.model())
        out["revoked"] = revoke_grants(env().agent, rel.standby_node, str(ds), vol.node)
        if d.zfs.exists(ds):
            reversed_by_failover = rel.detail.get("forced") is False  # the old primary, now its standby
            ours = rel.detail.get("replica_mark")
            mark = d.zfs.get_with_source(ds, RECEIVER_PROP)[0]
            if reversed_by_failover or (ours and mark == ours):
                d.exports.remove(ds)
                d.zfs.destroy(ds, recursive=True, deadline=30.0, missing_ok=True)
                out["destroyed"] = f"{rel.standby_node}:{ds}"
            else:
                why = "it carries no mark" if mark in ("-", "") else f"it carries the mark {mark}"
                out["left"] = (
                    f"{rel.standby_node}:{ds} left alone: not provably this relationship's replica ({why}, "
                    f"the relationship's is {ours or 'unknown'})"
                )
                log.warning("standby remove: %s", out["left"])
    svc.drop_replication(volume)
    return out
