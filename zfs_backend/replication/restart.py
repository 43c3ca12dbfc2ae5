"""The ``replicate`` activity's restart and its resume tokens (mixed into
:class:`~.activity.Replicate`): what the next attempt sends, from what the destination holds now.

``_prepare_restart`` begins again (the same claim) and then resumes the destination's token when it
continues the planned stream (:mod:`.resume`); a token it cannot use (its snapshot was pruned on the
source, another base, another stream, corrupt) never wedges the replication: the destination's
``drop_partial`` discards that partial receive where it proves it the project's
(:mod:`.receiver_abort`), and the plan falls back to the newest common snapshot, saying so in the
activity's events and ``result.resume_discarded``. A partial receive it may not discard refuses the
restart with one line naming ``zfs receive -A``. ``_drop_stale`` does the same for partial receives a
new replication finds before its first stream (an earlier, abandoned run of the same relationship):
``_first_stream_steps`` (then ``rollback_destination``'s discard). ``_tree_streams``: the same for an
attempt of a tree in parallel (:mod:`.parallel`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..activity.stream import Endpoint
from ..errors import ReplicationConflict
from ..zfs.models import Snapshot
from .compress import pack_argv, unpack_argv
from .plan import Plan
from .resume import planned_chain, resume_mismatch
from .tls_channel import recv_argv, send_argv
from .tree_plan import TreeJob, job_specs, tree_jobs
from .upkeep import dialect_for_recv

if TYPE_CHECKING:
    from ..activity.core import ActivityContext
    from ..hosts.base import Host
    from ..hosts.peer import PeerHost
    from ..zfs.api import Zfs
    from .remote import DestinationTree, RemoteReceiver
    from .request import Request

__all__ = ["MULTIPLEX_BELOW", "RestartOps", "stale_tokens"]

#: streams up to this size share the SSH master connection to the destination (no handshake, measured
#: ~0.25 s on the lab, and as fast: one channel on an idle connection); bigger ones get their own
#: connection, so that several big streams can use several cores for ciphering
MULTIPLEX_BELOW = 1 << 30


def stale_tokens(dst: DestinationTree) -> dict[str, str]:
    """Every partial receive of the destination tree (relative name -> its token)."""
    return {rel: d.resume_token for rel, d in dst.datasets.items() if d.resume_token}


class RestartOps:
    """Mixed into :class:`~.activity.Replicate` (which provides the rest)."""

    id: str
    ctx: ActivityContext
    request: Request
    kind_state: dict[str, Any]
    _current: Plan | None
    _noop: bool
    #: the first attempt's listing of both sides, from ``plan`` (a tree in parallel reuses it)
    _planned: tuple[dict[str, list[Snapshot]], DestinationTree] | None
    _replan: bool
    _last_renew: float
    _peer: PeerHost
    _local: Host
    _src: Zfs

    if TYPE_CHECKING:

        @property
        def receiver(self) -> RemoteReceiver: ...
        def _source_tree(self) -> dict[str, list[Snapshot]]: ...
        def _plan_against(
            self, src: dict[str, list[Snapshot]], dst: DestinationTree, *, restart: bool
        ) -> Plan: ...
        def _result(self) -> dict[str, Any]: ...

    def _recv_endpoint(self, argv: list[str]) -> Endpoint:
        """Where a stream goes: ``zfs receive argv`` through the peer, or, with ``compress``, packed
        after the relay (which counts the stream's own bytes) and unpacked by the peer's ``peer-exec``;
        with the ``tls`` transport, sent over the TLS data channel the peer's ``peer-exec`` opens."""
        if self.request.transport == "tls":
            node = self.request.destination_node
            ssh = self._peer.stream_argv(recv_argv(argv), multiplex=True)
            return Endpoint(self._local, send_argv(node, ssh), counts_network=False)
        codec = self.request.compress
        if codec:
            return Endpoint(self._local, pack_argv(codec, self._peer.stream_argv(unpack_argv(codec, argv))))
        return Endpoint(self._peer, argv, counts_network=not self._peer.stream_multiplex)

    @property
    def _where(self) -> str:
        return f"{self.request.destination_node}:{self.request.destination}"

    def _resume_refused(self, token: str, source: list[Snapshot]) -> str | None:
        """None when ``token`` resumes the planned stream (:mod:`.resume`), else why not."""
        ks = self.kind_state
        base_guid = ks.get("base_guid")
        if base_guid is None and ks.get("base"):  # planned before base_guid was recorded
            base_guid = next((s.guid for s in source if s.snap == ks["base"]), None)
        base = None if base_guid is None else int(base_guid)
        chain = planned_chain(source, int(ks["target_guid"]), base, intermediates=self.request.intermediates)
        return resume_mismatch(token, self.request.snapshot.dataset, chain, base)

    def _drop_stale(self, receiver: RemoteReceiver, tokens: dict[str, str], why: str) -> None:
        """Discard the partial receives of ``tokens`` on the destination (its proofs), and say so; a
        partial receive it may not discard is a ``ReplicationConflict`` naming it."""
        report = receiver.drop_partial(tokens)
        left = [str(x) for x in report.get("left") or []]
        if left:
            raise ReplicationConflict(f"{self._where}: {'; '.join(left)}")
        names = ", ".join(f"{self.request.destination}/{r}".rstrip("/") for r in sorted(tokens))
        msg = (
            f"{self._where}: discarded the partial receive of {names} ({why}); "
            "sending from the newest common snapshot"
        )
        self.kind_state["resume_discarded"] = msg
        self.ctx.store.note(self.id, msg)
        self.ctx.log.warning("activity %s: %s", self.id, msg)
        self.ctx.store.save_result(self.id, self._result())

    def _prepare_restart(self) -> str | None:
        """Plan the next stream from what the destination holds now (``begin`` again, the same claim).
        Returns a resume token when the receive can be resumed; sets ``_noop`` when the target is
        already there."""
        req, ks = self.request, self.kind_state
        src = self._source_tree()
        sent = sorted({s.guid for snaps in src.values() for s in snaps})
        receiver = self.receiver
        source = f"{self.ctx.node}:{req.snapshot.dataset}"
        dst = receiver.begin(source, recursive=req.recursive, sent_guids=sent)
        top, refused = dst.top, None
        if top is not None and top.resume_token:
            refused = self._resume_refused(top.resume_token, src[""])
            if refused is None:
                self._current = None
                return top.resume_token
            ks["resume_refused"] = f"{self._where}: resume token not used: {refused}"
            self.ctx.log.warning("activity %s: %s", self.id, ks["resume_refused"])
            self.ctx.store.save_result(self.id, self._result())
        if ks.get("dest_existed") and stale_tokens(dst):
            # its own partial receive (or a provably project-made one), unusable: discarded, and the
            # plan falls back to the newest common snapshot; anything else refuses the restart
            why = f"resume token not used: {refused}" if top and top.resume_token else "unusable"
            try:
                self._drop_stale(receiver, stale_tokens(dst), why)
            except ReplicationConflict as e:
                raise ReplicationConflict(f"on restart, {e}") from None
            dst = receiver.begin(source, recursive=req.recursive, sent_guids=sent)
            top = dst.top
        want = int(ks["target_guid"])
        if top is not None and any(s.guid == want for s in top.snapshots):
            self._noop = True  # the last attempt completed before its end was recorded
            return None
        if top is not None and not ks.get("dest_existed"):
            # a tree this activity created, partial (zfs-fuse -R) or with a partial receive: the
            # receiver's abort removes only what it proves its own; then start over, keeping the claim
            receiver.abort(keep_claim=True)
            dst = receiver.begin(source, recursive=req.recursive, sent_guids=sent)
        self._current = self._plan_against(src, dst, restart=True)
        ks["plan"] = self._current.describe()
        return None

    def _first_stream_steps(self) -> None:
        """Before the first stream: an earlier run's partial receives dropped (:mod:`.restart`), then
        ``rollback_destination``'s discard; each once."""
        stale = self.kind_state.get("stale_tokens")
        if stale and not self.kind_state.get("stale_dropped"):
            self._drop_stale(self.receiver, dict(stale), "a partial receive from before this replication")
            self.kind_state["stale_dropped"] = True
        discard = self.kind_state.get("discard")
        if discard and not self.kind_state.get("discarded_done"):
            report = self.receiver.discard({str(k): int(v) for k, v in discard.items()})
            self.kind_state["discarded"] = report.get("discarded", {})
            self.kind_state["discarded_done"] = True
            self.ctx.store.save_result(self.id, self._result())
        elif self.request.rollback_destination:
            self.kind_state["discarded_done"] = True

    @staticmethod
    def _sent(src: dict[str, list[Snapshot]]) -> list[int]:
        return sorted({s.guid for snaps in src.values() for s in snaps})

    def _tree_streams(self) -> list[tuple[TreeJob, Endpoint, Endpoint]]:
        """``parallel``: this attempt's streams, one per dataset of the tree still to send
        (:mod:`.parallel`), planned from what the destination holds now."""
        req, ks = self.request, self.kind_state
        planned, self._planned = self._planned, None
        receiver, source = self.receiver, f"{self.ctx.node}:{req.snapshot.dataset}"
        if planned is not None and not self._replan and self._current is not None:
            src, dst = planned  # the first attempt, right after the plan: its listing (one begin less)
            changed = bool(ks.get("stale_tokens") or ks.get("discard"))
            self._first_stream_steps()
            if changed:
                dst = receiver.begin(source, recursive=True, sent_guids=self._sent(src))
            else:
                receiver.renew()
        else:
            src = self._source_tree()
            dst = receiver.begin(source, recursive=True, sent_guids=self._sent(src))
            if self._replan or self._current is None:  # a restart: its own cut streams' partials go
                self._replan = False
                tokens = stale_tokens(dst)
                if tokens:
                    self._drop_stale(receiver, tokens, "a cut stream of this tree")
                if any(not d.snapshots and not d.resume_token for d in dst.datasets.values()):
                    receiver.abort(keep_claim=True)  # a cut full receive left an empty dataset
                if tokens or any(not d.snapshots for d in dst.datasets.values()):
                    dst = receiver.begin(source, recursive=True, sent_guids=self._sent(src))
            else:
                self._first_stream_steps()
        self._last_renew = time.monotonic()
        jobs = tree_jobs(src, dst.datasets, req.snapshot.snap, intermediates=req.intermediates)
        ks["plan"] = f"{len(jobs)} stream(s) of the tree, {req.parallel} at a time"
        self._peer.stream_multiplex = int(ks.get("estimate", 0)) < MULTIPLEX_BELOW
        out = []
        for job in jobs:
            send, recv = job_specs(
                job,
                str(req.destination),
                properties=req.properties,
                flags=ks.get("stream_flags"),
                resumable=bool(ks.get("resumable")),
                read_only=bool(ks.get("recv_properties")),
            )
            cons = self._recv_endpoint(recv.argv(dialect_for_recv(ks)))
            out.append((job, Endpoint(self._local, self._src.send_argv(send)), cons))
        return out
