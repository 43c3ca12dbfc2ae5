"""``cinder migrate`` and ``cinder failover-host`` through the real services: the driver's
``migrate_volume`` (a ``migrate`` activity) and ``failover_host`` with ``replication_device``
(replication v2.1). Both land the volume under the destination backend's own parent dataset
(``zfs_backend_parent``, not the inventory's default). The failover runs last: node1's backend fails
over to node2, serves from there, fails back (``--backend_id default``) with the bytes written meanwhile
(checksums), then is frozen (``cinder freeze-host``: a snapshot refused) and thawed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from zfs_backend.cinderlab.config import CINDER_PARENT, HOST, backend_name
from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib

from cinder_helpers import (
    ROOT,
    STANDBY,
    TIMEOUT,
    Cinder,
    CinderError,
    backend_of,
    cinder_datasets,
    connect,
    connector,
    mount,
    node_of,
    node_state,
    sha,
    until,
)

ZB = str(ROOT / ".venv" / "bin" / "zfs-backend")


def zb_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
    }


def activities(settings: Settings, node: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [ZB, "activity", "list", "--node", node, "--json"],
        capture_output=True,
        text=True,
        env=zb_env(settings),
        timeout=120,
        check=True,
    )
    data = json.loads(out.stdout or "[]")
    return list(data if isinstance(data, list) else data.get("activities", []))


def volume_file_sha(host: SSHHost, vid: str) -> str:
    ds = f"{CINDER_PARENT}/volume-{vid}"
    mp = host.run(["zfs", "get", "-H", "-o", "value", "mountpoint", ds]).text.strip()
    return host.run(["sha256sum", f"{mp}/volume"]).text.split()[0]


def test_cinder_migrate_runs_the_drivers_migration_as_an_activity(
    cinder: Cinder, lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    vol = cinder.wait_volume(cinder.call("volumes.create", 1, name="migrating")["id"], "available")
    source = node_of(vol)
    target = next(n for n in sorted(nodes) if n != source)
    data = os.urandom(8 << 20)
    with mount(connect(cinder, lab, vol["id"])) as c:
        c.pwrite("/volume", 0, data)
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    dest = f"{HOST}@{backend_name(target)}#{backend_name(target)}"
    cinder.call("volumes.migrate_volume", vol["id"], dest, False, False)
    seen: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        seen.extend(a for a in activities(lab_settings, source) if a["kind"] == "migrate" and a not in seen)
        v = cinder.volume(vol["id"])
        return v if v.get("migration_status") in ("success", "error") else None

    moved = until("the migration to finish", finished, timeout=TIMEOUT)
    assert moved["migration_status"] == "success", cinder.messages()
    assert backend_of(moved) == backend_name(target)
    assert any(vol["id"] in json.dumps(a["params"]) for a in seen), seen  # `zfs-backend activity list`
    name_id = moved.get("os-vol-mig-status-attr:name_id") or vol["id"]
    datasets = cinder_datasets(nodes)
    assert f"{CINDER_PARENT}/volume-{name_id}" in datasets[target]
    assert not any(f"volume-{name_id}" in d for d in datasets[source])
    conn = connect(cinder, lab, vol["id"])
    assert conn["data"]["export"].startswith(
        load_inventory(lab_settings.inventory).node(target).address + ":"
    )
    with mount(conn) as c:
        assert sha(c.pread("/volume", 0, len(data))) == sha(data)
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    cinder.call("volumes.delete", vol["id"])
    cinder.wait_gone("volumes", vol["id"])


def test_cinder_failover_host_fails_replicated_volumes_over_to_the_standby(
    cinder: Cinder, lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost]
) -> None:
    primary, standby = "node1", STANDBY
    vtype = cinder.call("volume_types.create", "replicated")
    cinder.call("volume_types.get", vtype["id"], then=("set_keys", {"replication_enabled": "<is> True"}))
    until(
        "node1's backend to publish replication_enabled",
        lambda: cinder.pools()[backend_name(primary)].get("replication_enabled") is True,
    )
    vol = cinder.call("volumes.create", 1, name="replicated", volume_type="replicated")
    vol = cinder.wait_volume(vol["id"], "available")
    assert backend_of(vol) == backend_name(primary) and vol["replication_status"] == "enabled"
    with mount(connect(cinder, lab, vol["id"])) as c:
        c.pwrite("/volume", 0, os.urandom(4 << 20))
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    # the replica on the standby: a snapshot sent there, as the hot standby's seed does it
    snap = cinder.wait_snapshot(cinder.call("volume_snapshots.create", vol["id"])["id"], "available")
    subprocess.run(
        [
            ZB,
            "replicate",
            f"{primary}:{CINDER_PARENT}/volume-{vol['id']}@snapshot-{snap['id']}",
            f"{standby}:{CINDER_PARENT}/volume-{vol['id']}",
            "--full",
        ],
        env=zb_env(lab_settings),
        timeout=600,
        check=True,
        capture_output=True,
    )
    want = volume_file_sha(nodes[primary], vol["id"])

    ds_name = f"{CINDER_PARENT}/volume-{vol['id']}"
    assert ds_name in node_state(nodes)[primary]["exports"]
    lab.link(primary, False)  # the primary is gone: the failover needs nothing of it
    try:
        cinder.call("services.failover_host", f"{HOST}@{backend_name(primary)}", standby)
        until(
            "the backend to fail over",
            lambda: any(
                s["host"] == f"{HOST}@{backend_name(primary)}" and s.get("active_backend_id") == standby
                for s in cinder.call("services.list", binary="cinder-volume")
            ),
        )
        failed = until(
            "the volume to be failed-over",
            lambda: (v := cinder.volume(vol["id"]))["replication_status"] == "failed-over" and v,
        )
    finally:
        lab.link(primary, True)
    assert failed["status"] == "available", failed
    # the old primary answers again: a stats refresh of the failed-over backend fences its copy there
    # (unexported, read-only, kept: it may hold writes the standby never received)
    until("the old primary's copy to be fenced", lambda: ds_name not in node_state(nodes)[primary]["exports"])
    got = nodes[primary].run(["zfs", "get", "-H", "-o", "value,source", "readonly", ds_name]).text.split()
    assert got in (["on", "local"], ["off", "temporary"]), got  # zfs-fuse shows readonly=on so when mounted
    assert volume_file_sha(nodes[standby], vol["id"]) == want  # the data, on the standby
    conn = connect(cinder, lab, vol["id"])
    address = load_inventory(lab_settings.inventory).node(standby).address
    assert conn["data"]["export"].startswith(f"{address}:"), conn
    with mount(conn) as c:
        assert len(c.pread("/volume", 0, 4096)) == 4096
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    # written on the standby while failed over, then back (cinder failover-host --backend_id default):
    # the primary's copy brought up to date from the standby and promoted, the same bytes there
    with mount(connect(cinder, lab, vol["id"])) as c:
        c.pwrite("/volume", 1 << 20, os.urandom(2 << 20))
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    want = volume_file_sha(nodes[standby], vol["id"])
    host = f"{HOST}@{backend_name(primary)}"
    cinder.call("services.failover_host", host, "default")
    until(
        "the backend to fail back",
        lambda: any(
            s["host"] == host and not s.get("active_backend_id") and s.get("replication_status") == "enabled"
            for s in cinder.call("services.list", binary="cinder-volume")
        ),
    )
    back = until(
        "the volume to be enabled again",
        lambda: (v := cinder.volume(vol["id"]))["replication_status"] == "enabled" and v,
    )
    assert back["status"] == "available", back
    assert volume_file_sha(nodes[primary], vol["id"]) == want  # the data, on the primary again
    assert ds_name not in node_state(nodes)[standby]["exports"]  # the standby's copy: unexported
    conn = connect(cinder, lab, vol["id"])
    address = load_inventory(lab_settings.inventory).node(primary).address
    assert conn["data"]["export"].startswith(f"{address}:"), conn
    with mount(conn) as c:  # writable on the primary
        c.pwrite("/volume", 0, b"z" * 4096)
    cinder.call("volumes.terminate_connection", vol["id"], connector(lab))
    # cinder freeze-host: Cinder refuses management of the backend's volumes; thaw-host: allowed again
    cinder.call("services.freeze_host", host)
    until(
        "the backend to be frozen",
        lambda: any(s["host"] == host and s.get("frozen") for s in cinder.call("services.list")),
    )
    try:
        cinder.call("volume_snapshots.create", vol["id"])
        refused = None
    except CinderError as e:
        refused = e
    assert refused is not None and refused.code == 400, refused
    cinder.call("services.thaw_host", host)
    until(
        "the backend to be thawed",
        lambda: any(s["host"] == host and not s.get("frozen") for s in cinder.call("services.list")),
    )
    cinder.call("volume_snapshots.delete", snap["id"])
    cinder.wait_gone("volume_snapshots", snap["id"])
    cinder.call("volumes.delete", vol["id"])
    cinder.wait_gone("volumes", vol["id"])
    assert f"{CINDER_PARENT}/volume-{vol['id']}" not in cinder_datasets(nodes)[primary]
    # the standby's copy (read-only, unexported: kept by the failback): the test removes it
    nodes[standby].run(["zfs", "destroy", "-r", ds_name], check=False)
