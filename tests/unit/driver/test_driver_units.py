"""Unit tests of the volume driver without a node: options, models, export file handling, stats, and
the rule that bad input is refused before any command runs."""

from __future__ import annotations

import pytest
from fake_ganesha_node import FakeNode

from zfs_backend.driver import InvalidSize, NodeOptions, Snapshot, Volume, ZfsNfsDriver
from zfs_backend.driver.models import check_size, validate_id
from zfs_backend.driver.nfs import ExportEntry, GaneshaExports, parse_exports, render_export
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE
from zfs_backend.driver.stats import CAPABILITY_KEYS, STANDARD_KEYS, NodeFacts, build_stats
from zfs_backend.driver.zfs_nfs import quota_for
from zfs_backend.errors import ConfigError, InvalidName, UsageError
from zfs_backend.hosts.fake import FakeHost
from zfs_backend.lab import nfs as lab_nfs
from zfs_backend.zfs import OPENZFS_2, ZFS_FUSE_07
from zfs_backend.zfs.names import parse_dataset

HOSTILE = ["", "../x", "a/b", "a b", "-rf", "x@y", "x#y", "a;rm -rf /", "é", "a" * 65, "x\nrm"]


# ---- options / models ---------------------------------------------------------------------------


def test_lab_and_driver_agree_on_paths() -> None:
    assert lab_nfs.EXPORTS_FILE == DEFAULT_EXPORTS_FILE
    assert lab_nfs.PID_FILE == DEFAULT_PID_FILE
    opts = NodeOptions(node="node1")
    assert (opts.nfs_port, opts.mount_port) == (lab_nfs.PORTS.nfs, lab_nfs.PORTS.mount)


def test_options_from_vars() -> None:
    o = NodeOptions.from_vars(
        "node1",
        {
            "zfs_backend_volume_parent": "tank/vols",
            "zfs_backend_volume_nfs_versions": [4],
            "ansible_host": "x",
        },
        address="198.18.0.11",
    )
    assert (o.parent, o.nfs_versions, o.export_address) == ("tank/vols", (4,), "198.18.0.11")
    assert o.volume_backend_name == "zfs-nfs-node1"
    with pytest.raises(ConfigError, match="unknown volume driver option"):
        NodeOptions.from_vars("node1", {"zfs_backend_volume_bogus": 1})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"parent": "tank"},
        {"parent": "tank/../x"},
        {"parent": "tank/a b"},
        {"node": "Node_1"},
        {"nfs_versions": (2,)},
        {"nfs_versions": ()},
        {"nfs_port": 0},
        {"export_address": "not-an-ip"},
        {"reserved_percentage": 101},
        {"max_over_subscription_ratio": 0.5},
        {"exports_file": "relative.conf"},
    ],
)
def test_options_refuse_bad_values(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"node": "node1"}
    base.update(kwargs)
    with pytest.raises(ConfigError):
        NodeOptions(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_ids_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_id(bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1", True, None, (1 << 30) + 1, 10**400, float("inf")])
def test_bad_sizes_refused(bad: object) -> None:
    with pytest.raises(InvalidSize):
        check_size(bad)


def test_cinder_names() -> None:
    v = Volume(id="abc", size=1)
    s = Snapshot(id="s1", volume_id="abc", volume_size=1)
    assert (v.name, s.name, s.volume_name) == ("volume-abc", "snapshot-s1", "volume-abc")
    assert quota_for(1 << 30) > 1 << 30


# ---- export file --------------------------------------------------------------------------------


def test_render_parse_round_trip_keeps_foreign_text() -> None:
    e = ExportEntry(parse_dataset("tank/volumes/volume-a"), 101, "/tank/volumes/volume-a")
    foreign = "# hand-written\nEXPORT { Export_Id = 7; Path = /srv; }\n"
    text = foreign + render_export(e, (3, 4))
    entries, rest = parse_exports(text)
    assert entries == {"tank/volumes/volume-a": e}
    assert rest == foreign
    assert "Protocols = 3, 4;" in render_export(e, (3, 4))
    assert "Access_Type = None;" in render_export(e, (3, 4))  # nobody until granted


@pytest.mark.parametrize("path", ["/", "relative", '/a"b', "/a b", "/a/../b", "/a\n}"])
def test_render_refuses_unsafe_paths(path: str) -> None:
    with pytest.raises(UsageError):
        render_export(ExportEntry(parse_dataset("tank/v/x"), 100, path), (3,))


def test_exports_add_remove_reload() -> None:
    node = FakeNode("EXPORT { Export_Id = 100; Path = /srv; }\n")
    ex = GaneshaExports(node.host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE, (3,))
    a = ex.add(parse_dataset("tank/volumes/volume-a"), "/tank/volumes/volume-a")
    b = ex.add(parse_dataset("tank/volumes/volume-b"), "/tank/volumes/volume-b")
    assert (a.export_id, b.export_id) == (101, 102)  # 100 is taken by the hand-written export
    assert ex.add(parse_dataset("tank/volumes/volume-a"), "/tank/volumes/volume-a") == a  # idempotent
    assert ("kill", "-HUP", "4242") in node.signals
    assert ex.remove(parse_dataset("tank/volumes/volume-a")) == a
    assert ex.remove(parse_dataset("tank/volumes/volume-a")) is None
    assert set(ex.entries()) == {"tank/volumes/volume-b"}
    assert "Path = /srv;" in node.files[DEFAULT_EXPORTS_FILE]


def test_exports_without_server() -> None:
    node = FakeNode()
    del node.files[DEFAULT_PID_FILE]
    ex = GaneshaExports(node.host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE)
    with pytest.raises(ConfigError, match="not running"):
        ex.add(parse_dataset("tank/volumes/volume-a"), "/tank/volumes/volume-a")


# ---- stats --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [ZFS_FUSE_07, OPENZFS_2])
def test_stats_complete_and_true_to_dialect(dialect: object) -> None:
    facts = NodeFacts(
        used=1 << 30,
        available=3 << 30,
        provisioned=10 << 30,
        volumes=3,
        compression="lz4",
        dedup="off",
        dialect=dialect,  # type: ignore[arg-type]
        activity_kinds=("pipeline", "replicate"),
    )
    st = build_stats(NodeOptions(node="node1"), facts, "1.0.0", "198.18.0.11")
    assert set(STANDARD_KEYS) | set(CAPABILITY_KEYS) == set(st)
    assert (st["total_capacity_gb"], st["free_capacity_gb"], st["provisioned_capacity_gb"]) == (
        4.0,
        3.0,
        10.0,
    )
    assert st["storage_protocol"] == "NFS" and st["compression"] is True and st["dedup"] is False
    assert st["resumable_replication"] is dialect.resumable_receive  # type: ignore[attr-defined]
    assert st["snapshot_replicate"] is True and st["backend_activities"] == ["pipeline", "replicate"]
    no_agent = build_stats(
        NodeOptions(node="node1"), facts.__class__(**{**facts.__dict__, "activity_kinds": None}), "1", "a"
    )
    assert no_agent["snapshot_replicate"] is False and no_agent["backend_activities"] == []
    # options publish the flows' capabilities: dual states, the backend path, Cinder's replication v2.1
    assert st["stateless_volume_operations"] is True and st["replication_enabled"] is False
    opts = NodeOptions(
        node="node1",
        stateless_volume_operations=False,
        backend_replication=False,
        replication_devices=("node2",),
    )
    other = build_stats(opts, facts, "1", "a")
    assert other["stateless_volume_operations"] is False and other["snapshot_replicate"] is False
    assert (other["replication_enabled"], other["replication_targets"], other["replication_type"]) == (
        True,
        ["node2"],
        "async",
    )
    assert NodeOptions.from_vars(
        "node1", {"zfs_backend_volume_replication_devices": ["node3"]}
    ).replication_devices == ("node3",)
    for bad in (
        {"replication_devices": ("node1",)},
        {"replication_devices": ("x;y",)},
        {"backend_replication": 1},
    ):
        with pytest.raises(ConfigError):
            NodeOptions(node="node1", **bad)  # type: ignore[arg-type]


# ---- nothing runs before validation ---------------------------------------------------------------


def _driver() -> tuple[ZfsNfsDriver, FakeHost]:
    host = FakeHost(lambda argv, stdin: (99, "", f"no command expected: {argv}"), name="node1")
    d = ZfsNfsDriver(NodeOptions(node="node1", export_address="198.18.0.11"), host, activity_kinds=list)
    d._zfs = __import__("zfs_backend.zfs", fromlist=["Zfs"]).Zfs(host, dialect=ZFS_FUSE_07)
    d._exports = GaneshaExports(host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE)
    return d, host


@pytest.mark.parametrize("bad", HOSTILE)
def test_driver_refuses_hostile_ids_before_any_command(bad: str) -> None:
    d, host = _driver()
    for call in (
        lambda: d.create_volume(Volume(id=bad, size=1)),
        lambda: d.delete_volume(Volume(id=bad, size=1)),
        lambda: d.extend_volume(Volume(id=bad, size=1), 2),
        lambda: d.create_snapshot(Snapshot(id=bad, volume_id="v1", volume_size=1)),
        lambda: d.create_snapshot(Snapshot(id="s1", volume_id=bad, volume_size=1)),
        lambda: d.initialize_connection(Volume(id=bad, size=1), {}),
    ):
        with pytest.raises(UsageError):
            call()
    assert host.calls == []


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_driver_refuses_bad_sizes_before_any_command(size: object) -> None:
    d, host = _driver()
    with pytest.raises(InvalidSize):
        d.create_volume(Volume(id="v1", size=size))  # type: ignore[arg-type]
    with pytest.raises(InvalidSize):
        d.extend_volume(Volume(id="v1", size=1), size)  # type: ignore[arg-type]
    assert host.calls == []


def test_driver_needs_setup() -> None:
    d = ZfsNfsDriver(NodeOptions(node="node1"))
    with pytest.raises(ConfigError, match="do_setup"):
        d.create_volume(Volume(id="v1", size=1))
