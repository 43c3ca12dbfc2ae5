"""``ActivityManager``: hosts the activities of one node over an ``ActivityStore``.

It starts new activities, carries stored non-terminal ones on after a restart (``recover``), answers
queries from the store (the persisted truth) and routes control verbs to the live objects. Each
activity runs in its own threads; an exception in one is recorded as that activity's failure and
never reaches the others.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..activity import kinds as _builtin_kinds  # noqa: F401 - registers the built-in kinds
from ..activity.core import ActivityContext, LocalActivity, PeerCaller, kind_factory, registered_kinds
from ..activity.report import ActivityRecord
from ..activity.states import FAILED, STATUS_FAILED, TERMINAL, check_transition
from ..activity.store import ActivityStore, new_activity_id
from ..errors import InvalidTransition, ProtocolError, UsageError
from ..hosts.base import Host
from ..kinds import backup as _backup_kinds  # noqa: F401 - registers "backup" and "restore"
from ..kinds import backup_access as peer_backups
from ..kinds import migrate as _migrate_kind  # noqa: F401 - registers the "migrate" kind
from ..kinds import replicate as _replicate_kind  # noqa: F401 - registers the "replicate" kind
from ..kinds import standby as _standby_kind  # noqa: F401 - registers the "standby-sync" kind
from ..kinds.backupstore import BackupStore
from ..replication.authority import PeerAuthority
from ..replication.receiver import Receiver
from .holds import HoldKeeper

#: kinds an agent hosts only when started with ``--test-kinds``: the generic ``pipeline`` runs whatever
#: argv its params name, which production nodes have no reason to offer
TEST_KINDS = frozenset({"pipeline"})

__all__ = ["ActivityManager"]


class ActivityManager:
    def __init__(
        self,
        store: ActivityStore,
        *,
        node: str,
        host_for: Callable[[str], Host] | None = None,
        log: logging.Logger | None = None,
        receiver: Receiver | None = None,
        peer: Callable[[str], PeerCaller] | None = None,
        test_kinds: bool = False,
        backups: BackupStore | None = None,
        authority: PeerAuthority | None = None,
    ) -> None:
        self.store = store
        self.backups = backups
        self.authority = authority
        self.log = log or logging.getLogger("zfs_backend.agent")
        ctx = ActivityContext(store=store, node=node, log=self.log, self_restarting=True, peer=peer)
        if host_for is not None:
            ctx.host_for = host_for
        self.ctx = ctx
        self.receiver = receiver
        self.test_kinds = test_kinds
        self._live: dict[str, LocalActivity] = {}
        self._lock = threading.Lock()
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Carry every stored non-terminal activity on. Returns their ids."""
        carried: list[str] = []
        for rec in self.store.non_terminal():
            try:
                act = kind_factory(rec.kind)(rec, self.ctx)
            except Exception as e:
                self.log.error("cannot carry %s on: %s", rec.id, e)
                try:
                    check_transition(rec.state, FAILED)
                    self.store.transition(
                        rec.id, FAILED, status=STATUS_FAILED, error=f"cannot carry on after restart: {e}"
                    )
                except Exception:
                    self.log.exception("could not mark %s failed", rec.id)
                self._release_holds_of(rec.id)
                continue
            if not rec.self_restarting:
                self.store.set_self_restarting(rec.id, True)
            with self._lock:
                self._live[rec.id] = act
            act.start()
            carried.append(rec.id)
            self.log.info("carried activity on", extra={"activity": rec.id, "state": rec.state})
        return carried

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop every live activity's work, leaving the records non-terminal for the next start."""
        self._closing = True
        with self._lock:
            live = list(self._live.values())
        threads = [threading.Thread(target=a.detach, args=(timeout,), daemon=True) for a in live]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- verbs ------------------------------------------------------------------------------------
    def start(self, kind: str, params: dict[str, Any]) -> ActivityRecord:
        if self._closing:
            raise UsageError("the agent is shutting down")
        if not isinstance(params, dict):
            raise UsageError("params must be a JSON object")
        if kind in TEST_KINDS and not self.test_kinds:
            raise UsageError(f"activity kind {kind!r} is only hosted by agents started with --test-kinds")
        factory = kind_factory(kind)
        aid = new_activity_id()
        rec = ActivityRecord(
            id=aid,
            kind=kind,
            node=self.ctx.node,
            self_restarting=True,
            created_at=time.time(),
            params=params,
        )
        act = factory(rec, self.ctx)  # validates params before anything is stored
        act.prepare()  # e.g. plans; a refusal here stores nothing
        stored = act.persist_new()
        with self._lock:
            self._live[aid] = act
        act.start()
        self.log.info("activity started", extra={"activity": aid, "kind": kind})
        return stored

    def get(self, activity_id: str) -> ActivityRecord:
        """A live activity answers from memory (its record is the last one persisted, so this is the same
        answer without queueing behind the store's fsyncs); a finished one from the store."""
        self._reap()
        with self._lock:
            act = self._live.get(activity_id)
        if act is not None:
            return act.record()
        return self.store.get(activity_id)

    def list(
        self, state: str | None = None, *, limit: int | None = None, since: float | None = None
    ) -> list[ActivityRecord]:
        """Every non-terminal record, and the ``limit`` last finished (since ``since``): see
        ``ActivityStore.list``."""
        self._reap()
        return self.store.list(state, limit=limit, finished_since=since)

    def kinds(self) -> builtins.list[str]:
        return [k for k in registered_kinds() if self.test_kinds or k not in TEST_KINDS]

    def _authority(self) -> PeerAuthority:
        if self.authority is None:
            raise UsageError("this agent grants no work to peers")
        return self.authority

    def grant(self, verb: str, args: dict[str, Any]) -> Any:
        """A ``grant.*`` op (the controller's socket only): see ``replication.grants``."""
        return self._authority().grant_op(verb, args)

    def admit(self, peer: str | None, args: dict[str, Any]) -> Any:
        """``peer.admit``: may this peer session's ``peer-exec`` run what it was asked?"""
        if peer is None:
            raise ProtocolError("peer.admit is asked on a peer session")
        what = args.get("what")
        if what == "receive":
            return self._authority().admit_receive(peer, args.get("dataset"))
        if what in ("backup-write", "backup-read") and self.backups is not None:
            return peer_backups.admit(self.backups, self._authority(), peer, str(what), args)
        raise ProtocolError(f"peer.admit: unknown what {what!r}")

    def receive(self, verb: str, args: dict[str, Any], peer: str | None = None) -> Any:
        """A ``recv.*`` op: the receiving end of a replication into this node (``replication.receiver``).
        ``peer``: the session's peer node (None: the controller's socket), checked by the authority."""
        r = self.receiver
        if r is None:
            raise UsageError("this agent does not receive replications")
        try:
            if verb == "status":
                out = r.status()
                return out if peer is None else self._authority().own_claims(peer, out)
            if verb in ("expect_many", "commit_many"):  # a tick of a pair's scheduler: each item checked
                single = verb.removesuffix("_many")  # as its own recv.expect / recv.commit would be
                auth = None if peer is None else self._authority()
                check = None if auth is None else (lambda _v, item: auth.held(str(peer), single, item))
                return getattr(r, verb)(args["items"], check)
            dataset, holder = args["dataset"], args["holder"]
            grant = None
            if peer is not None and verb == "begin":
                grant = self._authority().for_begin(peer, args, r.zfs.exists).id
            elif peer is not None:
                self._authority().held(peer, verb, args)
            if verb == "begin":
                return r.begin(
                    dataset,
                    holder,
                    args["source"],
                    recursive=bool(args.get("recursive", False)),
                    sent_guids=[int(g) for g in args.get("sent_guids") or []],
                    peer=peer,
                    grant=grant,
                )
            if verb == "clean":
                return r.clean(dataset, holder, args.get("target"))
            if verb == "discard":
                return r.discard(
                    dataset, holder, {str(k): int(v) for k, v in dict(args["base_guids"]).items()}
                )
            if verb == "finish":
                return r.finish(
                    dataset,
                    holder,
                    target_guids={str(k): int(v) for k, v in dict(args["target_guids"]).items()},
                    readonly_replica=bool(args.get("readonly_replica", True)),
                )
            if verb == "drop_partial":
                tokens = {str(k): str(v) for k, v in dict(args["tokens"]).items()}
                return r.drop_partial(dataset, holder, tokens)
            if verb == "abort":
                return r.abort(dataset, holder, keep_claim=bool(args.get("keep_claim", False)))
            if verb in ("renew", "release"):
                return getattr(r, verb)(dataset, holder)
            if verb == "expect":
                return r.expect(dataset, holder, [int(g) for g in args.get("sent_guids") or []])
            if verb == "commit":
                prefix = args.get("prune_prefix")
                return r.commit(
                    dataset,
                    holder,
                    int(args["target_guid"]),
                    prune_prefix=None if prefix is None else str(prefix),
                )
            if verb == "fence":
                return r.fence(dataset, holder, str(args.get("reason") or "the standby was promoted"))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"recv.{verb}: bad arguments: {e}") from None
        raise ProtocolError(f"unknown op recv.{verb}")

    def backup(self, verb: str, args: dict[str, Any], peer: str | None = None) -> Any:
        """A ``backup.*`` op: this node as a backup node (``kinds.backupstore``); a peer session's
        through ``peer_backups`` (grants, and entries the peer wrote)."""
        b = self.backups
        if b is None:
            raise UsageError("this agent keeps no backups")
        if peer is not None:
            return peer_backups.op(b, self._authority(), peer, verb, args)
        return peer_backups.op(b, None, None, verb, args)

    def suspend(self, activity_id: str) -> ActivityRecord:
        self._live_or_raise(activity_id, "suspend").suspend()
        return self.store.get(activity_id)

    def resume(self, activity_id: str) -> ActivityRecord:
        self._live_or_raise(activity_id, "resume").resume()
        return self.store.get(activity_id)

    def cancel(self, activity_id: str) -> ActivityRecord:
        self._live_or_raise(activity_id, "cancel").cancel()
        return self.store.get(activity_id)

    def set(self, activity_id: str, args: dict[str, Any]) -> ActivityRecord:
        """Change a setting of a live activity (today: ``bwlimit_bps``, null to lift it)."""
        unknown = sorted(set(args) - {"id", "bwlimit_bps"})
        if unknown or "bwlimit_bps" not in args:
            raise UsageError(
                f"set takes bwlimit_bps (bytes/s or null), not {', '.join(unknown) or 'nothing'}"
            )
        act = self._live_or_raise(activity_id, "set")
        setter = getattr(act, "set_bwlimit", None)
        if setter is None:
            raise UsageError(f"activity {activity_id} ({act.kind}) has no bandwidth limit to change")
        setter(args["bwlimit_bps"])
        return self.store.get(activity_id)

    def events(self, activity_id: str) -> builtins.list[dict[str, Any]]:
        self.store.get(activity_id)  # ActivityNotFound
        return self.store.events(activity_id)

    def wait(self, activity_id: str, timeout: float | None = None) -> ActivityRecord:
        with self._lock:
            act = self._live.get(activity_id)
        if act is not None:
            act.wait(timeout)
        return self.store.get(activity_id)

    def holds(self, release_stale: object = False) -> dict[str, Any]:
        """The project's holds on this node; with ``release_stale``, those no live owner keeps released
        first (``agent.holds``)."""
        if not isinstance(release_stale, bool):
            raise UsageError("holds: release_stale must be true or false")
        return self._hold_keeper().report(release_stale=release_stale)

    # -- helpers ----------------------------------------------------------------------------------
    def _hold_keeper(self) -> HoldKeeper:
        if self.receiver is None:
            raise UsageError("this agent has no ZFS of its own to list holds on")
        return HoldKeeper(self.receiver.zfs, self.store, self.receiver.claims)

    def _release_holds_of(self, activity_id: str) -> None:
        """An activity that ended without its own undo (failed at recovery): its holds go now."""
        if self.receiver is None:
            return
        try:
            for h in self._hold_keeper().release_stale(activity_id):
                self.log.info("released hold %s on %s of %s", h.tag, h.snapshot, activity_id)
        except Exception as e:
            self.log.warning(
                "holds of %s not released: %s (activity holds --release-stale will)", activity_id, e
            )

    def _live_or_raise(self, activity_id: str, verb: str) -> LocalActivity:
        with self._lock:
            act = self._live.get(activity_id)
        if act is not None:
            return act
        rec = self.store.get(activity_id)  # ActivityNotFound
        if verb == "set" and rec.state in TERMINAL:
            raise InvalidTransition(f"activity {activity_id} is {rec.state}: nothing to set")
        target = {"suspend": "suspended", "resume": "running", "cancel": "cancelling"}.get(verb)
        if target is not None:
            check_transition(rec.state, target, activity_id, verb)  # terminal: InvalidTransition
        raise UsageError(f"activity {activity_id} is not hosted by this agent")

    def _reap(self) -> None:
        with self._lock:
            for aid in [a for a, act in self._live.items() if act.state in TERMINAL]:
                del self._live[aid]

    def live_count(self) -> int:
        with self._lock:
            return sum(1 for a in self._live.values() if a.state not in TERMINAL)
