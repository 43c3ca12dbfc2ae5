"""``scripts/bench replicate`` (``--only tree``): a recursive tree of ``--tree`` small datasets, its
increment replicated three ways, in rotating order, wall clock from the call to the verified result:

* **raw**: ``zfs send -R -i @base top@i | ssh node2 zfs recv top`` typed on node1 (the bench's own key);
* **parallel 1**: ``snapshot_replicate(..., recursive=True)``: one ``send -R`` through the agents;
* **parallel 4**: the same with ``parallel=4``: one stream per dataset, four at a time.

The increment, not the seed: the lab's zfs-fuse cannot receive a new dataset unmounted, so a new tree
always goes as one ``send -R`` there (``replication/tree_plan.py:streams_fit``); only a tree the
destination holds whole goes one stream per dataset. Before each run every dataset of the destination's
tree is rolled back to ``@base``; after it the top's and the last child's ``@i`` GUIDs are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zfs_backend.zfs import Zfs, parse_dataset, parse_snapshot

if TYPE_CHECKING:
    from .replicate import Bench

__all__ = ["tree", "tree_rows"]

# runs on node1; names reach it as positional parameters
_RAW_R = (
    's=$(date +%s.%N); zfs send -R -i "$2" "$1" '
    '| ssh -o BatchMode=yes -i "$5" "$3" zfs recv "$4" || exit 1; e=$(date +%s.%N); echo "$s $e"'
)
# runs on node2: every dataset of the tree back at @base
_RESET = 'for d in $(zfs list -H -o name -r "$1"); do zfs rollback -r "$d@base" || exit 1; done'


def _raw_tree(b: Bench, top: str, raw_key: str, dst_node: str) -> float:
    argv = ["sh", "-c", _RAW_R, "bench", f"{top}@i", f"{top}@base", dst_node, top, raw_key]
    res = b.src.run(argv, timeout=1800)
    s, e = (float(x) for x in res.text.split())
    return e - s


def tree(b: Bench, count: int, mib: int, repeats: int, *, raw_key: str, dst_node: str) -> None:
    top = "tank/btree"
    kids = [f"{top}/c{i:02d}" for i in range(count - 1)]
    b.drop(b.src, top)
    b.drop(b.dst, top)
    for ds in (top, *kids):
        b.write(ds, "base", 1)
    Zfs(b.src).snapshot(parse_snapshot(f"{top}@base"), recursive=True)
    b.api(f"{top}@base", recursive=True)  # the seed (one send -R on zfs-fuse)
    for ds in (top, *kids):
        b.write(ds, "more", mib)
    Zfs(b.src).snapshot(parse_snapshot(f"{top}@i"), recursive=True)
    target = f"{top}@i"

    def reset() -> None:
        b.dst.run(["sh", "-c", _RESET, "bench", top], timeout=600)

    def verify() -> None:
        b.verify(target)
        b.verify(f"{kids[-1]}@i")

    b.rotate(
        "tree",
        repeats,
        {
            "raw": lambda: _raw_tree(b, top, raw_key, dst_node),
            "p1": lambda: b.api(target, recursive=True),
            "p4": lambda: b.api(target, recursive=True, parallel=4),
        },
        reset,
        verify,
    )
    assert Zfs(b.dst).exists(parse_dataset(kids[0]))
    b.drop(b.dst, top)
    b.drop(b.src, top)


def tree_rows(count: int, mib: int) -> list[tuple[str, str]]:
    """(measure, sample key) rows for the report, each compared with raw."""
    label = f"tree of {count} datasets, {mib} MiB each changed"
    return [
        (f"{label}: raw send -R -i", "tree.raw"),
        (f"{label}: API --parallel 1 (send -R)", "tree.p1"),
        (f"{label}: API --parallel 4", "tree.p4"),
    ]
