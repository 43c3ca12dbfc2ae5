"""The ``standby-sync`` activity kind: keeps a hot standby of one dataset, on the primary's agent.

A replication that never ends (progress ``0 of 0``). Seeded by a full ``replicate`` of a
``zfs_backend-standby-<ms>`` snapshot (the ``base`` param); then every ``interval_s``: a snapshot named
with the time it was taken (a forced failover reads the data-loss window from it), ``recv.expect`` on
the standby, ``zfs send -i BASE SNAP`` → relay → ``ssh STANDBY zfs receive`` (never ``-F``; see
:mod:`.standby_stream`), ``recv.commit`` (verified by GUID and held there, the standby's older own
snapshots pruned in the same call), published, then the new base held here and the older own snapshots
pruned here. Everything on the standby goes through its receiving end (:mod:`.receiver_standby`) under
one claim held for the activity's life; only its own snapshots (the prefix **and** a GUID it recorded)
are ever pruned; the common base is held on both sides (``zfs hold`` where the ZFS has user holds). A
failed sync is retried at the next interval (the status shows the lag and the last error); a refusal
that cannot heal (fenced, diverged, gone) fails it. ``suspend`` stops syncing, ``resume`` carries on,
``cancel`` rolls back the increment in flight, releases the claim and the holds, and leaves both sides
at the last common snapshot. ``grant``: the standby's grant for this relationship (``increment``,
``prune``, no expiry; the controller asks for it, see :mod:`.granted`), presented on every ``recv.*``
call. See ``docs/flows.md``.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from typing import Any

from ..activity.core import ActivityContext, LocalActivity, register_kind, status_of
from ..activity.report import ActivityRecord, Resources
from ..activity.states import CANCELLING, PENDING, RUNNING, STATUS_FAILED, SUSPENDED, TERMINAL
from ..errors import (
    DatasetHasDependents,
    DatasetNotFound,
    ReplicationConflict,
    StreamFailed,
    StreamMismatch,
    UsageError,
    ZfsBackendError,
)
from ..hosts.local import LocalHost
from ..hosts.peer import DEFAULT_CIPHER, validate_cipher
from ..replication.compress import check_codec, validate_codec
from ..replication.remote import RemoteReceiver
from ..replication.upkeep import RENEW_EVERY_S
from ..replication.wire import validate_grant
from ..zfs.api import Zfs
from ..zfs.cmd import modified_target, stream_error
from ..zfs.models import SendSpec
from ..zfs.names import SnapshotName, parse_dataset, parse_snapshot, validate_node
from .standby_local import PrimaryBase
from .standby_pair import PairCalls, pair_calls
from .standby_stream import IncrementPipe

__all__ = ["KIND", "PREFIX", "StandbySync", "snapshot_time"]

KIND = "standby-sync"
PREFIX = "zfs_backend-standby-"
_PARAMS = frozenset(
    {"dataset", "destination_node", "destination", "base", "interval_s", "max_lag_s", "cipher", "grant"}
) | {"compress"}


def snapshot_time(snap: str) -> float | None:
    """When a standby snapshot was taken (UNIX seconds), from its name; None for another name."""
    if not snap.startswith(PREFIX):
        return None
    try:
        return int(snap[len(PREFIX) :]) / 1000.0
    except ValueError:
        return None


class _Permanent(Exception):
    pass


class StandbySync(IncrementPipe, PrimaryBase, LocalActivity):
    """The ``standby-sync`` kind (see the module doc)."""

    KIND = KIND
    UNIT = "syncs"
    cancel_wait_s = 60.0
    kill_grace_s = 0.5

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        super().__init__(record, ctx)
        p = record.params
        unknown = sorted(set(p) - _PARAMS)
        if unknown:
            raise UsageError(f"standby-sync params {', '.join(map(repr, unknown))} are not accepted")
        try:
            self.dataset = parse_dataset(str(p["dataset"]))
            self.dest_node = validate_node(str(p["destination_node"]))
            self.dest = parse_dataset(str(p.get("destination") or p["dataset"]))
            self.base_snap = parse_snapshot(f"{self.dataset}@{p['base']}")
            self.interval = float(p.get("interval_s", 5.0))
            self.max_lag = float(p.get("max_lag_s") or 0.0)
            self.compress = validate_codec(p.get("compress"))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"bad standby-sync params: {e}") from None
        if not 0.5 <= self.interval <= 86400 or self.max_lag < 0:
            raise UsageError("standby-sync: interval_s must be 0.5-86400 and max_lag_s not negative")
        if not self.base_snap.snap.startswith(PREFIX):
            raise UsageError(
                f"standby-sync: the base must be a {PREFIX}* snapshot, not {self.base_snap.snap}"
            )
        self.cipher = validate_cipher(str(p.get("cipher") or DEFAULT_CIPHER))
        self.grant = None if p.get("grant") is None else validate_grant(p["grant"])
        self._peer = ctx.peer_host(self.dest_node, self.cipher)
        self._peer.stream_multiplex = True
        self._zfs = Zfs(LocalHost(ctx.node))
        self._cp: dict[str, Any] = {}
        with contextlib.suppress(ZfsBackendError):
            self._cp = ctx.store.checkpoint(record.id)
        self._woken = threading.Event()
        self._receiver: RemoteReceiver | None = None
        self._last_renew = time.monotonic()  # every sync's expect renews the claim too

    @property
    def receiver(self) -> RemoteReceiver:
        if self._receiver is None:
            peer = self.ctx.peer_agent(self.dest_node)
            self._receiver = RemoteReceiver(peer, self.dest, self.id, self.grant)
        return self._receiver

    def _pair(self) -> PairCalls:
        """This pair's batched calls to the standby (one turn carries every standby-sync of the pair that
        is waiting: see :mod:`.standby_pair`)."""
        return pair_calls(self.receiver.peer)

    def _item(self, **args: Any) -> dict[str, Any]:
        """This activity's part of a batched call: its dataset there, its holder, its grant."""
        item = {"dataset": str(self.dest), "holder": self.id, **args}
        if self.grant is not None:
            item["grant"] = self.grant
        return item

    # -- hosting ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Before anything is stored: the base exists here, and the standby claims its dataset (a
        refusal, e.g. another replication receiving there, comes back from the start)."""
        if self._cp.get("claimed"):
            return
        if self.compress:
            check_codec(self.compress, self.ctx.peer_agent, self.dest_node)
        base = next((s for s in self._zfs.list_snapshots(self.dataset) if s.name == self.base_snap), None)
        if base is None:
            raise DatasetNotFound(f"{self.ctx.node}: the standby's base {self.base_snap} does not exist")
        self._claim()
        self.receiver.expect([base.guid])  # the seed was made for this standby: its own from now on
        self._cp.update(
            claimed=True,
            base={"snap": base.snap, "guid": base.guid},
            own=[base.snap],
            newest={"snapshot": base.snap, "taken_at": snapshot_time(base.snap)},
        )

    def persist_new(self) -> ActivityRecord:
        with self._cond:
            self._record = self.ctx.store.insert(self._record, checkpoint=dict(self._cp))
            self._save()
            return self._record

    def _claim(self) -> dict[str, Any]:
        sent = [s.guid for s in self._zfs.list_snapshots(self.dataset)]
        tree = self.receiver.begin(f"{self.ctx.node}:{self.dataset}", recursive=False, sent_guids=sent)
        if tree.top is None:
            raise DatasetNotFound(f"{self.dest_node}:{self.dest} does not exist: seed the standby first")
        return {"guids": [s.guid for s in tree.top.snapshots], "dialect": tree}

    # -- control (the verbs are LocalActivity's) ------------------------------------------------
    def _halt(self) -> list[subprocess.Popen[bytes]]:
        """The increment in flight stopped, and the pre-started receiver too (see ``IncrementPipe``)."""
        procs = super()._halt()
        self._drop_next()
        return procs

    def _wake_worker(self) -> None:
        self._woken.set()

    def _persist(self) -> None:
        self._save()

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        self._transition(RUNNING, verb="start", only_from=PENDING)
        ready = False
        while True:
            with self._cond:
                state = self._record.state
            if state in TERMINAL or self._abort == "detach":
                return
            if state == CANCELLING:
                self._finish_cancel()
                return
            due = float(self._cp.get("next_at", 0.0))
            if state == SUSPENDED or time.time() < due:
                self._keep_claim()
                self._sleep(0.5 if state == SUSPENDED else min(0.5, due - time.time()))
                continue
            try:
                if not ready:
                    self._carry_on()
                    ready = True
                self._sync()
                self._last_renew = time.monotonic()
            except (ReplicationConflict, DatasetNotFound, UsageError, _Permanent) as e:
                self._fail(f"standby sync refused: {e}", status_of(e))
                return
            except Exception as e:
                if self._abort is not None:
                    continue
                ready = False
                self._cp.update(
                    last_error=str(e)[:500], last_error_at=time.time(), failures=self._failures() + 1
                )
                self._cp["next_at"] = time.time() + min(self.interval, 2.0 * self._failures())
                self.ctx.log.warning("activity %s: sync failed: %s", self.id, e)
                self._save()

    def _keep_claim(self) -> None:
        """Between syncs (``interval_s`` longer than the claim's lease, a suspend) the claim renewed every
        ``RENEW_EVERY_S``: a lapsed one leaves the standby's holds stale. A failure is the next sync's."""
        if time.monotonic() - self._last_renew >= RENEW_EVERY_S:
            self._last_renew = time.monotonic()
            try:
                self.receiver.renew()
            except Exception as e:
                self._receiver = None  # a new session next time
                self.ctx.log.info("activity %s: claim not renewed between syncs: %s", self.id, e)

    def _failures(self) -> int:
        return int(self._cp.get("failures", 0))

    def _sleep(self, s: float) -> None:
        self._woken.wait(max(0.01, s))
        self._woken.clear()

    def _carry_on(self) -> None:
        """After a start or a failure: the claim again (the same one), and the newest own snapshot the
        standby holds becomes the base (an increment received before its commit was recorded is committed
        now)."""
        self._receiver = None  # a new session if the old one died
        dest_guids = set(self._claim()["guids"])
        local = {s.snap: s for s in self._zfs.list_snapshots(self.dataset)}
        own = [n for n in self._cp.get("own", []) if n in local]
        common = [n for n in own if local[n].guid in dest_guids]
        if not common:
            raise _Permanent(f"{self.dest_node}:{self.dest} holds none of this standby's snapshots")
        newest = local[common[-1]]
        if newest.guid != int(self._cp["base"]["guid"]) or self._cp.get("held") != newest.snap:
            self._commit(newest.snap, newest.guid)
            self._save()
            self._local_base(newest.snap)

    def _sync(self) -> None:
        t0 = time.time()
        self._cp["next_at"] = t0 + self.interval
        snap = SnapshotName(self.dataset, f"{PREFIX}{int(t0 * 1000)}")
        self._zfs.snapshot(snap)
        guid = self._zfs.get_int(snap, "guid")
        assert guid is not None
        self._cp.setdefault("own", []).append(snap.snap)
        self._cp.setdefault("taken", {})[snap.snap] = t0
        self._save(result=False)
        t1 = time.time()
        expected = self._pair().expect(self._item(sent_guids=[guid]))
        base = SnapshotName(self.dataset, str(self._cp["base"]["snap"]))
        t2 = time.time()
        moved, cpu = self._stream(SendSpec(snap, incremental_from=base))
        t3 = time.time()
        # verified and held there, the standby's older own snapshots pruned in the same call (one round
        # trip and one listing of the standby, not two); published at once (the lag ends here)
        committed = self._commit(snap.snap, guid, prune=True)
        t4 = time.time()
        self._cp.update(
            syncs=int(self._cp.get("syncs", 0)) + 1,
            total_bytes=int(self._cp.get("total_bytes", 0)) + moved,
            cpu_s=float(self._cp.get("cpu_s", 0.0)) + cpu,
            last_sync={
                "at": t4,
                "bytes": moved,
                "duration_s": round(t4 - t0, 3),
                "phases_s": {
                    "snapshot": round(t1 - t0, 3),
                    "expect": round(t2 - t1, 3),
                    "stream": round(t3 - t2, 3),
                    "commit": round(t4 - t3, 3),
                },
                # how many standbys of the pair the expect and the commit went with (see standby_pair)
                "batch": {"expect": expected, "commit": committed},
            },
            failures=0,
            last_error=None,
        )
        self._save()
        self._local_base(snap.snap)
        self._start_receiver()  # the next increment's receiving side, ready before it is needed

    def _stream(self, spec: SendSpec) -> tuple[int, float]:
        """One increment; returns (bytes, CPU seconds of its processes). A receive refused as "modified"
        (metadata noise on the standby) is cleaned there and sent again, once."""
        for attempt in (1, 2):
            rc, moved, cpu, error = self._pipe(spec)
            if rc == 0:
                return moved, cpu
            failure = stream_error(error or "the stream failed")
            target = modified_target(failure)
            if attempt == 1 and target is not None:
                self.receiver.clean(target)
                continue
            if isinstance(failure, StreamMismatch | DatasetHasDependents):  # diverged: cannot heal
                raise _Permanent(error)
            raise StreamFailed(str(failure))
        raise AssertionError("unreachable")

    def _commit(self, snap: str, guid: int, *, prune: bool = False) -> int:
        """The standby holds ``snap``: verified and held there (with ``prune``, its own snapshots before it
        pruned there too); it is the base from now on (the primary's side follows once it is
        published). Returns the size of the batch that carried the commit."""
        _answer, batch = self._pair().commit(
            self._item(target_guid=guid, prune_prefix=PREFIX if prune else None)
        )
        taken = self._cp.get("taken", {})
        self._cp.update(
            base={"snap": snap, "guid": guid},
            newest={"snapshot": snap, "taken_at": taken.get(snap) or snapshot_time(snap)},
        )
        return batch

    def rollback(self) -> None:
        """Cancel: see ``_undo``; what it could not undo fails the activity (``LocalActivity``)."""
        error = self._undo()
        if error:
            raise ZfsBackendError(error)

    def _undo(self) -> str | None:
        """The increment in flight rolled back on the standby, the claim and holds released on both sides,
        own snapshots other than the last common one removed here."""
        with self._cond:
            self._drop_next()
        try:
            self.receiver.abort()
        except ZfsBackendError as e:
            self._release_local_hold()  # the standby's goes with its claim, or is stale once that lapses
            self._save()
            return str(e)
        try:
            self._release_local_hold()
            base = self._cp.get("base", {}).get("snap")
            for name in self._cp.get("own", []):
                if name != base:
                    self._zfs.destroy(SnapshotName(self.dataset, name), deadline=10.0, missing_ok=True)
            self._cp["own"] = [base]
            self._save()
        except ZfsBackendError as e:
            return str(e)
        return None

    def _fail(self, error: str, status: int) -> None:
        undo = self._undo()
        self._fail_if_possible(error + (f"; and undoing it: {undo}" if undo else ""), status or STATUS_FAILED)

    def _save(self, *, result: bool = True) -> None:
        """Persist the checkpoint (and, with ``result``, the status report ``standby status`` reads)."""
        rec = self._record
        res = Resources(
            elapsed_s=(time.time() - rec.started_at) if rec.started_at else 0.0,
            net_bytes_sent=int(self._cp.get("total_bytes", 0)),
            cpu_s=float(self._cp.get("cpu_s", 0.0)),
        )
        self.ctx.store.update_progress(
            self.id,
            0,
            0,
            resources=res,
            checkpoint=dict(self._cp),
            result=self.status_report() if result else None,
        )  # one transaction (one fsync) for all of it
        with self._cond:
            if self._record.state not in TERMINAL:
                self._refresh()

    def status_report(self) -> dict[str, Any]:
        cp = self._cp
        return {
            "primary": f"{self.ctx.node}:{self.dataset}",
            "standby": f"{self.dest_node}:{self.dest}",
            "interval_s": self.interval,
            "max_lag_s": self.max_lag,
            "syncs": int(cp.get("syncs", 0)),
            "total_bytes": int(cp.get("total_bytes", 0)),
            "newest": cp.get("newest"),
            "last_sync": cp.get("last_sync"),
            "last_error": cp.get("last_error"),
            "last_error_at": cp.get("last_error_at"),
        }


register_kind(KIND, StandbySync)
