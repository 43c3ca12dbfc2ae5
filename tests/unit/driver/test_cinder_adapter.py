"""The optional cinder adapter with the real ``cinder`` package, without a lab: it runs in
``.venv-cinder/bin/python`` (``scripts/bootstrap --cinder``; ``scripts/test`` makes it). Skipped when that
virtualenv is missing, except under CI (``CI`` set) where it fails. The lab half is
``tests/lab/test_cinder_adapter.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CINDER_PYTHON = Path(__file__).resolve().parents[3] / ".venv-cinder" / "bin" / "python"

SCRIPT = r"""
import json
from cinder import monkey_patch
monkey_patch.patch()
from cinder import context, exception, objects
objects.register_all()
from cinder.volume import configuration, manager
from cinder.volume import driver as cinder_driver
from oslo_config import cfg
from oslo_utils import importutils

from zfs_backend.cinder import ZfsNfsDriver
from zfs_backend.cinder.convert import snapshot as _snapshot, volume as _volume
from zfs_backend.driver import VolumeBusy

cfg.CONF([], project="cinder", default_config_files=[])
conf = configuration.Configuration(manager.volume_backend_opts, config_group="zfs1")
d = importutils.import_object("zfs_backend.cinder.ZfsNfsDriver", configuration=conf, host="h@zfs1")
out = {
    "is_volume_driver": isinstance(d, cinder_driver.VolumeDriver),
    "version": d.VERSION,
    "defaults": [conf.zfs_backend_node, conf.zfs_backend_parent, conf.zfs_backend_home],
    "options": sorted(o.name for o in ZfsNfsDriver.get_driver_options()),
}
try:
    d.do_setup(context.get_admin_context())
except exception.InvalidConfigurationValue as e:
    out["no_node"] = str(e)
try:
    d.create_volume(objects.Volume(id="v1", size=1))
except exception.VolumeDriverException as e:
    out["before_setup"] = type(e).__name__


class Busy:
    def delete_volume(self, v):
        raise VolumeBusy("has snapshots")

    def delete_snapshot(self, s, **kw):
        raise VolumeBusy("busy")

d.core = Busy()
for name, obj, exc in (("delete_volume", objects.Volume(id="v1", size=1), exception.VolumeIsBusy),
                       ("delete_snapshot", objects.Snapshot(id="s1", volume_id="v1", volume_size=1,
                                                          volume=objects.Volume(id="v1", size=1)),
                        exception.SnapshotIsBusy)):
    try:
        getattr(d, name)(obj)
    except exc as e:
        out[name] = type(e).__name__
from zfs_backend.cinder.options import nas_security
out["nas_default"] = nas_security(conf)
cfg.CONF.set_override("nas_secure_file_operations", "false", group="zfs1")
cfg.CONF.set_override("nas_secure_file_permissions", "True", group="zfs1")
out["nas_set"] = nas_security(conf)
cfg.CONF.set_override("nas_secure_file_permissions", "maybe", group="zfs1")
try:
    nas_security(conf)
except exception.InvalidConfigurationValue as e:
    out["nas_bad"] = type(e).__name__
moved = objects.Volume(id="new", _name_id="old", size=2)
out["migrated"] = [_volume(moved).name, moved.name]
snap = objects.Snapshot(id="s2", volume_id="new", volume_size=2, volume=moved)
out["snapshot_of_migrated"] = [_snapshot(snap).volume_id, snap.volume_name]
# replication v2.1: replication_device entries, failover_host's shapes passed through
from zfs_backend.cinder.options import replication_targets
cfg.CONF.set_override("replication_device", [{"backend_id": "node2"}, {"backend_id": "node3"}], group="zfs1")
out["replication_targets"] = list(replication_targets(conf))
from zfs_backend.cinder.convert import replication_update
rtype = objects.VolumeType(name="r", extra_specs={"replication_enabled": "<is> True"})
plain = objects.VolumeType(name="p", extra_specs={})
out["replication_update"] = [
    replication_update(objects.Volume(id="r1", size=1, volume_type=rtype), ("node2",)),
    replication_update(objects.Volume(id="r2", size=1, volume_type=rtype), ()),
    replication_update(objects.Volume(id="p1", size=1, volume_type=plain), ("node2",)),
    replication_update(objects.Volume(id="n1", size=1), ("node2",)),
]


class Failover:  # a set-up core driver; the failover itself is zfs_backend.driver.failover's, replaced below
    pass


import zfs_backend.driver.failover as failover_mod
failover_mod.failover_host = lambda core, volumes, secondary_id: (secondary_id, [
    {"volume_id": v.id, "updates": {"replication_status": "failed-over", "seen": v.replication_status}}
    for v in volumes
], [])


class Connections:
    calls = []

    def terminate_connection(self, v, connector, **kw):
        self.calls.append(["terminate", connector])

    def release_export(self, ctx, v):
        self.calls.append(["release", v.id])


def attached(*ips):
    return objects.Volume(id="m1", size=1, multiattach=True, volume_attachment=objects.VolumeAttachmentList(
        objects=[objects.VolumeAttachment(id=f"a{i}", connector={"ip": ip, "host": f"h{i}"})
                 for i, ip in enumerate(ips)]))


class Made:
    class options:
        replication_devices = ()

    def create_volume(self, v):
        return {"provider_location": "a:/p"}

    def delete_volume(self, v):
        out.setdefault("deleted", []).append(v.id)

# cinder freeze-host: management operations refused by the driver too (a delete: VolumeIsBusy, the
# volume left as it was), until thaw-host
d.core = Made()
out["freeze"] = [d.freeze_backend(None)]
for name, args in (("create_volume", [objects.Volume(id="f1", size=1)]),
                   ("delete_volume", [objects.Volume(id="f1", size=1)])):
    try:
        getattr(d, name)(*args)
        out["freeze"].append("done")
    except (exception.VolumeIsBusy, exception.VolumeBackendAPIException) as e:
        out["freeze"].append([type(e).__name__, "frozen" in str(e)])
out["freeze"] += [d.thaw_backend(None), d.create_volume(objects.Volume(id="f1", size=1))["provider_location"]]
d.delete_volume(objects.Volume(id="f1", size=1))

d.core = Connections()
out["shared"] = [
    # another of Cinder's attachments from the same address: the grant stays, "shared"
    d.terminate_connection(attached("198.18.0.5", "198.18.0.5", "198.18.0.6"), {"ip": "198.18.0.5"}),
    # the last from that address, others left: revoked (every attachment of it), export kept
    d.terminate_connection(attached("198.18.0.5", "198.18.0.6"), {"ip": "198.18.0.5", "attachment_id": "x"}),
    # the last of all
    d.terminate_connection(attached("198.18.0.6"), {"ip": "198.18.0.6"}),
    d.terminate_connection(attached("198.18.0.6"), None),
    # attachments not loaded and not loadable (no context): nothing shared is known
    d.terminate_connection(objects.Volume(id="m2", size=1), {"ip": "198.18.0.7"}),
]
d.remove_export(None, attached())
out["connections"] = Connections.calls
d.core = Failover()
rv = objects.Volume(id="new", _name_id="old", size=2, replication_status="enabled")
out["failover"] = d.failover_host(context.get_admin_context(), [rv], "node2")
out["serves_from"] = [d._active_backend_id, d._reserve]  # the standby's, set up at the next call
# failback (secondary_id="default"): refused while the primary does not answer, then done by
# zfs_backend.driver.failback with cores for the primary and the standby
import zfs_backend.driver.failback as failback_mod


class Core:
    def __init__(self, node, healthy=True):
        self.node, self.healthy = node, healthy

    def do_setup(self, ctx):
        if not self.healthy:
            raise OSError(f"ssh: connect to host {self.node}: No route to host")


cores = {"node1": Core("node1", healthy=False), "node2": Core("node2")}
d._core_for = lambda node, active: (cores[active or "node1"], active or "node1", None)
seen = []
failback_mod.fail_back = lambda p, s, vols: (
    seen.append([p.node, s.node, [[v.id, v.replication_status] for v in vols]]),
    [{"volume_id": v.id, "updates": {"replication_status": "enabled"}} for v in vols],
)[1]
fv = objects.Volume(id="new", _name_id="old", size=2, replication_status="failed-over")
try:
    d.failover_host(context.get_admin_context(), [fv], "default")
except exception.InvalidReplicationTarget as e:
    out["failback_unhealthy"] = [type(e).__name__, "not healthy" in str(e), d._active_backend_id, seen[:]]
cores["node1"].healthy = True
out["failback"] = d.failover_host(context.get_admin_context(), [fv], "default")
out["failback_seen"] = seen
out["failback_serves_from"] = [d._active_backend_id, d._reserve]
try:
    d.failover_host(context.get_admin_context(), [fv], "default")
except exception.InvalidReplicationTarget as e:
    out["failback_again"] = type(e).__name__
print(json.dumps(out))
"""


def test_adapter_under_real_cinder() -> None:
    if not CINDER_PYTHON.exists():
        pytest.skip(f"{CINDER_PYTHON} is missing: run scripts/bootstrap --cinder (scripts/test does)")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [str(CINDER_PYTHON), "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["is_volume_driver"] is True and out["version"]
    assert out["freeze"] == [
        True,
        ["VolumeBackendAPIException", True],
        ["VolumeIsBusy", True],
        True,
        "a:/p",
    ]
    assert out["deleted"] == ["f1"]  # only after the thaw
    assert out["defaults"] == [None, "tank/volumes", "/var/lib/zfs-backend"]
    assert out["options"] == [
        "zfs_backend_home",
        "zfs_backend_inventory",
        "zfs_backend_node",
        "zfs_backend_parent",
    ]
    assert "zfs_backend_node" in out["no_node"]
    assert out["before_setup"] == "VolumeDriverException"
    assert out["delete_volume"] == "VolumeIsBusy" and out["delete_snapshot"] == "SnapshotIsBusy"
    # Cinder's nas_secure_* pass through: auto keeps the node's options, true/false override them
    assert out["nas_default"] == {}
    assert out["nas_set"] == {"secure_file_operations": False, "secure_file_permissions": True}
    assert out["nas_bad"] == "InvalidConfigurationValue"
    assert out["migrated"] == ["volume-old", "volume-old"]
    assert out["snapshot_of_migrated"] == ["old", "volume-old"]
    assert out["replication_targets"] == ["node2", "node3"]
    # a volume of a replicated type on a backend with replication_device entries: enabled
    assert out["replication_update"] == [{"replication_status": "enabled"}, {}, {}, {}]
    # Cinder's (active_backend_id, volume_update_list, group_update_list), keyed by Cinder's volume id
    assert out["failover"] == [
        "node2",
        [{"volume_id": "new", "updates": {"replication_status": "failed-over", "seen": "enabled"}}],
        [],
    ]
    assert out["serves_from"] == ["node2", True]
    # failback: refused while the primary does not answer (nothing changed), then back to the primary
    assert out["failback_unhealthy"] == ["InvalidReplicationTarget", True, "node2", []]
    assert out["failback"] == [
        "default",
        [{"volume_id": "new", "updates": {"replication_status": "enabled"}}],
        [],
    ]
    assert out["failback_seen"] == [["node1", "node2", [["old", "failed-over"]]]]
    assert out["failback_serves_from"] == [None, True]
    assert out["failback_again"] == "InvalidReplicationTarget"  # not failed over any more
    # multiattach: Cinder's own attachments are counted per address; the export stays while any is left
    assert out["shared"] == [True, True, False, False, False]
    assert out["connections"] == [
        ["terminate", {"ip": "198.18.0.5"}],
        ["terminate", {"ip": "198.18.0.6"}],
        ["terminate", None],
        ["terminate", {"ip": "198.18.0.7"}],
        ["release", "m1"],
    ]


def test_the_cinder_package_imports_its_parts_without_cinder() -> None:
    """Issue 24: ``zfs_backend.cinder`` exports only what ``volume_driver=`` names, made on first use, so
    ``cinder.activities`` (and the package) import without loading ``cinder`` at all."""
    code = (
        "import sys, zfs_backend.cinder, zfs_backend.cinder.activities\n"
        "assert 'cinder' not in sys.modules, 'cinder was imported'\n"
        "assert zfs_backend.cinder.__all__ == ['ZfsNfsDriver']\n"
        "try:\n"
        "    zfs_backend.cinder.ZfsNfsDriver\n"
        "except ModuleNotFoundError as e:\n"
        "    print('missing', e.name)\n"
        "else:\n"
        "    print('loaded', 'cinder' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() in (["missing", "cinder"], ["loaded", "True"])
