"""The source's view of a destination's receiver: typed calls to the ``recv.*`` ops of the
destination node's agent (see :mod:`.receiver`; the answers' JSON shapes are :mod:`.wire`'s), over the
session the source's agent keeps to it.

:class:`RemoteReceiver` is bound to one destination dataset and one holder (the activity's id), and
to the grant the controller obtained for the activity from the destination's agent (when it has one:
every call carries it, see :mod:`.granted`); its ``begin`` returns a :class:`DestinationTree`: what the
destination holds, dataset by dataset (relative names, ``""`` for the top), with the exact answer to
"did its head change?".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..activity.core import PeerCaller
from ..zfs.models import Snapshot
from ..zfs.names import DatasetName
from .wire import snapshot_from_dict, validate_grant

__all__ = ["DestinationDataset", "DestinationTree", "RemoteReceiver"]


@dataclass(frozen=True)
class DestinationDataset:
    snapshots: list[Snapshot]
    changed: bool = False
    detail: str = ""
    resume_token: str | None = None


#: what a destination reports it can receive (its own ``zfs send`` flags: a ``zfs`` that can send a
#: stream can receive it)
STREAM_KEYS = ("send_compressed", "send_large_blocks", "send_embedded", "send_raw")


@dataclass(frozen=True)
class DestinationTree:
    node: str
    exists: bool
    available: int | None
    resumable_receive: bool = False
    recv_properties: bool = False
    recv_no_mount: bool = False
    #: the destination's ``send_compressed``/``send_large_blocks``/``send_embedded``/``send_raw`` (it can
    #: receive them)
    stream: dict[str, bool] = field(default_factory=dict)
    dialect: str = ""
    datasets: dict[str, DestinationDataset] = field(default_factory=dict)
    #: the highest filesystem (ZPL) version the destination's zfs receives (None: not reported)
    zpl_version: int | None = None

    @property
    def top(self) -> DestinationDataset | None:
        return self.datasets.get("")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DestinationTree:
        dia = d.get("dialect") or {}
        datasets = {}
        for rel, info in (d.get("datasets") or {}).items():
            ch = info.get("changes") or {}
            datasets[str(rel)] = DestinationDataset(
                snapshots=[snapshot_from_dict(s) for s in info.get("snapshots") or []],
                changed=bool(ch.get("changed")),
                detail=str(ch.get("detail") or ""),
                resume_token=info.get("resume_token"),
            )
        avail = d.get("available")
        zpl = dia.get("zpl_version")
        return cls(
            node=str(d.get("node", "")),
            exists=bool(d.get("exists")),
            available=None if avail is None else int(avail),
            resumable_receive=bool(dia.get("resumable_receive")),
            recv_properties=bool(dia.get("recv_properties")),
            recv_no_mount=bool(dia.get("recv_no_mount")),
            stream={k: bool(dia.get(k)) for k in STREAM_KEYS},
            dialect=str(dia.get("name", "")),
            datasets=datasets,
            zpl_version=int(zpl) if isinstance(zpl, int) and not isinstance(zpl, bool) else None,
        )


class RemoteReceiver:
    """``recv.*`` calls for one destination dataset on behalf of one activity, each with its grant."""

    def __init__(self, peer: PeerCaller, dataset: DatasetName, holder: str, grant: str | None = None) -> None:
        self.peer = peer
        self.dataset = dataset
        self.holder = holder
        self.grant = None if grant is None else validate_grant(grant)

    def _call(self, verb: str, **args: Any) -> Any:
        if self.grant is not None:
            args["grant"] = self.grant
        return self.peer.call(f"recv.{verb}", dataset=str(self.dataset), holder=self.holder, **args)

    def begin(self, source: str, *, recursive: bool, sent_guids: list[int]) -> DestinationTree:
        return DestinationTree.from_dict(
            self._call("begin", source=source, recursive=recursive, sent_guids=sent_guids)
        )

    def clean(self, target: str | None = None) -> dict[str, Any]:
        return dict(self._call("clean", target=target))

    def discard(self, base_guids: dict[str, int]) -> dict[str, Any]:
        return dict(self._call("discard", base_guids=base_guids))

    def renew(self) -> None:
        self._call("renew")

    def finish(self, target_guids: dict[str, int], *, readonly_replica: bool = True) -> dict[str, Any]:
        return dict(self._call("finish", target_guids=target_guids, readonly_replica=readonly_replica))

    def release(self) -> dict[str, Any]:
        return dict(self._call("release"))

    def drop_partial(self, tokens: dict[str, str]) -> dict[str, Any]:
        return dict(self._call("drop_partial", tokens=tokens))

    def abort(self, *, keep_claim: bool = False) -> dict[str, Any]:
        return dict(self._call("abort", keep_claim=keep_claim))

    # a standby's (see receiver_standby)
    def expect(self, sent_guids: list[int]) -> None:
        self._call("expect", sent_guids=sent_guids)

    def commit(self, target_guid: int, *, prune_prefix: str | None = None) -> dict[str, Any]:
        return dict(self._call("commit", target_guid=target_guid, prune_prefix=prune_prefix))

    def fence(self, reason: str) -> dict[str, Any]:
        return dict(self._call("fence", reason=reason))
