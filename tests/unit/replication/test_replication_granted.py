"""The controller's grants (replication.granted) on fake agent nodes that record every call: what each kind
asks the destination for, that the grant comes before the start and rides in its params, that a refused
grant starts nothing (one line, the agent's error type), that a refused start revokes its grant, and
``snapshot_replicate`` (the API, the CLI's ``replicate``) going through it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from zfs_backend.errors import (
    AgentUnavailable,
    AlreadyRunning,
    DatasetNotFound,
    InvalidName,
    UpToDate,
    UsageError,
    ZfsBackendError,
)
from zfs_backend.replication import api, granted
from zfs_backend.replication.granted import GrantRequest, grant_request, revoke_grants, start_granted

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from fake_agent_nodes import GRANT, FakeActivity, FakeNodes

REPL = {
    "snapshot": "tank/fs@s1",
    "source_node": "node1",
    "destination_node": "node2",
    "destination": "tank/replicas/fs",
}
MIGRATE = {"dataset": "tank/v/volume-1", "destination_node": "node2", "destination": "tank/w/volume-1"}
SYNC = {
    "dataset": "tank/v/volume-1",
    "destination_node": "node2",
    "destination": "tank/v/volume-1",
    "base": "zfs_backend-standby-1",
    "interval_s": 5.0,
}
VOL = "0e4bd1a2-95f7-4c1e-9d49-3f8f2a1c7b01"
BACKUP = {"dataset": "tank/v/volume-1", "volume_id": VOL, "backup_id": "b1", "backup_node": "node3"}
RESTORE = {"volume_id": VOL, "backup_id": "b1", "backup_node": "node3", "destination": "tank/v/volume-2"}


# ---- what is asked, per kind ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "allow"),
    [
        ({}, ("create", "increment")),
        ({"force_full_copy": True}, ("create",)),
        ({"incremental_from": "s0"}, ("increment",)),
        ({"rollback_destination": True}, ("create", "increment", "rollback")),
        ({"incremental_from": "s0", "rollback_destination": True}, ("increment", "rollback")),
        ({"force_full_copy": True, "rollback_destination": True}, ("create",)),  # nothing to roll back
    ],
)
def test_replicate_asks_what_the_request_implies(extra: dict[str, Any], allow: tuple[str, ...]) -> None:
    g = grant_request("replicate", {**REPL, **extra}, "node1")
    assert g == GrantRequest("node2", "node1", allow, dataset="tank/replicas/fs")
    assert grant_request("replicate", {**REPL, "recursive": True}, "node1").recursive is True


def test_each_kind_asks_its_destination() -> None:
    assert grant_request("migrate", MIGRATE, "node1") == GrantRequest(
        "node2", "node1", ("create",), dataset="tank/w/volume-1"
    )
    assert grant_request("standby-sync", SYNC, "node1") == GrantRequest(
        "node2", "node1", ("increment", "prune"), dataset="tank/v/volume-1", ttl_s=0.0
    )
    no_dest = {k: v for k, v in SYNC.items() if k != "destination"}
    assert grant_request("standby-sync", no_dest, "node1").dataset == "tank/v/volume-1"
    assert grant_request("backup", BACKUP, "node1") == GrantRequest("node3", "node1", ("backup",), volume=VOL)
    assert grant_request("restore", RESTORE, "node2") == GrantRequest(
        "node3", "node2", ("backup",), volume=VOL, ttl_s=granted.RESTORE_GRANT_TTL_S
    )


def test_kind_names_are_the_kinds_own() -> None:
    from zfs_backend.kinds import backup, standby
    from zfs_backend.replication import migrate_request, request

    assert granted.SYNC_KIND == standby.KIND
    assert (granted.BACKUP_KIND, granted.RESTORE_KIND) == (backup.BACKUP_KIND, backup.RESTORE_KIND)
    assert {
        request.KIND,
        migrate_request.KIND,
        standby.KIND,
        backup.BACKUP_KIND,
        backup.RESTORE_KIND,
    } == granted.GRANTED_KINDS


@pytest.mark.parametrize(
    ("kind", "params", "peer"),
    [
        ("replicate", {**REPL, "grant": GRANT.format(1)}, "node1"),  # a caller never brings a grant
        ("replicate", REPL, "node3"),  # not where the request says the source is
        ("replicate", {**REPL, "destination": "tank/$(reboot)"}, "node1"),
        ("replicate", {**REPL, "ssh_config": "/tmp/x"}, "node1"),
        ("migrate", {**MIGRATE, "destination_node": "-oProxyCommand=x"}, "node1"),
        ("standby-sync", {**SYNC, "destination": "tank/a b"}, "node1"),
        ("standby-sync", {"dataset": "tank/v"}, "node1"),
        ("backup", {**BACKUP, "volume_id": "../x"}, "node1"),
        ("restore", {**RESTORE, "backup_node": None}, "node1"),
        ("scrub", {}, "node1"),
        ("replicate", REPL, "Node1"),
    ],
)
def test_bad_requests_refused_before_any_node_is_reached(
    kind: str, params: dict[str, Any], peer: str
) -> None:
    nodes = FakeNodes("node1", "node2", "node3")
    with pytest.raises(UsageError):
        start_granted(nodes, peer, kind, params)
    assert nodes.calls == []


# ---- grant, then start ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params", "peer", "dest"),
    [
        ("replicate", REPL, "node1", "node2"),
        ("migrate", MIGRATE, "node1", "node2"),
        ("standby-sync", SYNC, "node1", "node2"),
        ("backup", BACKUP, "node1", "node3"),
        ("restore", RESTORE, "node2", "node3"),
    ],
)
def test_the_grant_comes_first_and_rides_in_the_params(
    kind: str, params: dict[str, Any], peer: str, dest: str
) -> None:
    nodes = FakeNodes("node1", "node2", "node3")
    act = cast(FakeActivity, start_granted(nodes, peer, kind, params))
    assert nodes.ops() == [(dest, "grant.add"), (peer, "start")]
    (_, grant_args), (_, start) = nodes.calls[0][1:], nodes.calls[1][1:]
    assert grant_args["peer"] == peer
    assert start == {"kind": kind, "params": {**params, "grant": GRANT.format(1)}}
    assert act.params["grant"] in nodes.live


@pytest.mark.parametrize(
    "error",
    [
        UsageError("grant: tank/replicas/fs is not under a replica root of node2"),
        AgentUnavailable("node2: the agent does not answer"),
        ZfsBackendError("agent internal error:\nboom"),
    ],
)
def test_a_refused_grant_starts_nothing_and_says_so_in_one_line(error: ZfsBackendError) -> None:
    nodes = FakeNodes("node1", "node2")
    nodes["node2"].grant_error = error
    with pytest.raises(type(error)) as e:
        api.snapshot_replicate("node1:tank/fs@s1", None, "node2:tank/replicas/fs", node_for=nodes)
    assert type(e.value) is type(error)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "node2: no grant for node1 to receive into node2:tank/replicas/fs"
    )
    assert nodes.ops() == [("node2", "grant.add")]


def test_an_unreachable_destination_starts_nothing() -> None:
    nodes = FakeNodes("node1", "node2")
    nodes.unreachable.add("node2")
    with pytest.raises(AgentUnavailable, match=r"^node2: no grant for node1"):
        api.snapshot_replicate("node1:tank/fs@s1", None, "node2:tank/replicas/fs", node_for=nodes)
    assert nodes.calls == []


def test_a_malformed_grant_answer_starts_nothing() -> None:
    nodes = FakeNodes("node1", "node2")
    nodes["node2"].grant = lambda *a, **k: {"grant": "gr-; rm -rf /"}  # type: ignore[method-assign]
    with pytest.raises(ZfsBackendError, match=r"grant\.add answered"):
        start_granted(nodes, "node1", "replicate", REPL)
    assert nodes.ops() == []


@pytest.mark.parametrize(
    "error", [AlreadyRunning("a twin runs"), UpToDate("nothing to send"), DatasetNotFound("no snapshot")]
)
def test_a_refused_start_revokes_its_grant(error: ZfsBackendError) -> None:
    nodes = FakeNodes("node1", "node2")
    nodes["node1"].start_error = error
    with pytest.raises(type(error)):
        start_granted(nodes, "node1", "replicate", REPL)
    assert nodes.ops() == [("node2", "grant.add"), ("node1", "start"), ("node2", "grant.revoke")]
    assert nodes.args("grant.revoke") == [
        ("node2", {"grant": GRANT.format(1), "dataset": None, "peer": None})
    ]
    assert nodes.live == {}


def test_a_start_lost_in_transit_revokes_only_when_nothing_started() -> None:
    nodes = FakeNodes("node1", "node2")
    nodes["node1"].start_error = AgentUnavailable("node1: connection lost")
    with pytest.raises(AgentUnavailable):
        start_granted(nodes, "node1", "standby-sync", SYNC)
    assert nodes.ops()[-2:] == [("node1", "list"), ("node2", "grant.revoke")]
    assert nodes.live == {}

    nodes = FakeNodes("node1", "node2")
    nodes["node1"].start_error = AgentUnavailable("node1: answer lost")
    nodes["node1"].start_goes_through = True  # the activity runs, with its grant: keep it
    with pytest.raises(AgentUnavailable):
        start_granted(nodes, "node1", "standby-sync", SYNC)
    assert nodes.ops()[-1] == ("node1", "list")
    assert list(nodes.live) == [GRANT.format(1)]


def test_the_source_session_opens_while_the_destination_grants() -> None:
    import threading

    nodes = FakeNodes("node1", "node2")
    pinged = threading.Event()
    real_ping = nodes["node1"].ping

    def ping() -> dict[str, Any]:
        pinged.set()
        return real_ping()

    nodes["node1"].ping = ping  # type: ignore[method-assign]
    overlapped: list[bool] = []
    nodes["node2"].on_grant = lambda: overlapped.append(pinged.wait(30))  # a deadlock guard, not a timing
    start_granted(nodes, "node1", "replicate", REPL)
    assert overlapped == [True] and nodes["node1"].pings == 1
    assert nodes.ops() == [("node2", "grant.add"), ("node1", "start")]


def test_a_source_that_cannot_be_reached_starts_nothing_and_revokes() -> None:
    nodes = FakeNodes("node1", "node2")
    nodes["node1"].ping_error = AgentUnavailable("node1: ssh: connect to host: No route to host")
    with pytest.raises(AgentUnavailable, match="No route"):
        start_granted(nodes, "node1", "migrate", MIGRATE)
    assert nodes.ops() == [("node2", "grant.add"), ("node2", "grant.revoke")]
    assert nodes.live == {}


def test_within_one_node_one_session_and_no_warm_up() -> None:
    nodes = FakeNodes("node1")
    start_granted(nodes, "node1", "replicate", {**REPL, "destination_node": "node1"})
    assert nodes.ops() == [("node1", "grant.add"), ("node1", "start")] and nodes["node1"].pings == 0


def test_a_failed_revoke_does_not_hide_the_refusal(caplog: pytest.LogCaptureFixture) -> None:
    nodes = FakeNodes("node1", "node2")
    nodes["node1"].start_error = AlreadyRunning("a twin runs")
    nodes["node2"].revoke_error = AgentUnavailable("node2 went away")
    with caplog.at_level(logging.WARNING, "zfs_backend.grants"), pytest.raises(AlreadyRunning):
        start_granted(nodes, "node1", "replicate", REPL)
    assert "not revoked" in caplog.text and GRANT.format(1) in caplog.text


def test_revoke_grants_is_best_effort(caplog: pytest.LogCaptureFixture) -> None:
    nodes = FakeNodes("node1", "node2")
    start_granted(nodes, "node1", "standby-sync", SYNC)
    assert revoke_grants(nodes, "node2", "tank/v/volume-1", "node3") == 0  # another peer's: none
    assert revoke_grants(nodes, "node2", "tank/v/volume-1", "node1") == 1
    assert nodes.live == {}
    nodes.unreachable.add("node2")
    with caplog.at_level(logging.WARNING, "zfs_backend.grants"):
        assert revoke_grants(nodes, "node2", "tank/v/volume-1", "node1") is None
    assert "node2: the grants for tank/v/volume-1 from node1 not revoked" in caplog.text
    with pytest.raises(UsageError):
        revoke_grants(nodes, "node2")
    assert revoke_grants(nodes, "node1", grant="gr-bad") is None  # refused before it is sent
    assert ("node1", "grant.revoke") not in nodes.ops()


# ---- the API and the CLI's replicate ---------------------------------------------------------------


def test_snapshot_replicate_grants_on_the_destination_then_starts_on_the_source() -> None:
    nodes = FakeNodes("node1", "node2")
    api.snapshot_replicate(
        "node1:tank/fs@s2",
        None,
        "node2:tank/replicas/fs",
        incremental_from="s1",
        rollback_destination=True,
        recursive=True,
        node_for=nodes,
        extra_params={"max_retries": 0},
    )
    assert nodes.ops() == [("node2", "grant.add"), ("node1", "start")]
    assert nodes.args("grant.add")[0][1] == {
        "peer": "node1",
        "allow": ["increment", "rollback"],
        "dataset": "tank/replicas/fs",
        "volume": None,
        "recursive": True,
        "ttl_s": None,
    }
    params = nodes.args("start")[0][1]["params"]
    assert params["grant"] == GRANT.format(1) and params["max_retries"] == 0
    with pytest.raises(UsageError, match="made by the controller"):
        api.snapshot_replicate(
            "node1:tank/fs@s2", None, "node2:tank/x", node_for=nodes, extra_params={"grant": GRANT.format(9)}
        )


def test_the_cli_replicate_goes_through_the_grant(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from zfs_backend.cli import replicate_cmd

    nodes = FakeNodes("node1", "node2")
    monkeypatch.setattr(api, "_default_node_for", lambda settings: nodes)
    args = argparse.Namespace(
        source="node1:tank/fs@s1",
        destination="node2:tank/replicas/fs",
        full=True,
        incremental_from=None,
        intermediates=False,
        bwlimit=None,
        rollback_destination=False,
        recursive=False,
        properties=False,
        cipher=None,
        compress=False,
        stall_timeout=None,
        detach=True,
        json=False,
    )
    assert replicate_cmd.cmd_replicate(args) == 0
    assert nodes.ops() == [("node2", "grant.add"), ("node1", "start")]
    assert nodes.args("grant.add")[0][1]["allow"] == ["create"]
    assert nodes.args("start")[0][1]["params"]["grant"] == GRANT.format(1)


def test_invalid_node_names_never_reach_a_node() -> None:
    nodes = FakeNodes("node1", "node2")
    with pytest.raises(InvalidName):
        grant_request("migrate", MIGRATE, "node 1")
    assert nodes.calls == []
