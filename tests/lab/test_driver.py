"""The ZFS/NFS volume driver against lab nodes: every driver method, data written through a real NFS
client surviving snapshot, clone, extend and replication (checksums), capabilities true to the node,
bad input and a full pool refused with nothing changed; the volume service and CLI on top. The NFS
client runs in the controller's namespace, so every mount is preceded by a grant of the controller's
address (``initialize_connection``); who else gets in is ``test_nfs_access.py``'s business."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from polling import eventually

from zfs_backend.cli.main import main as cli_main
from zfs_backend.config import Settings
from zfs_backend.driver import (
    GIB,
    InvalidSize,
    NodeOptions,
    Snapshot,
    Volume,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
    ZfsNfsDriver,
)
from zfs_backend.driver.errors import InvalidClient
from zfs_backend.driver.service import VolumeService
from zfs_backend.driver.stats import CAPABILITY_KEYS, STANDARD_KEYS
from zfs_backend.driver.zfs_nfs import SIZE_PROPERTY
from zfs_backend.errors import InvalidName, PoolFull, UsageError
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab, nfs
from zfs_backend.zfs import Zfs, parse_dataset

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)

T = TypeVar("T")


def vid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def drivers(lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings) -> Iterator[dict[str, ZfsNfsDriver]]:
    inv = load_inventory(lab_settings.inventory)
    out = {}
    for name in ("node1", "node2"):
        spec = inv.node(name)
        d = ZfsNfsDriver(
            NodeOptions.from_vars(name, spec.vars, spec.address), nodes[name], settings=lab_settings
        )
        d.do_setup()
        d.check_for_setup_error()
        out[name] = d
    # what other modules left on the shared lab is theirs to answer for (standby_helpers.cleanup checks
    # its own); this module's tests leave nothing behind
    before = {n: (set(d.exports.entries()), _volumes(d)) for n, d in out.items()}
    yield out
    for n, d in out.items():  # nothing left behind by this module's tests
        assert set(d.exports.entries()) <= before[n][0]
        assert _volumes(d) <= before[n][1]


def _volumes(d: ZfsNfsDriver) -> set[str]:
    return {str(x.name) for x in d.zfs.list_datasets(d.options.parent_dataset)}


@pytest.fixture(scope="module")
def connector(lab: Lab) -> dict[str, Any]:
    """Cinder's connector for this process: the controller's address on the lab's bridge."""
    return {"ip": lab.layout.controller_address, "host": "controller"}


def nfs_io(d: ZfsNfsDriver, v: Volume, connector: dict[str, Any]) -> nfs.NfsClient:
    export = d.initialize_connection(v, connector)["data"]["export"]
    addr, path = export.split(":", 1)
    return eventually(lambda: nfs.NfsClient(addr, path))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def file_size(d: ZfsNfsDriver, v: Volume) -> int:
    path = f"{d.zfs.mountpoint(d.options.parent_dataset.child(v.name))}/volume"
    return int(d.zfs.host.run(["stat", "-c", "%s", path]).text)


def state(d: ZfsNfsDriver) -> tuple[Any, ...]:
    """What a refused call must not change: datasets, snapshots, exports."""
    z, parent = d.zfs, d.options.parent_dataset
    datasets = z.list_datasets(parent)
    snaps = [s.name for ds in datasets for s in z.list_snapshots(ds.name)]
    return [x.name for x in datasets], snaps, sorted((k, e.clients) for k, e in d.exports.entries().items())


def test_capabilities_true_to_node(drivers: dict[str, ZfsNfsDriver]) -> None:
    d = drivers["node1"]
    st = d.get_volume_stats(refresh=True)
    assert set(STANDARD_KEYS) | set(CAPABILITY_KEYS) <= set(st)
    assert st["storage_protocol"] == "NFS" and st["volume_backend_name"] == "zfs-nfs-node1"
    assert st["resumable_replication"] is d.zfs.dialect.resumable_receive is False  # zfs-fuse 0.7
    assert st["zfs_dialect"].startswith("zfs-fuse")
    assert "replicate" in st["backend_activities"] and st["snapshot_replicate"] is True
    props = d.zfs.get(d.options.parent_dataset, ["used", "available"])
    assert st["free_capacity_gb"] == pytest.approx(int(props["available"]) / GIB, abs=0.02)
    assert 0 < st["total_capacity_gb"] <= 1.0
    assert st["location_info"].endswith(":tank/volumes")
    assert d.get_volume_stats() == st  # cached
    v = Volume(id=vid(), size=3)
    d.create_volume(v)
    try:
        st2 = d.get_volume_stats(refresh=True)
        assert st2["provisioned_capacity_gb"] == st["provisioned_capacity_gb"] + 3
        assert st2["total_volumes"] == st["total_volumes"] + 1
    finally:
        d.delete_volume(v)


def test_volume_lifecycle_data_survives(drivers: dict[str, ZfsNfsDriver], connector: dict[str, Any]) -> None:
    d = drivers["node1"]
    v = Volume(id=vid(), size=1)
    update = d.create_volume(v)
    assert update["provider_location"] == f"{d.options.export_address}:/tank/volumes/{v.name}"
    assert file_size(d, v) == GIB
    info = d.initialize_connection(v, connector)
    assert info["driver_volume_type"] == "nfs" and info["data"]["name"] == "volume"
    a, b = os.urandom(1 << 20), os.urandom(1 << 20)
    with nfs_io(d, v, connector) as c:
        c.pwrite("/volume", 0, a)
    snap = Snapshot(id=vid(), volume_id=v.id, volume_size=1)
    assert d.create_snapshot(snap) is None
    with nfs_io(d, v, connector) as c:
        c.pwrite("/volume", 0, b)  # after the snapshot
    from_snap = Volume(id=vid(), size=2)
    d.create_volume_from_snapshot(from_snap, snap)
    assert file_size(d, from_snap) == 2 * GIB
    with nfs_io(d, from_snap, connector) as c:
        assert sha(c.pread("/volume", 0, len(a))) == sha(a)
    d.extend_volume(v, 2)
    assert file_size(d, v) == 2 * GIB
    ds = d.options.parent_dataset.child(v.name)
    assert int(d.zfs.get(ds, [SIZE_PROPERTY])[SIZE_PROPERTY]) == 2 * GIB
    assert int(d.zfs.get(ds, ["refquota"])["refquota"]) > 2 * GIB
    clone = Volume(id=vid(), size=2)
    d.create_cloned_volume(clone, v)
    with nfs_io(d, v, connector) as c:
        assert sha(c.pread("/volume", 0, len(b))) == sha(b)
        c.pwrite("/volume", GIB + 4096, a)  # in the extended part
        assert sha(c.pread("/volume", GIB + 4096, len(a))) == sha(a)
    with nfs_io(d, clone, connector) as c:
        assert sha(c.pread("/volume", 0, len(b))) == sha(b)
    # refusals that change nothing
    before = state(d)
    with pytest.raises(VolumeBusy, match="snapshot"):
        d.delete_volume(v)
    with pytest.raises(VolumeBusy, match="dependent"):
        d.delete_snapshot(snap)
    assert state(d) == before
    d.terminate_connection(v, connector)
    assert d.exports.get(ds) is not None and d.exports.get(ds).clients == ()  # type: ignore[union-attr]
    d.remove_export(None, v)
    assert d.exports.get(ds) is None
    assert d.create_export(None, v, {})["provider_location"] == update["provider_location"]
    # deletes: the clone of the snapshot, the snapshot, then v (its clone is promoted first)
    d.delete_volume(from_snap)
    d.delete_snapshot(snap)
    d.delete_volume(v)
    with nfs_io(d, clone, connector) as c:
        assert sha(c.pread("/volume", 0, len(b))) == sha(b)
    d.delete_volume(clone)
    d.delete_volume(clone)  # already gone: Cinder's idempotent delete


def test_bad_input_changes_nothing(
    drivers: dict[str, ZfsNfsDriver], nodes: dict[str, SSHHost], connector: dict[str, Any]
) -> None:
    d = drivers["node1"]
    v = Volume(id=vid(), size=1)
    d.create_volume(v)
    d.initialize_connection(v, connector)
    try:
        before = state(d)
        ghost = Volume(id=vid(), size=1)
        cases: list[tuple[type[Exception], Callable[[], object]]] = [
            (VolumeExists, lambda: d.create_volume(Volume(id=v.id, size=1))),
            (VolumeNotFound, lambda: d.extend_volume(ghost, 2)),
            (
                VolumeNotFound,
                lambda: d.create_snapshot(Snapshot(id=vid(), volume_id=ghost.id, volume_size=1)),
            ),
            (VolumeNotFound, lambda: d.create_cloned_volume(Volume(id=vid(), size=1), ghost)),
            (VolumeNotFound, lambda: d.initialize_connection(ghost, connector)),
            (InvalidClient, lambda: d.initialize_connection(v, {})),
            (InvalidClient, lambda: d.initialize_connection(v, {"ip": "*"})),
            (InvalidClient, lambda: d.initialize_connection(v, {"ip": "198.18.0.0/16"})),
            (InvalidClient, lambda: d.initialize_connection(v, {"ip": "1.2.3.4; Access_Type = RW"})),
            (InvalidClient, lambda: d.terminate_connection(v, {"ip": "0.0.0.0"})),
            (
                VolumeNotFound,
                lambda: d.create_volume_from_snapshot(
                    Volume(id=vid(), size=1), Snapshot(id=vid(), volume_id=v.id, volume_size=1)
                ),
            ),
            (InvalidSize, lambda: d.create_volume(Volume(id=vid(), size=0))),
            (InvalidSize, lambda: d.create_volume(Volume(id=vid(), size=-1))),
            (InvalidSize, lambda: d.extend_volume(v, 1)),
            (InvalidName, lambda: d.create_volume(Volume(id="../../tank", size=1))),
            (InvalidName, lambda: d.create_volume(Volume(id="x;reboot", size=1))),
            (InvalidName, lambda: d.delete_volume(Volume(id="a/b", size=1))),
            (InvalidName, lambda: d.create_snapshot(Snapshot(id="s@x", volume_id=v.id, volume_size=1))),
        ]
        for err, call in cases:
            with pytest.raises(err):
                call()
            assert issubclass(err, UsageError)
        assert state(d) == before
        # pool full: a thick volume larger than the pool, then a pool with no space left at all
        thick = ZfsNfsDriver(d.options.replace(thin=False), d.host)
        thick.do_setup()
        with pytest.raises(PoolFull):
            thick.create_volume(Volume(id=vid(), size=2))
        z = Zfs(nodes["node1"])
        filler = parse_dataset(f"tank/filler-{vid()}")
        avail = int(z.get(parse_dataset("tank"), ["available"])["available"])
        z.create(filler, {"refreservation": str(avail - (4 << 20))})
        try:
            with pytest.raises(PoolFull):
                d.create_volume(Volume(id=vid(), size=1))
            with pytest.raises(PoolFull):
                d.extend_volume(v, 2)
        finally:
            z.destroy(filler, deadline=30)
        assert state(d) == before
    finally:
        d.delete_volume(v)


def test_snapshot_replicate_data_arrives(drivers: dict[str, ZfsNfsDriver], connector: dict[str, Any]) -> None:
    src, dst = drivers["node1"], drivers["node2"]
    v = Volume(id=vid(), size=1)
    src.create_volume(v)
    snap = Snapshot(id=vid(), volume_id=v.id, volume_size=1)
    data = os.urandom(2 << 20)
    try:
        with nfs_io(src, v, connector) as c:
            c.pwrite("/volume", 1 << 20, data)
        src.create_snapshot(snap)
        act = src.snapshot_replicate(snap, None, "node2")
        assert act.kind == "replicate"
        assert act.wait(120) == "succeeded", act.error
        n, m = act.progress
        assert n == m > len(data)
        # the replica on node2 is a volume of the same id: export it there and read it through NFS
        dst.create_export(None, v, {})
        with nfs_io(dst, v, connector) as c:
            assert sha(c.pread("/volume", 1 << 20, len(data))) == sha(data)
        assert file_size(dst, v) == GIB
    finally:
        src.delete_snapshot(snap)
        src.delete_volume(v)
        dst.delete_snapshot(snap)
        dst.delete_volume(v)


def test_service_and_cli(
    lab: Lab,
    lab_settings: Settings,
    nodes: dict[str, SSHHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    svc = VolumeService(lab_settings, db_path=tmp_path / "volumes.db")
    name = f"vol-{vid()}"
    try:
        rec = svc.create_volume(name, 1, "node1")
        assert (rec.status, rec.node, rec.size) == ("available", "node1", 1)
        with pytest.raises(VolumeExists):
            svc.create_volume(name, 1, "node1")
        with pytest.raises(InvalidName):
            svc.create_volume("x y", 1, "node1")
        with pytest.raises(VolumeNotFound):
            svc.delete_volume("no-such-volume")
        with pytest.raises(PoolFull):  # nothing recorded for a refused create
            svc.create_volume(f"big-{vid()}", 100, "node1")
        assert [r.name for r in svc.list_volumes()] == [name]
        svc.create_snapshot(name, "s1")
        with pytest.raises(InvalidClient):  # no address: nothing granted, nothing recorded
            svc.attach(name, {"host": "controller"})
        assert svc.get_volume(name).status == "available"
        controller = lab.layout.controller_address
        info = svc.attach(name, {"ip": controller})
        assert info["data"]["export"] == rec.provider_location
        assert svc.get_volume(name).status == "in-use" and svc.attachments(name) == [controller]
        with pytest.raises(VolumeBusy):
            svc.delete_volume(name)
        assert svc.detach(name) == [controller]
        with pytest.raises(VolumeBusy):
            svc.delete_volume(name)
        svc.delete_snapshot(name, "s1")
        svc.delete_volume(name)
        assert svc.list_volumes() == []
    finally:
        svc.close()
    # the CLI, on the test lab's settings
    monkeypatch.setenv("ZFS_BACKEND_HOME", str(lab_settings.home))
    monkeypatch.setenv("ZFS_BACKEND_LAB_NETWORK", lab_settings.lab_network)
    db = lab_settings.home / "volumes.db"
    try:
        assert cli_main(["volume", "list", "--json"]) == 0
        others = {r["name"] for r in json.loads(capsys.readouterr().out)}  # other modules', on the lab's db
        assert cli_main(["volume", "create", name, "--size", "1G", "--node", "node1"]) == 0
        assert cli_main(["volume", "create", name, "--size", "1", "--node", "node1"]) == 2
        assert cli_main(["volume", "create", "other", "--size", "0", "--node", "node1"]) == 2
        capsys.readouterr()
        assert cli_main(["volume", "list", "--json"]) == 0
        assert [r["name"] for r in json.loads(capsys.readouterr().out) if r["name"] not in others] == [name]
        assert cli_main(["stats", "node1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["storage_protocol"] == "NFS"
        # attach grants the controller's bridge address by default on the lab, --client another one
        exports = drivers_exports(lab_settings, nodes)
        assert cli_main(["volume", "attach", name]) == 0
        assert json.loads(capsys.readouterr().out)["driver_volume_type"] == "nfs"
        assert cli_main(["volume", "attach", name, "--client", lab.node("node3").address]) == 0
        capsys.readouterr()
        ds = f"tank/volumes/volume-{json.loads(_show(name, capsys))['id']}"
        assert exports().get(ds) == (lab.layout.controller_address, lab.node("node3").address)
        before = exports()
        assert (
            cli_main(["volume", "attach", name, "--client", "10.0.0.0/8"]) == 2
        )  # one line, nothing changed
        assert cli_main(["volume", "detach", name, "--client", "not-an-ip"]) == 2
        assert exports() == before
        assert cli_main(["volume", "delete", name]) == 2  # attached
        assert cli_main(["volume", "detach", name, "--client", lab.node("node3").address]) == 0
        assert exports().get(ds) == (lab.layout.controller_address,)
        assert cli_main(["volume", "detach", name]) == 0
        assert exports().get(ds) == ()
        assert cli_main(["volume", "delete", name]) == 0
    finally:
        db.unlink(missing_ok=True)


def drivers_exports(
    settings: Settings, nodes: dict[str, SSHHost]
) -> Callable[[], dict[str, tuple[str, ...]]]:
    """Read node1's exports file: dataset -> granted clients."""
    inv = load_inventory(settings.inventory)
    spec = inv.node("node1")
    d = ZfsNfsDriver(
        NodeOptions.from_vars("node1", spec.vars, spec.address), nodes["node1"], settings=settings
    )
    d.do_setup()
    return lambda: {k: e.clients for k, e in d.exports.entries().items()}


def _show(name: str, capsys: Any) -> str:
    assert cli_main(["volume", "show", name, "--json"]) == 0
    out: str = capsys.readouterr().out
    return out
