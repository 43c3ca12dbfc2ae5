"""Validation before anything runs: requests, hostile names, the ssh argv to the peer, duplicates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zfs_backend.activity.core import ActivityContext
from zfs_backend.activity.report import ActivityRecord
from zfs_backend.activity.store import ActivityStore
from zfs_backend.errors import InvalidName, UsageError
from zfs_backend.hosts.peer import PeerHost
from zfs_backend.kinds.replicate import Replicate, running_conflict
from zfs_backend.replication import api
from zfs_backend.replication.plan import AlreadyRunning
from zfs_backend.replication.request import Request

PARAMS = {
    "snapshot": "tank/fs@s1",
    "source_node": "node1",
    "destination_node": "node2",
    "destination": "tank/fs",
}


def test_request_round_trip() -> None:
    req = Request.from_params(PARAMS)
    assert Request.from_params(req.to_params()) == req
    assert req.key == ("tank/fs", "node2", "tank/fs")
    assert req.cipher == "aes128-gcm@openssh.com"
    assert "parallel" not in req.to_params()  # one send -R: the params of before
    tree = Request.from_params({**PARAMS, "recursive": True, "parallel": 4})
    assert tree.parallel == 4 and Request.from_params(tree.to_params()) == tree


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("snapshot", "tank/fs@s1; rm -rf /"),
        ("snapshot", "-oProxyCommand=x@s"),
        ("snapshot", "tank/fs"),
        ("destination", "tank/$(reboot)"),
        ("destination", "tank/fs@snap"),
        ("destination_node", "-oProxyCommand=sh"),
        ("destination_node", "Node2"),
        ("source_node", "node1 node2"),
        ("incremental_from", "a b"),
        ("cipher", "aes128-ctr -oProxyCommand=x"),
    ],
)
def test_hostile_params_refused(key: str, value: str) -> None:
    with pytest.raises(InvalidName):
        Request.from_params({**PARAMS, key: value})


@pytest.mark.parametrize(
    "extra",
    [
        {"force_full_copy": "yes"},
        {"bwlimit_bps": 10},
        {"bwlimit_bps": 10**400},
        {"bwlimit_bps": (1 << 40) + 1},
        {"bwlimit_bps": float("inf")},
        {"bwlimit_bps": float("nan")},
        {"force_full_copy": True, "intermediates": True},
        {"force_full_copy": True, "incremental_from": "a"},
        {"destination_node": "node1"},
        {"parallel": 2},  # not recursive
        {"parallel": 0, "recursive": True},
        {"parallel": 9, "recursive": True},
        {"parallel": True, "recursive": True},
        {"parallel": "4", "recursive": True},
        {"parallel": 10**400, "recursive": True},
    ],
)
def test_bad_options_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Request.from_params({**PARAMS, **extra})


def test_peer_ssh_argv_is_strict() -> None:
    argv = PeerHost("node2", cipher="aes256-gcm@openssh.com").stream_argv(
        ["zfs", "receive", "-F", "tank/a b"]
    )
    assert argv[0] == "ssh" and argv[-1] == "zfs receive -F 'tank/a b'" and argv[-2] == "--"
    assert argv[-3] == "node2"
    joined = " ".join(argv)
    for opt in (
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "Ciphers=aes256-gcm@openssh.com",
        "ServerAliveInterval=",
    ):
        assert opt in joined
    with pytest.raises(InvalidName):
        PeerHost("-oProxyCommand=x")
    assert "-F" not in argv[:-1]  # never another ssh config than the node's own


@pytest.mark.parametrize(
    "extra",
    [
        {"ssh_config": "/tmp/evil_config"},
        {"ssh_config": "/root/.ssh/config"},
        {"proxy_command": "nc evil 22"},
        {"identity": "/tmp/key"},
        {"cipher": "aes128-cbc"},
        {"cipher": "none"},
    ],
)
def test_params_never_choose_how_ssh_runs(extra: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        Request.from_params({**PARAMS, **extra})
    assert "\n" not in str(e.value)
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    with pytest.raises(UsageError):
        Replicate(_record("act-x", {**PARAMS, **extra}), ctx)
    with pytest.raises(UsageError):  # refused by the API before any connection
        api.snapshot_replicate(
            "node1:tank/fs@s1", None, "node2:tank/fs", extra_params=extra, node_for=_no_node
        )
    assert store.list() == []
    store.close()


def _no_node(name: str) -> Any:
    raise AssertionError(f"{name} would have been contacted")


def test_tuning_params_are_typed(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    for bad in ({"space_check": "no"}, {"max_retries": "many"}):
        with pytest.raises(UsageError):
            Replicate(_record("act-x", {**PARAMS, **bad}), ctx)
    store.close()


def test_api_refuses_hostile_names_before_any_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("a command would have run")

    for snap, dest in [
        ("node1:tank/fs@s1`id`", "node2:tank/fs"),
        ("node1:tank/fs@s1", "node2:tank/f;s"),
        ("NODE1:tank/fs@s1", "node2:tank/fs"),
        ("node1:tank/fs@s1", "-x:tank/fs"),
        ("node1:tank/fs", "node2:tank/fs"),
        ("node1:tank/fs@s1", "node2:tank/fs@s"),
    ]:
        with pytest.raises(UsageError):
            api.snapshot_replicate(snap, None, dest, node_for=boom)
    with pytest.raises(UsageError):
        api.snapshot_replicate("node1:tank/fs@s1", None, "node2:tank/x", bwlimit="fast", node_for=boom)


def test_parse_bwlimit() -> None:
    assert api.parse_bwlimit(None) is None
    assert api.parse_bwlimit(4096) == 4096
    assert api.parse_bwlimit("20M") == 20 << 20
    assert api.parse_bwlimit("1MB/s") == 1 << 20
    assert api.parse_bwlimit("1T") == 1 << 40


@pytest.mark.parametrize("bad", ["9" * 400, "2T", "1E", "fast", "-1M", "nan", "inf"])
def test_parse_bwlimit_refuses_absurd_rates_with_one_line(bad: str) -> None:
    with pytest.raises(UsageError) as e:
        api.parse_bwlimit(bad)
    assert "\n" not in str(e.value) and len(str(e.value)) < 120


def test_huge_int_bwlimit_refused_by_the_request() -> None:
    with pytest.raises(UsageError, match="bwlimit must be") as e:
        Request.from_params({**PARAMS, "bwlimit_bps": api.parse_bwlimit(10**5000)})
    assert len(str(e.value)) < 120


def _record(aid: str, params: dict[str, Any]) -> ActivityRecord:
    return ActivityRecord(id=aid, kind="replicate", node="node1", params=params)


def test_running_twin_is_a_conflict(tmp_path: Path) -> None:
    req = Request.from_params(PARAMS)
    other = _record("act-1", PARAMS)
    assert running_conflict([other], req) is not None
    assert running_conflict([other], req, own_id="act-1") is None
    elsewhere = _record("act-2", {**PARAMS, "destination_node": "node3"})
    assert running_conflict([elsewhere], req) is None
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    first = Replicate(_record("act-a", PARAMS), ctx)
    first.persist_new()
    with pytest.raises(AlreadyRunning):
        Replicate(_record("act-b", PARAMS), ctx)
    store.close()


def test_kind_validates_params_before_storing(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "a.db")
    ctx = ActivityContext(store=store, node="node1")
    with pytest.raises(InvalidName):
        Replicate(_record("act-x", {**PARAMS, "destination": "tank/a|b"}), ctx)
    assert store.list() == []
    store.close()


def test_a_grant_is_a_validated_param_presented_on_every_recv_call() -> None:
    from zfs_backend.replication.remote import RemoteReceiver
    from zfs_backend.zfs.names import parse_dataset

    g = "gr-01M8PC6J46SJJSD1CGAQ7Y88PX"
    req = Request.from_params({**PARAMS, "grant": g})
    assert req.grant == g and req.to_params()["grant"] == g
    assert "grant" not in Request.from_params(PARAMS).to_params()
    with pytest.raises(UsageError, match="invalid grant id"):
        Request.from_params({**PARAMS, "grant": "gr-../../x"})
    calls: list[tuple[str, dict[str, Any]]] = []

    class Peer:
        def call(self, op: str, **args: Any) -> Any:
            calls.append((op, args))
            return {}

    rr = RemoteReceiver(Peer(), parse_dataset("tank/fs"), "act-01M8PC6J46SJJSD1CGAQ7Y88PX", g)
    rr.renew()
    rr.release()
    rr.commit(5, prune_prefix="zfs_backend-standby-")
    assert [a["grant"] for _, a in calls] == [g, g, g]
