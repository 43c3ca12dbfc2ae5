"""Flows on fakes (no node): the replicate task re-attaches after a crash by the activity id in the
logbook (never a second start), revert cancels the activity, the capability check's decider picks the
backend or the generic path, and the dual state is taken and given back (or not, when stateless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from taskflow.patterns import graph_flow

from zfs_backend.activity.report import ActivityRecord, Progress
from zfs_backend.config import load_settings
from zfs_backend.errors import AlreadyRunning
from zfs_backend.flows import engine, runs
from zfs_backend.flows.env import set_env
from zfs_backend.flows.replicate import ControllerStream, link_paths, replicate_paths
from zfs_backend.flows.tasks import BUSY, CheckCapabilities, MarkBusy, MarkDone

A1 = "act-01M8PC6J46SJJSD1CGAQ7Y88PX"


class Crash(BaseException):
    """What a SIGKILLed controller looks like to the engine: it stops dead, the logbook says RUNNING."""


class FakeActivity:
    def __init__(self, agent: FakeAgent, rid: str, params: dict[str, Any]) -> None:
        self.agent, self.id, self.params = agent, rid, params
        self.node, self.state, self.n = "node1", "running", 0

    def record(self) -> ActivityRecord:
        return ActivityRecord(
            id=self.id,
            kind="replicate",
            node="node1",
            state=self.state,
            params=self.params,
            progress=Progress(self.n, 100),
        )

    def wait_record(self, timeout: float) -> ActivityRecord:
        if self.agent.crash_on_wait:
            self.agent.crash_on_wait = False
            raise Crash()
        self.n = min(100, self.n + 50)
        if self.n == 100:
            self.state = "succeeded"
        return self.record()

    def cancel(self) -> None:
        self.state = "cancelled"
        self.agent.cancelled.append(self.id)

    def wait(self, timeout: float | None = None) -> str:
        return self.state


class FakeAgent:
    def __init__(self, name: str = "node1", grants: list[tuple[str, str, Any]] | None = None) -> None:
        self.name = name
        self.acts: dict[str, FakeActivity] = {}
        self.starts = 0
        self.crash_on_wait = False
        self.cancelled: list[str] = []
        self.grants = grants if grants is not None else []  # (node, op, args), shared by the nodes

    def grant(self, peer: str, allow: list[str], **kw: Any) -> dict[str, Any]:
        self.grants.append((self.name, "grant.add", {"peer": peer, "allow": list(allow), **kw}))
        return {"grant": f"gr-01M8PC6J46SJJSD1CGAQ7Y88{len(self.grants):02d}", "expires_at": 0.0}

    def ping(self) -> dict[str, Any]:
        return {"node": self.name}

    def revoke_grant(self, grant: str | None = None, **kw: Any) -> int:
        self.grants.append((self.name, "grant.revoke", {"grant": grant, **kw}))
        return 1

    def start(self, kind: str, params: dict[str, Any]) -> FakeActivity:
        for a in self.acts.values():
            if a.state == "running" and a.params["snapshot"] == params["snapshot"]:
                raise AlreadyRunning("a twin runs")
        self.starts += 1
        a = FakeActivity(self, A1[:-2] + f"{self.starts:02d}", params)
        self.acts[a.id] = a
        return a

    def list(self) -> list[FakeActivity]:
        return list(self.acts.values())

    def get(self, rid: str) -> FakeActivity:
        return self.acts[rid]


class FakeVolume:
    def __init__(self) -> None:
        self.name, self.status = "vol1", "in-use"


class FakeService:
    def __init__(self) -> None:
        self.vol = FakeVolume()
        self.moves: list[str] = []

    def get_volume(self, name: str) -> FakeVolume:
        return self.vol

    def set_status(self, name: str, status: str, *, expect: str | None = None) -> None:
        assert expect is None or expect == self.vol.status
        self.vol.status = status
        self.moves.append(status)


class FakeDriver:
    class zfs:  # the destination holds nothing the activity made
        @staticmethod
        def exists(name: object) -> bool:
            return False


class FakeEnv:
    def __init__(self, home: Path, stats: dict[str, Any]) -> None:
        self.settings = load_settings({"ZFS_BACKEND_HOME": str(home)})
        self._stats = stats
        self.grants: list[tuple[str, str, Any]] = []
        self.agents = {n: FakeAgent(n, self.grants) for n in ("node1", "node2")}
        self.svc = FakeService()

    def stats(self, node: str) -> dict[str, Any]:
        return dict(self._stats)

    def agent(self, node: str) -> FakeAgent:
        return self.agents[node]

    def service(self) -> FakeService:
        return self.svc

    def driver(self, node: str) -> FakeDriver:
        return FakeDriver()


@pytest.fixture
def fake(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    stats = getattr(request, "param", {"snapshot_replicate": True, "stateless_volume_operations": True})
    e = FakeEnv(tmp_path, stats)
    old = set_env(e)  # type: ignore[arg-type]
    yield e
    set_env(old)


STORE = {
    "volume": "vol1",
    "primary": "node1",
    "standby_node": "node2",
    "snap": "node1:tank/volumes/volume-1@s1",
    "dest": "tank/volumes/volume-1",
}


def sample_flow() -> graph_flow.Flow:
    """check → busy → (backend | generic) → done: the shape of every flow here."""
    check = CheckCapabilities("check", rebind={"node": "primary"})
    backend, generic = replicate_paths(
        "rep", {"snapshot": "snap", "destination": "dest", "destination_node": "standby_node"}
    )
    busy, done = MarkBusy("busy"), MarkDone("done")
    g = graph_flow.Flow("sample").add(check, busy, backend, generic, done)
    link_paths(g, check, backend, generic)
    g.link(check, busy)
    for p in (backend, generic):
        g.link(busy, p)
        g.link(p, done)
    return g


def test_backend_path_reports_progress_and_succeeds(fake: FakeEnv) -> None:
    seen: list[tuple[str, str, float]] = []
    run = engine.run_flow(fake.settings, sample_flow, {}, STORE, on_progress=lambda *a: seen.append(a))
    assert run.state == "SUCCESS", run.error
    assert fake.agents["node1"].starts == 1
    [(node, op, args)] = fake.grants  # the destination granted the source, before the start
    assert (node, op, args["peer"], args["dataset"]) == ("node2", "grant.add", "node1", STORE["dest"])
    [act] = fake.agents["node1"].acts.values()
    assert act.params["grant"] == "gr-01M8PC6J46SJJSD1CGAQ7Y8801"
    assert ("rep.await", "PROGRESS", 0.5) in seen
    d = runs.show_flow(fake.settings, run.id)
    states = {a["name"]: a["state"] for a in d["atoms"]}
    assert states["rep.stream"] == "IGNORE" and states["rep.await"] == "SUCCESS"
    assert [f["id"] for f in runs.list_flows(fake.settings)] == [run.id]
    assert fake.svc.moves == []  # stateless: the volume stayed in-use throughout


def test_a_crash_resumes_from_the_logbook_without_a_second_transfer(fake: FakeEnv) -> None:
    fake.agents["node1"].crash_on_wait = True
    with pytest.raises(Crash):
        engine.run_flow(fake.settings, sample_flow, {}, STORE)
    [flow] = runs.list_flows(fake.settings)
    assert flow["state"] == "RUNNING"
    start = next(a for a in flow["atoms"] if a["name"] == "rep.start")
    assert start["state"] == "SUCCESS" and start["result"]["activity"].startswith("act-")
    run = engine.resume_flow(fake.settings, flow["id"][:8])
    assert run.state == "SUCCESS", run.error
    assert fake.agents["node1"].starts == 1  # re-attached to the same activity by its id


def test_a_start_repeated_after_a_crash_adopts_the_running_twin(fake: FakeEnv) -> None:
    from zfs_backend.flows.replicate import StartReplicate

    first = StartReplicate("s").execute(STORE["snap"], "node2", STORE["dest"])
    again = StartReplicate("s").execute(STORE["snap"], "node2", STORE["dest"])
    assert again == first and fake.agents["node1"].starts == 1
    # the second start's grant, refused with the start, is revoked: the twin holds its own
    assert [(n, op) for n, op, _ in fake.grants] == [("node2", "grant.add")] * 2 + [("node2", "grant.revoke")]
    assert fake.grants[-1][2]["grant"] == "gr-01M8PC6J46SJJSD1CGAQ7Y8802"


@pytest.mark.parametrize(
    "fake", [{"snapshot_replicate": True, "stateless_volume_operations": False}], indirect=True
)
def test_a_failing_step_reverts_the_flow_cancelling_the_activity(fake: FakeEnv, monkeypatch: Any) -> None:
    def boom(self: Any, volume: str, previous_status: str | None) -> None:
        raise RuntimeError("the last step fails")

    monkeypatch.setattr(MarkDone, "execute", boom)
    agent = fake.agents["node1"]
    run = engine.run_flow(fake.settings, sample_flow, {}, STORE)
    assert run.state == "REVERTED" and "the last step fails" in (run.error or "")
    assert fake.svc.moves == [BUSY, "in-use"]  # dual state: busy, then given back by the revert
    assert agent.cancelled == []  # it had succeeded: nothing to cancel, no replica created by it


@pytest.mark.parametrize(
    "fake", [{"snapshot_replicate": True, "stateless_volume_operations": False}], indirect=True
)
def test_revert_cancels_a_running_activity(fake: FakeEnv, monkeypatch: Any) -> None:
    def fails(self: FakeActivity, timeout: float) -> ActivityRecord:
        raise RuntimeError("the controller lost the activity")

    monkeypatch.setattr(FakeActivity, "wait_record", fails)
    run = engine.run_flow(fake.settings, sample_flow, {}, STORE)
    assert run.state == "REVERTED"
    assert fake.agents["node1"].cancelled == list(fake.agents["node1"].acts)
    assert fake.svc.vol.status == "in-use" and fake.svc.moves == [BUSY, "in-use"]


@pytest.mark.parametrize(
    "fake", [{"snapshot_replicate": False, "stateless_volume_operations": True}], indirect=True
)
def test_without_snapshot_replicate_the_controller_streams_it(fake: FakeEnv, monkeypatch: Any) -> None:
    calls: list[tuple[str, str, str]] = []

    def stream(self: Any, snapshot: str, destination_node: str, destination: str) -> dict[str, Any]:
        calls.append((snapshot, destination_node, destination))
        return {"created": True, "base": None, "sent": [1]}

    monkeypatch.setattr(ControllerStream, "execute", stream)
    run = engine.run_flow(fake.settings, sample_flow, {}, STORE)
    assert run.state == "SUCCESS", run.error
    assert calls == [(STORE["snap"], "node2", STORE["dest"])]
    assert fake.agents["node1"].starts == 0
    states = {a["name"]: a["state"] for a in runs.show_flow(fake.settings, run.id)["atoms"]}
    assert states["rep.start"] == "IGNORE" and states["rep.stream"] == "SUCCESS"
