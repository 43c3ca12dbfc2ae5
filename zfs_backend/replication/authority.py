"""What a **peer session** may do on this node: the checks between a peer's request and the receiver or
the backup store, under the controller's grants (:mod:`.grants`) and the node's replica roots.

A peer session is a connection to the agent's peer socket that began with ``peer.hello`` naming the
peer node (written by ``peer-exec --peer NODE``, the forced command of that node's key, before a
single byte of the peer's own; see ``agent.daemon``). Sessions on the controller's socket carry no
peer and keep the receiver's behaviour: the controller is trusted.

Rules (each refusal is one line: ``NotGranted``, or the claim store's "does not hold" conflict):

* ``recv.begin`` needs ``grant``: a live grant of **this** peer, for **this** dataset (strictly under a
  replica root) with the same ``recursive`` flag, allowing ``create`` (the dataset does not exist) or
  ``increment`` (it does); a grant already bound to the same holder (its claim's own re-begin: a
  migrate's next round, a restarted activity) is enough by itself. The claim records peer and grant.
* every other ``recv.*`` op: the claim on the dataset must be held by the given holder **and** have been
  taken by this peer; otherwise refused exactly as a claim that is not held (no other holder is named).
  ``recv.discard`` also needs ``rollback`` in the claim's grant; ``recv.commit`` with ``prune_prefix``
  needs ``prune``.
* ``recv.status``: only this peer's own claims.
* ``peer.admit`` (``peer-exec`` asks before it runs ``zfs receive`` / ``backup-write`` /
  ``backup-read``): a receive only into a dataset covered by a live claim of this peer (the claim's top,
  or inside it for a recursive claim) whose grant allows it; the answer carries the node's receive
  dialect (``-u``, ``-x``).
* ``backup.*``: ``backup.begin`` needs a live ``backup`` grant of this peer for the volume; lists,
  verifies and reads cover only volumes the peer holds a backup grant for, or entries it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NotGranted, UsageError, ZfsBackendError
from ..zfs.names import DatasetName, parse_dataset, validate_node
from .claims import Claim, ClaimStore, not_held
from .grants import DEFAULT_GRANT_TTL_S, Grant, GrantStore, under_roots
from .wire import validate_backup_id, validate_grant, validate_holder

if TYPE_CHECKING:
    from ..zfs.dialect import Dialect

__all__ = ["PeerAuthority"]


class PeerAuthority:
    """The grant ops of the controller's socket and the checks of peer sessions (see the module doc)."""

    def __init__(
        self,
        grants: GrantStore,
        claims: ClaimStore,
        roots: tuple[str, ...],
        *,
        dialect: Callable[[], Dialect] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.grants = grants
        self.claims = claims
        self.roots = tuple(str(parse_dataset(r)) for r in roots)
        self._dialect = dialect
        self._clock = clock

    # ---------------------------------------------------------------- the controller's grant ops

    def _check_root(self, ds: DatasetName | str) -> None:
        if not under_roots(str(ds), self.roots):
            where = ", ".join(self.roots) or "none are configured (ZFS_BACKEND_REPLICA_ROOTS)"
            raise NotGranted(f"{ds} is not under this node's replica roots ({where})")

    def grant_op(self, verb: str, args: dict[str, Any]) -> Any:
        if verb == "list":
            return [g.to_dict() for g in self.grants.list()]
        if verb == "revoke":
            if args.get("grant") is not None:
                return {"revoked": self.grants.revoke(validate_grant(args["grant"]))}
            if args.get("dataset") is None:
                raise UsageError("grant.revoke needs grant or dataset")
            peer = args.get("peer")
            return {
                "revoked": self.grants.revoke_dataset(
                    str(parse_dataset(args["dataset"])), None if peer is None else validate_node(peer)
                )
            }
        if verb == "add":
            return self._add(args)
        raise UsageError(f"unknown op grant.{verb}")

    def _add(self, args: dict[str, Any]) -> dict[str, Any]:
        peer = validate_node(args.get("peer"))  # type: ignore[arg-type]
        ttl = args.get("ttl_s", DEFAULT_GRANT_TTL_S)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= 10 * 365 * 86400:
            raise UsageError(f"grant: ttl_s must be a number of seconds (0 = no expiry), not {ttl!r}")
        allow = args.get("allow")
        if args.get("volume") is not None:
            if args.get("dataset") is not None:
                raise UsageError("grant: name a dataset or a volume, not both")
            if list(allow or []) != ["backup"]:
                raise UsageError('grant: a volume grant allows ["backup"] only')
            g = self.grants.add(peer, ["backup"], volume=validate_backup_id(args["volume"], "volume id"),
                                ttl_s=float(ttl))  # fmt: skip
        else:
            ds = parse_dataset(args.get("dataset"))  # type: ignore[arg-type]
            self._check_root(ds)
            if "backup" in (allow or []):
                raise UsageError("grant: backup is granted for a volume, not a dataset")
            recursive = args.get("recursive", False)
            if not isinstance(recursive, bool):
                raise UsageError("grant: recursive must be true or false")
            g = self.grants.add(peer, allow or [], dataset=str(ds), recursive=recursive, ttl_s=float(ttl))
        return {"grant": g.id, "expires_at": g.expires_at}

    # ---------------------------------------------------------------- peer sessions: recv.*

    def for_begin(self, peer: str, args: dict[str, Any], exists: Callable[[DatasetName], bool]) -> Grant:
        """The grant that lets ``peer`` begin receiving into ``args['dataset']``, or ``NotGranted``."""
        top = parse_dataset(args["dataset"])
        self._check_root(top)
        self.claims.refuse_if_fenced(str(top), validate_holder(args.get("holder")))
        if args.get("grant") is None:
            raise NotGranted(f"{peer} may not receive into {top}: no grant was presented")
        g = self.grants.get(validate_grant(args["grant"]))
        recursive = bool(args.get("recursive", False))
        if g is None or g.peer != peer or g.dataset != str(top) or g.recursive != recursive:
            raise NotGranted(f"{peer} holds no grant {args['grant']} to receive into {top}")
        if g.holder is not None and g.holder == validate_holder(args.get("holder")):
            return g  # its holder again, under the claim it took (a migrate's next round, a restart)
        if {"create", "increment"} <= set(g.allow):
            return g  # either way: no need to ask ZFS whether it exists (a command on the begin's path)
        if exists(top):
            if "increment" not in g.allow:
                raise NotGranted(
                    f"{top} exists: grant {g.id} allows only creating it (a full copy needs a new dataset)"
                )
        elif "create" not in g.allow:
            raise NotGranted(f"{top} does not exist: grant {g.id} allows only receiving into it as it is")
        return g

    def held(self, peer: str, verb: str, args: dict[str, Any]) -> Claim:
        """The claim a peer's ``recv.<verb>`` works on: held by the holder named and taken by ``peer``."""
        top = parse_dataset(args["dataset"])
        holder = validate_holder(args["holder"])
        claim = self.claims.get(str(top))
        if claim is None or claim.holder != holder or claim.state.get("peer") != peer:
            self.claims.refuse_if_fenced(str(top), holder)  # its own fence, told as such
            raise not_held(top, holder)
        self._check_root(top)
        if not claim.state.get("recursive"):  # a claim on one dataset reaches no dataset inside it
            rels = [
                *dict(args.get("base_guids") or {}),
                *dict(args.get("target_guids") or {}),
                *dict(args.get("tokens") or {}),
            ]
            target = args.get("target")
            if any(rel != "" for rel in rels) or (target is not None and str(target) != str(top)):
                raise NotGranted(f"the claim of {holder} covers {top} alone, not the datasets inside it")
        need = {"discard": "rollback"}.get(verb)
        if verb == "commit" and args.get("prune_prefix") is not None:
            need = "prune"
        if need is not None:
            g = self.grants.get(str(claim.state.get("grant") or ""))
            if g is None or need not in g.allow:
                raise NotGranted(f"the grant of {holder} on {top} does not allow {need}")
        return claim

    def own_claims(self, peer: str, status: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c for c in status if c.get("peer") == peer]

    def admit_receive(self, peer: str, dataset: object) -> dict[str, Any]:
        """``peer.admit`` for ``zfs receive DATASET``: allowed, and the receive dialect; or NotGranted."""
        ds = parse_dataset(dataset)  # type: ignore[arg-type]
        self._check_root(ds)
        now = self._clock()
        for c in self.claims.all():
            if c.state.get("peer") != peer or not c.live(now):
                continue
            inside = c.state.get("recursive") and str(ds).startswith(c.dataset + "/")
            if c.dataset != str(ds) and not inside:
                continue
            g = self.grants.get(str(c.state.get("grant") or ""))
            if g is None:
                continue
            need = "increment" if "" in c.state.get("before", {}) else "create"
            if need in g.allow or (inside and {"create", "increment"} & set(g.allow)):
                d = self._probe()
                return {
                    "dataset": str(ds),
                    "recv_no_mount": bool(d and d.recv_no_mount),
                    "recv_properties": bool(d and d.recv_properties),
                    "dialect": str(d) if d is not None else "",
                }
        raise NotGranted(f"{peer} holds no granted claim to receive into {ds}")

    def _probe(self) -> Dialect | None:
        """The node's ZFS dialect; None when it cannot be probed (then nothing is assumed: no ``-u``, no
        ``-x``, and ``peer-exec`` checks the stream's properties itself)."""
        try:
            return self._dialect() if self._dialect is not None else None
        except ZfsBackendError:
            return None

    # ---------------------------------------------------------------- peer sessions: backups

    def backup_grant(self, peer: str, volume: str, grant: object) -> Grant:
        """The live backup grant ``peer`` presented for ``volume``, or NotGranted."""
        g = None if grant is None else self.grants.get(validate_grant(grant))
        if g is None or g.peer != peer or g.volume != volume or "backup" not in g.allow:
            raise NotGranted(f"{peer} holds no backup grant for volume {volume}")
        return g

    def granted_volumes(self, peer: str) -> set[str]:
        now = self._clock()
        return {
            g.volume
            for g in self.grants.list()
            if g.peer == peer and g.volume is not None and "backup" in g.allow and g.live(now)
        }
