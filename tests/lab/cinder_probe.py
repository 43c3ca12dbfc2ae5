"""Drive ``zfs_backend.cinder.ZfsNfsDriver`` the way a real cinder-volume does, with the real ``cinder``
package. Run by ``tests/lab/test_cinder_adapter.py`` in ``.venv-cinder/bin/python`` (never imported by
pytest: the project's main venv has no cinder).

    cinder_probe.py CONFIG_DIR BACKEND

It writes ``CONFIG_DIR/cinder.conf`` from the environment (``ZFS_BACKEND_HOME``, ``CINDER_PROBE_NODE``,
``CINDER_PROBE_PARENT``; ``nas_secure_file_permissions = false`` to see Cinder's option reach the node),
then as ``cinder/cmd/volume.py`` and ``cinder/volume/manager.py`` do:
eventlet monkey patching, ``cfg.CONF(["--config-file", ...], project="cinder")``,
``objects.register_all()``, ``Configuration(volume_backend_opts, config_group=BACKEND)`` and
``importutils.import_object(conf.volume_driver, configuration=..., host=..., ...)``; then ``do_setup``,
``check_for_setup_error``, ``init_capabilities`` / ``get_volume_stats(refresh=True)``, ``create_volume``
and ``create_snapshot`` with cinder's own ``objects.Volume`` / ``objects.Snapshot`` (built in memory with
the fields a database row would give: no database here; cinder's ``fake_volume`` test helpers would need
its test dependencies), ``create_export`` and ``initialize_connection`` with a connector whose ``ip`` is
``CINDER_PROBE_CLIENT_IP`` (the test's own address, which must then be able to mount the volume).

Protocol on stdout, one JSON object a line: ``{"phase": "created", ...}``, then it waits for one line
on stdin (the test looks at the node meanwhile), cleans up (``terminate_connection``, ``remove_export``,
``delete_snapshot``, ``delete_volume``, and both again: deletes are idempotent), and prints
``{"phase": "deleted", ...}``. Any failure prints ``{"phase": "error", ...}`` and exits 1.
"""

# ruff: noqa: E402, I001  (cinder-volume monkey patches before importing anything else)
from cinder import monkey_patch

monkey_patch.patch()

import json
import os
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_utils import importutils, timeutils

from cinder import context, exception, objects
from cinder.common import config as _common_config  # noqa: F401  (cinder's core options, as cinder-volume)

objects.register_all()  # before the managers' modules, as cinder/cmd/volume.py

from cinder.scheduler import host_manager
from cinder.volume import configuration, manager


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()


def write_conf(path: Path, backend: str) -> None:
    path.write_text(
        "[DEFAULT]\n"
        "host = cinder-lab\n"
        f"enabled_backends = {backend}\n"
        f"\n[{backend}]\n"
        "volume_driver = zfs_backend.cinder.ZfsNfsDriver\n"
        f"volume_backend_name = {backend}\n"
        f"zfs_backend_node = {os.environ['CINDER_PROBE_NODE']}\n"
        f"zfs_backend_parent = {os.environ['CINDER_PROBE_PARENT']}\n"
        f"zfs_backend_home = {os.environ['ZFS_BACKEND_HOME']}\n"
        "nas_secure_file_permissions = false\n"
    )


def scheduler_view(host: str, stats: dict[str, Any]) -> dict[str, Any]:
    """What cinder's scheduler makes of the stats (``HostState.update_from_volume_capability``)."""
    state = host_manager.BackendState(host, None)
    state.update_from_volume_capability({**stats, "timestamp": timeutils.utcnow()})
    pool = next(iter(state.pools.values()))
    return {
        "pools": sorted(state.pools),
        "total_capacity_gb": pool.total_capacity_gb,
        "free_capacity_gb": pool.free_capacity_gb,
        "thin_provisioning_support": pool.thin_provisioning_support,
        "max_over_subscription_ratio": pool.max_over_subscription_ratio,
    }


def cleanup(driver: Any, ctx: Any, vol: Any, snap: Any, *, strict: bool) -> None:
    """remove_export, delete_snapshot, delete_volume; after a failure (not ``strict``) each is tried."""
    steps = (
        lambda: driver.remove_export(ctx, vol),
        lambda: driver.delete_snapshot(snap),
        lambda: driver.delete_volume(vol),
    )
    for step in steps:
        try:
            step()
        except Exception:
            if strict:
                raise
            traceback.print_exc()


def run(config_dir: Path, backend: str) -> None:
    conf_file = config_dir / "cinder.conf"
    write_conf(conf_file, backend)
    cfg.CONF(["--config-file", str(conf_file)], project="cinder", default_config_files=[])
    host = f"{cfg.CONF.host}@{backend}"

    conf = configuration.Configuration(manager.volume_backend_opts, config_group=backend)
    driver = importutils.import_object(
        conf.volume_driver,
        configuration=conf,
        host=host,
        cluster_name=None,
        is_vol_db_empty=True,
        active_backend_id=None,
    )
    ctx = context.get_admin_context()
    driver.do_setup(ctx)
    driver.check_for_setup_error()
    driver.init_capabilities()  # what VolumeManager.init_host does next
    driver.set_initialized()
    stats = driver.get_volume_stats(refresh=True)

    # What the manager hands the driver: objects loaded from its database, every column set.
    vol = objects.Volume(
        context=ctx,
        id=str(uuid.uuid4()),
        _name_id=None,
        size=1,
        status="creating",
        attach_status="detached",
        display_name="cinder-lab",
        display_description=None,
        host=f"{host}#{stats['volume_backend_name']}",
        provider_location=None,
        snapshot_id=None,
        source_volid=None,
        volume_type_id=None,
        metadata={},
        admin_metadata={},
    )
    snap = objects.Snapshot(
        context=ctx,
        id=str(uuid.uuid4()),
        volume_id=vol.id,
        volume_size=vol.size,
        status="creating",
        progress="0%",
        display_name="cinder-lab-snap",
        display_description=None,
        provider_location=None,
        metadata={},
        volume=vol,
    )
    try:
        update = driver.create_volume(vol)
        if update:
            vol.update(update)
        snap_update = driver.create_snapshot(snap)
        # An attach, as VolumeManager.initialize_connection does it: create_export, then the connection info.
        connector = {
            "host": "cinder-lab-client",
            "ip": os.environ["CINDER_PROBE_CLIENT_IP"],
            "initiator": None,
        }
        export_update = driver.create_export(ctx, vol, connector)
        if export_update:
            vol.update(export_update)
        conn = driver.initialize_connection(vol, connector)
        # After a migration cinder swaps ids: the volume's storage is then named after its name_id.
        migrated = objects.Volume(context=ctx, id=str(uuid.uuid4()), _name_id=vol.id, size=vol.size)
        migrated_export = driver.initialize_connection(migrated, connector)["data"]["export"]
        busy = None
        try:
            driver.delete_volume(vol)  # it has a snapshot: cinder's manager expects VolumeIsBusy
        except exception.VolumeIsBusy as e:
            busy = type(e).__name__
        emit(
            phase="created",
            driver_class=f"{type(driver).__module__}.{type(driver).__qualname__}",
            bases=[f"{c.__module__}.{c.__qualname__}" for c in type(driver).__mro__],
            monkey_patched=monkey_patch.is_patched(),
            config_node=conf.zfs_backend_node,
            config_parent=conf.zfs_backend_parent,
            initialized=driver.initialized,
            stats=stats,
            capabilities_properties=sorted(driver.capabilities.get("properties", {})),
            scheduler=scheduler_view(host, stats),
            volume={"id": vol.id, "name": vol.name, "provider_location": vol.provider_location},
            volume_update=update,
            snapshot={"id": snap.id, "name": snap.name},
            snapshot_update=snap_update,
            export_update=export_update,
            connection=conn,
            migrated_volume={"name": migrated.name, "export": migrated_export},
            delete_with_snapshot=busy,
        )
    except Exception:
        cleanup(driver, ctx, vol, snap, strict=False)  # leave nothing on the node
        raise
    sys.stdin.readline()

    driver.terminate_connection(vol, connector)
    cleanup(driver, ctx, vol, snap, strict=True)
    driver.delete_snapshot(snap)  # already gone: not an error
    driver.delete_volume(vol)  # already gone: not an error
    emit(phase="deleted", stats=driver.get_volume_stats(refresh=True))


def main() -> int:
    try:
        run(Path(sys.argv[1]), sys.argv[2])
    except Exception as e:
        emit(phase="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
