"""The cinder adapter (``volume_driver = zfs_backend.cinder.ZfsNfsDriver``) loaded by the real ``cinder``
package from PyPI, as cinder-volume loads a driver, against a lab node.

cinder lives in its own virtualenv ``.venv-cinder`` (``scripts/bootstrap --cinder``; ``scripts/test``
makes it), so this runs ``tests/lab/cinder_probe.py`` there as a subprocess and looks at the node over
SSH while the probe holds its volume and snapshot. Without ``.venv-cinder`` it skips, except under CI
(``CI`` set) where it fails: the adapter must be tested there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, TypeVar

import pytest
from polling import eventually

from zfs_backend.config import Settings
from zfs_backend.driver.nfs import parse_exports
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE
from zfs_backend.driver.stats import CAPABILITY_KEYS, STANDARD_KEYS
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.lab import Lab, nfs

ROOT = Path(__file__).resolve().parents[2]
CINDER_PYTHON = ROOT / ".venv-cinder" / "bin" / "python"
PROBE = Path(__file__).with_name("cinder_probe.py")
T = TypeVar("T")
NODE = "node1"
PARENT = "tank/cinder"
BACKEND = "zfs-lab"

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)


@pytest.fixture(scope="module")
def cinder_python() -> Path:
    if not CINDER_PYTHON.exists():
        pytest.skip(f"{CINDER_PYTHON} is missing: run scripts/bootstrap --cinder (scripts/test does)")
    return CINDER_PYTHON


def read_phase(proc: subprocess.Popen[str], stderr: Path) -> dict[str, Any]:
    """The probe's next JSON line (its stderr, cinder's logging, goes to a file shown on failure)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            out: dict[str, Any] = json.loads(line)
            if out.get("phase") == "error":
                pytest.fail(f"cinder probe failed: {out['error']}\n{out['traceback']}")
            return out
    proc.wait(timeout=30)
    tail = "\n".join(stderr.read_text(errors="replace").splitlines()[-30:])
    pytest.fail(f"cinder probe exited {proc.returncode} without a result; its stderr:\n{tail}")


def proceed(proc: subprocess.Popen[str]) -> None:
    """Let the probe clean up (also after a failed check, so nothing is left on the node)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write("go\n")
        proc.stdin.close()
    except BrokenPipeError:  # it has exited already; read_phase reports why
        pass


def exists(host: SSHHost, argv: list[str]) -> bool:
    return host.run(argv, check=False).returncode == 0


def test_real_cinder_loads_and_drives_the_adapter(
    lab: Lab, nodes: dict[str, SSHHost], lab_settings: Settings, cinder_python: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(lab_settings.home),
        "ZFS_BACKEND_LAB_NETWORK": lab_settings.lab_network,
        "CINDER_PROBE_NODE": NODE,
        "CINDER_PROBE_PARENT": PARENT,
        "CINDER_PROBE_CLIENT_IP": lab.layout.controller_address,
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    host = nodes[NODE]
    stderr = tmp_path / "probe.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [str(cinder_python), str(PROBE), str(tmp_path), BACKEND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        try:
            created = read_phase(proc, stderr)
            assert created["phase"] == "created"
            vol, snap = created["volume"], created["snapshot"]
            ds = f"{PARENT}/{vol['name']}"

            # Loaded by cinder's importutils from the class path cinder.conf names (the package's
            # zfs_backend.cinder.ZfsNfsDriver, re-exported from cinder/driver.py), a real VolumeDriver.
            assert created["driver_class"] == "zfs_backend.cinder.driver.ZfsNfsDriver"
            assert "cinder.volume.driver.VolumeDriver" in created["bases"]
            assert created["monkey_patched"] is True  # as under cinder-volume (eventlet)
            assert created["config_node"] == NODE and created["config_parent"] == PARENT
            assert created["initialized"] is True

            st = created["stats"]
            assert set(STANDARD_KEYS) | set(CAPABILITY_KEYS) <= set(st)
            assert st["volume_backend_name"] == BACKEND  # from cinder.conf, not the node default
            assert st["storage_protocol"] == "NFS" and st["driver_version"]
            assert 0 < st["free_capacity_gb"] <= st["total_capacity_gb"] <= 1.0
            assert st["location_info"].endswith(f":{PARENT}")
            assert st["snapshot_replicate"] is True and "replicate" in st["backend_activities"]
            assert st["resumable_replication"] is False and st["zfs_dialect"].startswith("zfs-fuse")
            assert "thin_provisioning" in created["capabilities_properties"]
            # cinder's scheduler reads them as one pool named after the backend.
            sched = created["scheduler"]
            assert sched["pools"] == [BACKEND]
            assert sched["total_capacity_gb"] == st["total_capacity_gb"]
            assert sched["thin_provisioning_support"] is True

            # create_volume / create_export: cinder's model updates, applied to its Volume object.
            assert vol["name"] == f"volume-{vol['id']}"
            location = vol["provider_location"]
            assert location == f"{load_inventory(lab_settings.inventory).node(NODE).address}:/{ds}"
            assert created["volume_update"] == {"provider_location": location}
            assert created["snapshot_update"] is None
            conn = created["connection"]
            assert conn["driver_volume_type"] == "nfs"
            assert conn["data"]["export"] == location and conn["data"]["name"] == "volume"
            assert created["delete_with_snapshot"] == "VolumeIsBusy"
            assert created["migrated_volume"] == {"name": vol["name"], "export": location}

            # On the node, over SSH: the dataset, its sparse 1 GiB `volume` file and the snapshot; the
            # file's mode from cinder.conf's nas_secure_file_permissions = false, its owner from the
            # node's secure file operations (nas_secure_file_operations: auto keeps them).
            mountpoint = host.run(["zfs", "get", "-H", "-o", "value", "mountpoint", ds]).text.strip()
            size, owner, mode = host.run(["stat", "-c", "%s %u:%g %a", f"{mountpoint}/volume"]).text.split()
            assert (size, owner, mode) == (str(1 << 30), "65534:65534", "666")
            # initialize_connection granted the connector's address (this process's): it mounts and reads
            granted = exported_clients(host, ds)
            assert granted == [lab.layout.controller_address]
            addr, path = location.split(":", 1)
            with eventually(lambda: nfs.NfsClient(addr, path)) as c:
                assert len(c.pread("/volume", 0, 4096)) == 4096
            snaps = host.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", ds]).text.split()
            assert f"{ds}@{snap['name']}" in snaps
        finally:
            proceed(proc)
        deleted = read_phase(proc, stderr)
        assert proc.wait(timeout=60) == 0
    assert deleted["phase"] == "deleted"
    assert deleted["stats"]["total_volumes"] == st["total_volumes"]  # st: before the create
    assert not exists(host, ["zfs", "list", "-H", ds])
    assert not exists(host, ["test", "-e", f"{mountpoint}/volume"])
    children = host.run(["zfs", "list", "-H", "-o", "name", "-r", PARENT]).text.split()
    assert children == [PARENT]
    assert exported_clients(host, ds) is None  # terminate_connection, remove_export: no export, no grant


def exported_clients(host: SSHHost, ds: str) -> list[str] | None:
    """The addresses node's exports file grants ``ds`` (None: not exported)."""
    entry = parse_exports(host.run(["cat", DEFAULT_EXPORTS_FILE]).text)[0].get(ds)
    return None if entry is None else list(entry.clients)
