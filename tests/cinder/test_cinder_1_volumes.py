"""The driver under a real Cinder, driven by python-cinderclient against cinder-api, as an operator would:
placement by the scheduler from the published capacity, create, show, snapshot, volume from snapshot,
clone, extend, ``os-initialize_connection`` with data written and checked through NFS, deletes in
dependency order, Cinder's own errors for refused requests and bad input (the nodes unchanged), and
each volume's backend activity published where ``cinder show`` prints it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from zfs_backend.cinderlab import procs
from zfs_backend.cinderlab.config import CINDER_PARENT, HOST, CinderLayout, backend_name
from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib

from cinder_helpers import (
    ROOT,
    Cinder,
    CinderError,
    backend_of,
    cinder_datasets,
    cli,
    connect,
    connector,
    mount,
    node_of,
    node_state,
    sha,
    until,
)

GIB = 1 << 30
ACTIVITY_KEY = "zfs_backend:activity"


def test_services_and_published_pools(cinder: Cinder, nodes: dict[str, SSHHost]) -> None:
    services = {(s["binary"], s["host"]): s for s in cinder.call("services.list")}
    assert services[("cinder-scheduler", HOST)]["state"] == "up"
    for node in nodes:
        assert services[("cinder-volume", f"{HOST}@{backend_name(node)}")]["state"] == "up"
    pools = cinder.pools()
    assert set(pools) == {backend_name(n) for n in nodes}
    for b, caps in pools.items():
        assert caps["volume_backend_name"] == b and caps["storage_protocol"] == "NFS"
        assert caps["vendor_name"] == "zfs_backend"
        assert 0 < caps["free_capacity_gb"] <= caps["total_capacity_gb"]
        assert caps["location_info"].endswith(f":{CINDER_PARENT}")
        assert "replicate" in caps["backend_activities"]
        assert caps["running_activities"] == []


def test_scheduler_places_a_volume_by_published_capacity(cinder: Cinder, nodes: dict[str, SSHHost]) -> None:
    """Space held on node1 and node3 (a reservation beside Cinder's parent) shrinks their published
    capacity; once the scheduler has it, a new volume lands on node2."""
    ballast = "tank/cinder-test-ballast"
    before = {b: caps["total_capacity_gb"] for b, caps in cinder.pools().items()}
    for n in ("node1", "node3"):
        nodes[n].run(["zfs", "create", "-o", "refreservation=300M", ballast])
    try:
        until(
            "the scheduler to see the smaller capacity of node1 and node3",
            lambda: all(
                cinder.pools()[backend_name(n)]["total_capacity_gb"] < before[backend_name(n)] - 0.2
                for n in ("node1", "node3")
            ),
        )
        vol = cinder.call("volumes.create", 1, name="placed")
        vol = cinder.wait_volume(vol["id"], "available")
        assert backend_of(vol) == backend_name("node2")
        assert cinder_datasets(nodes)["node2"] == [f"{CINDER_PARENT}/volume-{vol['id']}"]
        cinder.call("volumes.delete", vol["id"])
        cinder.wait_gone("volumes", vol["id"])
    finally:
        for n in ("node1", "node3"):
            nodes[n].run(["zfs", "destroy", ballast], check=False)
    assert cinder_datasets(nodes) == {n: [] for n in nodes}


def test_volume_lifecycle_with_data_through_nfs(
    cinder: Cinder, cinder_layout: CinderLayout, lab: Lab, nodes: dict[str, SSHHost]
) -> None:
    rnd = os.urandom
    # create and show
    a = cinder.call("volumes.create", 1, name="vol-a", description="zfs_backend under cinder")
    a = cinder.wait_volume(a["id"], "available")
    assert a["size"] == 1 and a["name"] == "vol-a" and a["bootable"] == "false"
    node = node_of(a)
    host = nodes[node]
    ds_a = f"{CINDER_PARENT}/volume-{a['id']}"
    assert ds_a in cinder_datasets(nodes)[node]
    shown = cli(cinder_layout, "show", a["id"])
    assert shown.returncode == 0 and a["id"] in shown.stdout and "available" in shown.stdout

    # os-initialize_connection: the NFS connection info, a grant for the connector's ip only
    conn = connect(cinder, lab, a["id"])
    assert conn["driver_volume_type"] == "nfs"
    assert conn["data"]["name"] == "volume" and conn["data"]["export"].endswith(f":/{ds_a}")
    address = load_inventory(cinder_layout.settings.inventory).node(node).address
    assert conn["data"]["export"].startswith(f"{address}:")
    assert node_state(nodes)[node]["exports"][ds_a] == [lab.layout.controller_address]
    first, second = rnd(4 << 20), rnd(1 << 20)
    with mount(conn) as c:
        c.pwrite("/volume", 0, first)
        c.pwrite("/volume", 512 << 20, second)
        assert sha(c.pread("/volume", 0, len(first))) == sha(first)

    # snapshot, then more writes to the volume: the snapshot keeps what was there
    s = cinder.call("volume_snapshots.create", a["id"], name="snap-a")
    s = cinder.wait_snapshot(s["id"], "available")
    assert f"{ds_a}@snapshot-{s['id']}" in cinder_datasets(nodes)[node]
    later = rnd(2 << 20)
    with mount(conn) as c:
        c.pwrite("/volume", 0, later)

    # a volume from the snapshot (same backend: a ZFS clone) holds the snapshot's data
    b = cinder.call("volumes.create", 1, snapshot_id=s["id"], name="from-snap")
    b = cinder.wait_volume(b["id"], "available")
    assert backend_of(b) == backend_of(a) and b["snapshot_id"] == s["id"]
    with mount(connect(cinder, lab, b["id"])) as c:
        assert sha(c.pread("/volume", 0, len(first))) == sha(first)
        assert sha(c.pread("/volume", 512 << 20, len(second))) == sha(second)

    # a clone of the volume holds its data now
    cl = cinder.call("volumes.create", 1, source_volid=a["id"], name="clone-a")
    cl = cinder.wait_volume(cl["id"], "available")
    assert backend_of(cl) == backend_of(a) and cl["source_volid"] == a["id"]
    with mount(connect(cinder, lab, cl["id"])) as c:
        assert sha(c.pread("/volume", 0, len(later))) == sha(later)
        assert sha(c.pread("/volume", len(later), len(first) - len(later))) == sha(first[len(later) :])

    # extend: a bigger file, the data in place
    cinder.call("volumes.extend", a["id"], 2)
    a = cinder.wait_volume(a["id"], "available")
    assert a["size"] == 2
    mountpoint = host.run(["zfs", "get", "-H", "-o", "value", "mountpoint", ds_a]).text.strip()
    assert host.run(["stat", "-c", "%s", f"{mountpoint}/volume"]).text.strip() == str(2 * GIB)
    with mount(connect(cinder, lab, a["id"])) as c:
        assert sha(c.pread("/volume", 0, len(later))) == sha(later)
        assert sha(c.pread("/volume", 512 << 20, len(second))) == sha(second)
        assert len(c.pread("/volume", 2 * GIB - 4096, 8192)) == 4096  # the new end of the file

    # refused deletes reach the user as Cinder's errors; nothing changes
    state = node_state(nodes)
    with pytest.raises(CinderError) as refused:
        cinder.call("volumes.delete", a["id"])
    assert refused.value.code == 400 and "snapshot" in refused.value.message.lower()
    out = cli(cinder_layout, "delete", a["id"])
    assert out.returncode != 0 and "snapshot" in (out.stdout + out.stderr).lower()
    assert node_state(nodes) == state
    # a snapshot with a volume made from it: Cinder's volumes from a snapshot are independent of it, so
    # its delete succeeds (tempest deletes such snapshots and waits for them to go); on the node its data
    # stays, destroyed deferred (zfs destroy -d: defer_destroy), while the volume made from it lives
    cinder.call("volume_snapshots.delete", s["id"])
    cinder.wait_gone("volume_snapshots", s["id"])
    assert f"{ds_a}@snapshot-{s['id']}" in cinder_datasets(nodes)[node]

    # terminate_connection revokes the grant
    cinder.call("volumes.terminate_connection", a["id"], connector(lab))
    assert node_state(nodes)[node]["exports"][ds_a] == []

    # deletes in dependency order: the volume from the snapshot (its origin, destroyed deferred, goes
    # with it), the clone, the volume
    for kind, oid in (("volumes", b["id"]), ("volumes", cl["id"])):
        cinder.call(f"{kind}.delete", oid)
        cinder.wait_gone(kind, oid)
    cinder.call("volumes.delete", a["id"])
    cinder.wait_gone("volumes", a["id"])
    assert cinder_datasets(nodes) == {n: [] for n in nodes}
    assert all(not st["exports"] for st in node_state(nodes).values())


def test_bad_input_gets_cinders_errors_and_changes_nothing(
    cinder: Cinder, cinder_layout: CinderLayout, nodes: dict[str, SSHHost]
) -> None:
    before = node_state(nodes)
    with pytest.raises(CinderError) as size0:
        cinder.call("volumes.create", 0, name="size-zero")
    assert size0.value.code == 400 and "size" in size0.value.message.lower()
    with pytest.raises(CinderError) as unknown:
        cinder.call("volumes.create", 1, snapshot_id=str(uuid.uuid4()), name="from-nothing")
    assert unknown.value.code == 404 and "snapshot" in unknown.value.message.lower()
    with pytest.raises(CinderError) as negative:
        cinder.call("volumes.create", -1)
    assert negative.value.code == 400
    out = cli(cinder_layout, "create", "0")
    assert out.returncode != 0 and "ERROR" in out.stderr
    with pytest.raises(CinderError) as no_volume:
        cinder.call("volumes.extend", str(uuid.uuid4()), 2)
    assert no_volume.value.code == 404
    assert cinder.call("volumes.list") == []
    assert node_state(nodes) == before


def test_backend_activity_is_published_in_the_volumes_metadata(
    cinder: Cinder, lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    """An operator replicates a volume's snapshot (``zfs-backend replicate``, slowed down); ``cinder show``
    prints the activity's kind, state and progress in the volume's metadata, the pool lists it while
    it runs, and its final state stays once cancelled."""
    vol = cinder.wait_volume(cinder.call("volumes.create", 1, name="busy")["id"], "available")
    node = node_of(vol)
    other = next(n for n in sorted(nodes) if n != node)
    with mount(connect(cinder, lab, vol["id"])) as c:
        c.pwrite("/volume", 0, os.urandom(8 << 20))
    snap = cinder.wait_snapshot(cinder.call("volume_snapshots.create", vol["id"])["id"], "available")
    source = f"{node}:{CINDER_PARENT}/volume-{vol['id']}@snapshot-{snap['id']}"
    dest = f"{other}:tank/cinder-test-replica"
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(lab_settings.home),
        "ZFS_BACKEND_LAB_NETWORK": lab_settings.lab_network,
    }
    zb = [str(ROOT / ".venv" / "bin" / "zfs-backend")]
    started = subprocess.run(
        [*zb, "replicate", source, dest, "--full", "--bwlimit", "128K", "--detach"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    act = started.stdout.split()[-1]
    assert act.startswith("act-"), started.stdout
    try:
        line = until(
            "the running replication in the volume's metadata",
            lambda: (
                (m := cinder.volume(vol["id"])["metadata"].get(ACTIVITY_KEY, "")).startswith(
                    "replicate running"
                )
                and m
            ),
        )
        assert f"({act} on {node})" in line and " of " in line and " bytes " in line
        done, total = (int(x) for x in line.split()[2:5:2])
        assert 0 <= done <= total
        until(
            "the running replication in the pool's capabilities",
            lambda: any(
                act in r and vol["id"] in r for r in cinder.pools()[backend_name(node)]["running_activities"]
            ),
        )
        shown = cli(cinder.lay, "show", vol["id"])
        assert act in shown.stdout  # what a user sees in `cinder show`
    finally:
        subprocess.run(
            [*zb, "activity", "cancel", act, "--node", node],
            env=env,
            timeout=120,
            check=False,
            capture_output=True,
        )
    line = until(
        "the cancelled replication in the volume's metadata",
        lambda: (
            (m := cinder.volume(vol["id"])["metadata"].get(ACTIVITY_KEY, "")).startswith(
                "replicate cancelled"
            )
            and m
        ),
    )
    assert act in line
    assert cinder_datasets(nodes)[other] == []  # the cancelled full copy left nothing
    assert "tank/cinder-test-replica" not in node_state(nodes)[other]["datasets"]
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    cinder.call("volume_snapshots.delete", snap["id"])
    cinder.wait_gone("volume_snapshots", snap["id"])
    cinder.call("volumes.delete", vol["id"])
    cinder.wait_gone("volumes", vol["id"])
    assert cinder_datasets(nodes) == {n: [] for n in nodes}


def test_cinder_state_is_private_and_listens_on_loopback_only(
    cinder: Cinder, cinder_layout: CinderLayout
) -> None:
    """Everything under ``$ZFS_BACKEND_HOME/cinder`` (configuration with the broker's password, database,
    logs, the broker's files) is the owner's alone; every process of this Cinder listens on loopback."""
    exposed = []
    for top, dirs, files in os.walk(cinder_layout.root):
        for name in [*dirs, *files]:
            p = Path(top) / name
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                exposed.append(f"{p}: {stat.filemode(st.st_mode)}")
    assert not exposed
    assert stat.S_IMODE(os.stat(cinder_layout.root).st_mode) == 0o700
    listening = set()
    for proc in procs.marked(cinder_layout.root):
        for conn in proc.net_connections(kind="inet"):
            if conn.status == "LISTEN":
                listening.add((conn.laddr.ip, conn.laddr.port))
    assert listening, "no listening socket found"
    assert {ip for ip, _port in listening} <= {"127.0.0.1", "::1"}, listening
    assert {port for _ip, port in listening} == set(cinder_layout.ports.all().values()), listening
