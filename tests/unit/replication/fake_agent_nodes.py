"""Fake agent nodes, as the controller sees them (``zfs_backend.rpc.client.Node``), that record every call
in one shared, ordered log: ``grant.add``, ``grant.revoke``, ``start``, ``list`` (``ping`` is counted).
For the tests of the controller's grants (``replication.granted`` and every path that starts a granted
activity)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zfs_backend.activity.report import ActivityRecord
from zfs_backend.errors import AgentUnavailable

__all__ = ["GRANT", "FakeActivity", "FakeExports", "FakeNode", "FakeNodes", "FakeZfs", "fake_driver"]

GRANT = "gr-01M8PC6J46SJJSD1CGAQ7Y88{:02d}"


class FakeActivity:
    def __init__(self, node: str, n: int, kind: str, params: dict[str, Any]) -> None:
        self.id = f"act-01M8PC6J46SJJSD1CGAQ7Y88{n:02d}"
        self.node, self.kind, self.params, self.state = node, kind, params, "running"

    def record(self) -> ActivityRecord:
        return ActivityRecord(
            id=self.id, kind=self.kind, node=self.node, state=self.state, params=self.params
        )

    def cancel(self) -> None:
        self.state = "cancelled"

    def wait(self, timeout: float | None = None) -> str:
        return self.state


class FakeNode:
    """One node's agent. ``grant_error``/``start_error``/``revoke_error``: what those calls raise;
    ``start_goes_through``: the start error comes after the activity was made (a lost answer)."""

    def __init__(self, name: str, nodes: FakeNodes) -> None:
        self.name, self.nodes = name, nodes
        self.grant_error: BaseException | None = None
        self.start_error: BaseException | None = None
        self.revoke_error: BaseException | None = None
        self.start_goes_through = False
        self.ping_error: BaseException | None = None
        self.pings = 0
        self.on_grant: Any = None  # called first thing in grant() (a test's hook)
        self.acts: dict[str, FakeActivity] = {}

    def _log(self, op: str, args: dict[str, Any]) -> None:
        self.nodes.calls.append((self.name, op, args))

    def grant(
        self,
        peer: str,
        allow: Sequence[str],
        *,
        dataset: str | None = None,
        volume: str | None = None,
        recursive: bool = False,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        if self.on_grant is not None:
            self.on_grant()
        args = {"peer": peer, "allow": list(allow), "dataset": dataset, "volume": volume}
        self._log("grant.add", {**args, "recursive": recursive, "ttl_s": ttl_s})
        if self.grant_error is not None:
            raise self.grant_error
        self.nodes.granted += 1
        gid = GRANT.format(self.nodes.granted)
        self.nodes.live[gid] = (self.name, {**args, "recursive": recursive, "ttl_s": ttl_s})
        return {"grant": gid, "expires_at": 0.0}

    def revoke_grant(
        self, grant: str | None = None, *, dataset: str | None = None, peer: str | None = None
    ) -> int:
        self._log("grant.revoke", {"grant": grant, "dataset": dataset, "peer": peer})
        if self.revoke_error is not None:
            raise self.revoke_error
        gone = [
            g
            for g, (node, a) in self.nodes.live.items()
            if node == self.name
            and (g == grant or (grant is None and a["dataset"] == dataset and peer in (None, a["peer"])))
        ]
        for g in gone:
            del self.nodes.live[g]
        return len(gone)

    def start(self, kind: str, params: dict[str, Any]) -> FakeActivity:
        self._log("start", {"kind": kind, "params": dict(params)})
        act = None
        if self.start_error is None or self.start_goes_through:
            self.nodes.started += 1
            act = FakeActivity(self.name, self.nodes.started, kind, dict(params))
            self.acts[act.id] = act
        if self.start_error is not None:
            raise self.start_error
        assert act is not None
        return act

    def ping(self) -> dict[str, Any]:
        """Not in the log of calls (a session's warm-up): counted in ``pings``."""
        self.pings += 1
        if self.ping_error is not None:
            raise self.ping_error
        return {"agent": "zfs-backend", "node": self.name}

    def list(self, state: str | None = None) -> list[FakeActivity]:
        self._log("list", {})
        return list(self.acts.values())

    def get(self, activity_id: str) -> FakeActivity:
        return self.acts[activity_id]

    def close(self) -> None:
        self.nodes.closed += 1


class FakeNodes:
    """``node_for``: the nodes by name, one shared log of calls, the grants still live (not revoked)."""

    def __init__(self, *names: str) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.live: dict[str, tuple[str, dict[str, Any]]] = {}
        self.granted = 0
        self.started = 0
        self.nodes = {n: FakeNode(n, self) for n in names}
        self.unreachable: set[str] = set()
        self.closed = 0

    def __call__(self, name: str) -> FakeNode:
        if name in self.unreachable:
            raise AgentUnavailable(f"{name}: unreachable (fake)")
        return self.nodes[name]

    def __getitem__(self, name: str) -> FakeNode:
        return self.nodes[name]

    def ops(self) -> list[tuple[str, str]]:
        """(node, op) in call order."""
        return [(n, op) for n, op, _ in self.calls]

    def args(self, op: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, a) for n, o, a in self.calls if o == op]


class FakeZfs:
    """The controller's own ZFS access to a node, as far as the start and end paths use it: datasets with
    snapshots (``Snapshot`` objects), user properties, and a record of what was destroyed."""

    def __init__(self) -> None:
        self.snaps: dict[str, list[Any]] = {}
        self.props: dict[tuple[str, str], str] = {}
        self.destroyed: list[str] = []
        self.rolled_back: list[str] = []

    def exists(self, name: object) -> bool:
        return str(name) in self.snaps

    def list_snapshots(self, ds: object) -> list[Any]:
        return list(self.snaps.get(str(ds), []))

    def get(self, name: object, props: list[str]) -> dict[str, str]:
        return {p: self.props.get((str(name), p), "0") for p in props}

    def get_with_source(self, name: object, prop: str) -> tuple[str, str]:
        return self.props.get((str(name), prop), "-"), "local"

    def rollback(self, snap: object, **kw: Any) -> None:
        self.rolled_back.append(str(snap))

    def destroy(self, name: object, **kw: Any) -> None:
        self.destroyed.append(str(name))
        self.snaps.pop(str(name), None)


class FakeExports:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove(self, ds: object) -> None:
        self.removed.append(str(ds))


def fake_driver(node: str, zfs: FakeZfs | None = None) -> Any:
    """A ``ZfsNfsDriver`` of ``node`` (its real names and layout) on a :class:`FakeZfs`."""
    from zfs_backend.driver.options import NodeOptions
    from zfs_backend.driver.zfs_nfs import ZfsNfsDriver

    d = ZfsNfsDriver(NodeOptions(node=node))
    d._zfs = zfs or FakeZfs()  # type: ignore[assignment]
    d._exports = FakeExports()  # type: ignore[assignment]
    return d
