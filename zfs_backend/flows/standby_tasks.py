"""The tasks of the hot-standby flows (:mod:`.standby`). Each undoes exactly its own effect in
``revert``; each takes plain data from flow storage (names, ids) and reaches nodes through
:func:`~.env.env` (the volume service, the drivers, the agents).

Grants (``replication.granted``): a sync starts under the standby's grant for the primary (``increment``,
``prune``, no expiry), made by :class:`StartSync`; a sync stopped for good (:class:`StopSync`, a failover:
the relationship moves) has that grant revoked on its standby, best effort."""

from __future__ import annotations

import logging
import time
from typing import Any

from taskflow import task

from ..activity.states import TERMINAL
from ..driver import failover
from ..driver.models import Volume
from ..driver.nfs import Attachment
from ..errors import AlreadyRunning, FlowError
from ..kinds.standby import KIND as SYNC_KIND
from ..kinds.standby import PREFIX
from ..replication.granted import revoke_grants, start_granted
from ..zfs.names import SnapshotName
from .env import env

__all__ = [
    "CheckStandby",
    "FinalSnapshot",
    "ForcePromote",
    "Promote",
    "Quiesce",
    "RecordFailover",
    "RecordStandby",
    "ReplicaMark",
    "SeedSnapshot",
    "StartSync",
    "StopSync",
]

log = logging.getLogger("zfs_backend.flows")


def _model(volume: str) -> Volume:
    return env().service().get_volume(volume).model()


def _dataset(node: str, volume: str) -> str:
    return str(env().driver(node).dataset_of(_model(volume)))


class SeedSnapshot(task.Task):
    """A ``zfs_backend-standby-<ms>`` snapshot of the volume on ``node``: the standby's seed (or a
    failover's final increment). Provides ``(node:pool/fs@snap, snap)``; revert destroys it."""

    def execute(self, volume: str, node: str) -> tuple[str, str]:
        zfs = env().driver(node).zfs
        ds = env().driver(node).dataset_of(_model(volume))
        snap = SnapshotName(ds, f"{PREFIX}{int(time.time() * 1000)}")
        zfs.snapshot(snap)
        return f"{node}:{snap}", snap.snap

    def revert(self, volume: str, node: str, result: Any, **kwargs: Any) -> None:
        if isinstance(result, tuple | list):
            zfs = env().driver(node).zfs
            ds = env().driver(node).dataset_of(_model(volume))
            zfs.destroy(SnapshotName(ds, str(result[1])), missing_ok=True)


FinalSnapshot = SeedSnapshot


class StartSync(task.Task):
    """Start the ``standby-sync`` activity on ``node``'s agent toward ``to_node``, from the common
    snapshot ``base``, under ``to_node``'s grant for ``node`` (asked for first); provides its id. A twin
    already running (a resumed flow whose start had gone through) is adopted (the new grant is revoked:
    the twin holds its own). Revert cancels it (which releases its claim and holds) and revokes the
    grants of ``node`` on the standby's dataset."""

    def execute(
        self,
        volume: str,
        node: str,
        to_node: str,
        base: str,
        interval_s: float,
        max_lag_s: float,
        compress: str | None = None,
    ) -> str:
        ds = _dataset(node, volume)
        dest = _dataset(to_node, volume)
        params = {
            "dataset": ds,
            "destination_node": to_node,
            "destination": dest,
            "base": base,
            "interval_s": float(interval_s),
            "max_lag_s": float(max_lag_s or 0.0),
        } | ({"compress": compress} if compress else {})
        agent = env().agent(node)
        try:
            return str(start_granted(env().agent, node, SYNC_KIND, params).id)
        except AlreadyRunning:
            for a in agent.list():
                rec = a.record()
                if rec.kind == SYNC_KIND and rec.state not in TERMINAL and rec.params.get("dataset") == ds:
                    return str(rec.id)
            raise

    def revert(self, volume: str, node: str, to_node: str, base: str, result: Any, **kwargs: Any) -> None:
        if not isinstance(result, str):
            return
        act = env().agent(node).get(result)
        if act.state not in TERMINAL:
            act.cancel()
        try:
            dest = _dataset(to_node, volume)
        except Exception as e:  # best effort, as every revocation: the standby may be gone
            log.warning("volume %s: the grants on %s not revoked: %s", volume, to_node, e)
        else:
            revoke_grants(env().agent, to_node, dest, node)
        # the cancel leaves the sync's last own snapshot (the common one) behind: it goes too, unless it
        # is the base this task was given (whoever made that undoes it)
        newest = str(((act.record().result or {}).get("newest") or {}).get("snapshot") or "")
        if newest.startswith(PREFIX) and newest != base:
            d = env().driver(node)
            d.zfs.destroy(SnapshotName(d.dataset_of(_model(volume)), newest), missing_ok=True)


class ReplicaMark(task.Task):
    """After the seed replication: the receiver's mark (``zfs_backend:receiver``, the holder that created
    it) on the standby's replica, when the replica is provably this relationship's: it says it was
    received from this volume's dataset on the primary (``zfs_backend:source``) and holds the seed (by
    GUID) and nothing older: the seed's full stream created it. Provides ``replica_mark`` (None: not
    provably ours, e.g. an existing dataset the seed only incremented); :func:`~.standby.standby_remove`
    destroys a replica only when it still carries it."""

    default_provides = "replica_mark"

    def execute(self, volume: str, primary: str, standby_node: str, seed_snapshot: str) -> str | None:
        from ..replication.wire import RECEIVER_PROP, SOURCE_PROP
        from ..zfs.names import parse_node_qualified

        seed = parse_node_qualified(seed_snapshot).name
        if not isinstance(seed, SnapshotName):
            raise FlowError(f"the seed {seed_snapshot!r} is not a snapshot")
        src, dst = env().driver(primary), env().driver(standby_node)
        ds = dst.dataset_of(_model(volume))
        guid = next((s.guid for s in src.zfs.list_snapshots(seed.dataset) if s.name == seed), None)
        mark, how = dst.zfs.get_with_source(ds, RECEIVER_PROP)
        source = dst.zfs.get_with_source(ds, SOURCE_PROP)[0]
        # the seed's full stream created it: it holds the seed and nothing older (an existing replica the
        # seed only incremented is not provably this relationship's)
        only_seed = guid is not None and [s.guid for s in dst.zfs.list_snapshots(ds)] == [guid]
        if mark in ("-", "") or how != "local" or source != f"{primary}:{seed.dataset}" or not only_seed:
            return None
        return mark


class RecordStandby(task.Task):
    """The volume's replication record: ``enabled``, its standby and sync activity, and in ``detail``
    the replica's mark (``replica_mark``, see :class:`ReplicaMark`). Revert restores the record as it
    was."""

    def execute(
        self,
        volume: str,
        standby_node: str,
        sync_activity: str,
        interval_s: float,
        max_lag_s: float,
        replica_mark: str | None = None,
    ) -> Any:
        svc = env().service()
        old = svc.replication(volume)
        svc.set_replication(
            volume,
            "enabled",
            standby_node=standby_node,
            activity_id=sync_activity,
            interval_s=float(interval_s),
            max_lag_s=float(max_lag_s or 0.0),
            detail={"replica_mark": replica_mark} if replica_mark else {},
        )
        return None if old is None else old.to_dict()

    def revert(self, volume: str, result: Any, **kwargs: Any) -> None:
        svc = env().service()
        if isinstance(result, dict):
            fields = {
                k: result[k] for k in ("standby_node", "activity_id", "interval_s", "max_lag_s", "detail")
            }
            svc.set_replication(volume, result["replication_status"], **fields)
        elif result is None:
            svc.drop_replication(volume)


class CheckStandby(task.Task):
    """The volume has a standby (replication ``enabled``); provides the relationship."""

    default_provides = ("standby_node", "sync_activity", "interval_s", "max_lag_s")

    def execute(self, volume: str) -> tuple[str, str, float, float]:
        rel = env().service().replication(volume)
        if rel is None or rel.replication_status != "enabled" or not rel.standby_node or not rel.activity_id:
            state = "none" if rel is None else rel.replication_status
            raise FlowError(f"volume {volume} has no standby to fail over to (replication: {state})")
        return rel.standby_node, rel.activity_id, float(rel.interval_s or 5.0), float(rel.max_lag_s or 0.0)


class Quiesce(task.Task):
    """The primary takes no more writes: unexported, read-only (:func:`~..driver.failover.quiesce`).
    Every write acknowledged before this is in the dataset. Revert: exported and writable again."""

    default_provides = "quiesced"

    def execute(self, volume: str, primary: str) -> dict[str, Any]:
        return failover.quiesce(env().driver(primary), _model(volume))

    def revert(self, volume: str, primary: str, result: Any, **kwargs: Any) -> None:
        if isinstance(result, dict):
            failover.unquiesce(env().driver(primary), _model(volume), result)


class StopSync(task.Task):
    """Cancel the standby-sync (its increment in flight rolled back, claim and holds released; both sides
    stay at their last common snapshot) and revoke its grant on the standby (the relationship moves:
    the new direction gets its own). Revert starts a new one from that snapshot (under a new grant) and
    records it."""

    def execute(self, primary: str, standby_node: str, standby_dataset: str, sync_activity: str) -> None:
        act = env().agent(primary).get(sync_activity)
        if act.state not in TERMINAL:
            act.cancel()
        if act.wait(60) != "cancelled" and act.state not in TERMINAL:
            raise FlowError(f"standby-sync {sync_activity} did not stop: {act.state}")
        revoke_grants(env().agent, standby_node, standby_dataset, primary)

    def revert(
        self, volume: str, primary: str, standby_node: str, interval_s: float, max_lag_s: float, **kwargs: Any
    ) -> None:
        d = env().driver(primary)
        ds = d.dataset_of(_model(volume))
        standby = env().driver(standby_node)
        theirs = {s.guid for s in standby.zfs.list_snapshots(standby.dataset_of(_model(volume)))}
        common = [s for s in d.zfs.list_snapshots(ds) if s.snap.startswith(PREFIX) and s.guid in theirs]
        if not common:
            raise FlowError(f"volume {volume}: no common snapshot left to restart its standby from")
        new = StartSync().execute(volume, primary, standby_node, common[-1].snap, interval_s, max_lag_s)
        env().service().set_replication(volume, "enabled", activity_id=new)


class Promote(task.Task):
    """The replica on the standby becomes the volume: writable, exported to the primary's clients; the
    volume's node and location move there. Revert: unexported and read-only again, the record back."""

    default_provides = "location"

    def execute(self, volume: str, standby_node: str, quiesced: dict[str, Any]) -> str:
        svc = env().service()
        atts = [Attachment(str(i), str(c)) for i, c in quiesced.get("attachments") or []]
        loc = failover.promote(
            env().driver(standby_node), _model(volume), quiesced.get("clients") or [], atts
        )
        svc.relocate(volume, standby_node, loc)
        return loc

    def revert(self, volume: str, primary: str, standby_node: str, result: Any, **kwargs: Any) -> None:
        svc = env().service()
        failover.demote(env().driver(standby_node), _model(volume))
        rec = svc.get_volume(volume)
        if rec.node != primary:
            old = env().driver(primary)
            svc.relocate(volume, primary, old.location(old.dataset_of(rec.model())))


class RecordFailover(task.Task):
    """The relationship after a failover: reversed (``enabled``, the old primary is the standby, synced by
    ``new_sync``) or ``failed-over`` (forced: no way back to the old primary yet), with what the flow
    reports in ``detail``."""

    def execute(
        self,
        volume: str,
        primary: str,
        new_sync: str | None,
        report: dict[str, Any] | None,
        final_base: str | None,
    ) -> None:
        svc = env().service()
        if report is None:  # a controlled failover: nothing lost, by construction
            report = {"forced": False, "snapshot": final_base, "lost_window_s": 0.0}
        if new_sync:
            svc.set_replication(volume, "enabled", standby_node=primary, activity_id=new_sync, detail=report)
        else:
            svc.set_replication(volume, "failed-over", standby_node=None, activity_id=None, detail=report)

    def revert(self, volume: str, standby_node: str, sync_activity: str, **kwargs: Any) -> None:
        env().service().set_replication(
            volume, "enabled", standby_node=standby_node, activity_id=sync_activity
        )


class ForcePromote(task.Task):
    """Forced failover: the standby is promoted without its primary (fenced, then promoted at the newest
    snapshot it holds; :func:`~..driver.failover.fail_over`). Provides the report: that snapshot, its
    time and the window of data lost. Revert: unexported and read-only again (the fence stays)."""

    default_provides = "report"

    def execute(self, volume: str, primary: str, standby_node: str, sync_activity: str) -> dict[str, Any]:
        svc = env().service()
        atts = [Attachment(i, c) for i, c in svc.attachment_records(volume)]
        out = failover.fail_over(
            env().driver(standby_node), _model(volume), holders=[sync_activity], attachments=atts
        )
        svc.relocate(volume, standby_node, out["provider_location"])
        return {k: out[k] for k in ("snapshot", "snapshot_time", "lost_window_s", "fenced")} | {
            "forced": True,
            "old_primary": primary,  # ``standby create`` onto it sets its copy aside (a failback)
        }

    def revert(self, volume: str, primary: str, standby_node: str, **kwargs: Any) -> None:
        failover.demote(env().driver(standby_node), _model(volume))
        rec = env().service().get_volume(volume)
        if rec.node != primary:
            env().service().relocate(volume, primary, None)
