"""The plan of a recursive tree sent one stream per dataset (``parallel`` > 1; run by :mod:`.parallel`).

Pure functions over listings: :func:`tree_jobs` (each dataset of the tree holding the target snapshot is
a job, planned by GUID on its own: incremental from its own newest common snapshot, a full stream of the
target where the destination lacks the dataset, nothing where it holds the target; a dataset new to the
destination waits for its parent's stream), :func:`job_specs` (one job's send and receive),
:func:`streams_fit` (whether the destination allows a stream per dataset at all) and
:func:`tree_estimate` (``m``: the sum of the streams' estimates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..zfs.models import RecvSpec, SendSpec, Snapshot
from ..zfs.names import parse_dataset
from .estimate import Estimate, estimate_send
from .plan import UP_TO_DATE, Conflict, Plan, incremental_path

if TYPE_CHECKING:
    from ..zfs.api import Zfs
    from .remote import DestinationDataset, DestinationTree
    from .request import Request

__all__ = ["TreeJob", "job_specs", "streams_fit", "tree_estimate", "tree_jobs"]


@dataclass(frozen=True)
class TreeJob:
    """One dataset's stream: ``rel`` (``""``: the top), what to send, and the job it waits for."""

    rel: str
    plan: Plan
    after: str | None = None

    @property
    def full(self) -> bool:
        return self.plan.full


def _parent(rel: str) -> str | None:
    return None if not rel else rel.rpartition("/")[0]


def tree_jobs(
    source: Mapping[str, Sequence[Snapshot]],
    destination: Mapping[str, DestinationDataset],
    target: str,
    *,
    intermediates: bool = False,
    rollback_destination: bool = False,
) -> list[TreeJob]:
    """The streams of a tree (relative names; see the module doc), parents first. A dataset whose plan
    is a conflict (diverged, no common snapshot) raises that conflict's error naming it."""
    jobs: list[TreeJob] = []
    new: set[str] = set()
    for rel in sorted(source, key=lambda r: (r.count("/") if r else -1, r)):
        snaps = source[rel]
        if not any(s.snap == target for s in snaps):
            continue  # a child made after the snapshot: send -R would not carry it either
        d = destination.get(rel)
        outcome = incremental_path(
            snaps,
            None if d is None else d.snapshots,
            target,
            intermediates=intermediates,
            rollback_destination=rollback_destination,
            destination_modified=d is not None and d.changed,
            modified_detail="" if d is None else d.detail,
        )
        if isinstance(outcome, Conflict):
            if outcome.kind == UP_TO_DATE:
                continue
            err = outcome.error()
            raise type(err)(f"{rel or 'the top'}: {outcome.reason}")
        if d is None:
            new.add(rel)
        parent = _parent(rel)
        jobs.append(TreeJob(rel, outcome, parent if d is None and parent in new else None))
    return jobs


def job_specs(
    job: TreeJob,
    destination: str,
    *,
    properties: bool,
    resumable: bool,
    read_only: bool,
    flags: Mapping[str, bool] | None = None,
) -> tuple[SendSpec, RecvSpec]:
    """The send and receive of one job: its dataset's planned stream, into ``destination`` (the top) or
    its child ``job.rel``; ``read_only``: a full stream of the top is received ``readonly=on``."""
    plan = job.plan
    spec = plan.send_spec(recursive=False, properties=properties, flags=flags)
    target = parse_dataset(destination if not job.rel else f"{destination}/{job.rel}")
    props = {"readonly": "on"} if read_only and job.full and not job.rel else {}
    return spec, RecvSpec(target=target, resumable=resumable, set_properties=props)


def streams_fit(src: Mapping[str, Sequence[Snapshot]], dst: DestinationTree, target: str) -> bool:
    """Whether the tree may go one stream per dataset: the destination receives unmounted (``recv -u``),
    or every dataset to send exists there already. Without ``-u`` (zfs-fuse) a new dataset is mounted
    by its own receive, which removes and makes again its mountpoint directory inside its (mounted)
    parent: the parent's data would change after its snapshot, and the next replication would find it
    diverged. One ``send -R`` does not (a new tree arrives whole)."""
    if dst.recv_no_mount:
        return True
    return all(rel in dst.datasets for rel, snaps in src.items() if any(s.snap == target for s in snaps))


def tree_estimate(
    zfs: Zfs,
    src: dict[str, list[Snapshot]],
    dst: DestinationTree,
    req: Request,
    flags: Mapping[str, bool] | None = None,
) -> Estimate:
    """``parallel``: the sum of the tree's streams' estimates (:func:`tree_jobs`); a
    dataset's conflict refuses the replication before anything is stored."""
    jobs = tree_jobs(
        src,
        dst.datasets,
        req.snapshot.snap,
        intermediates=req.intermediates,
        rollback_destination=req.rollback_destination,
    )
    parts = [estimate_send(zfs, j.plan.send_spec(properties=req.properties, flags=flags)) for j in jobs]
    return Estimate(
        sum(p.bytes for p in parts),
        all(p.exact for p in parts),
        parts[0].method if parts else "nothing to send",
    )
