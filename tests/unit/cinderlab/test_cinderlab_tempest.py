"""scripts/tempest's tempest.conf and results, without tempest: features claimed only where the adapter
implements them, the lab's facts in the right sections, the glance exclusion, the summary."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from zfs_backend.cinderlab.config import CinderLayout
from zfs_backend.cinderlab.keystone import Account
from zfs_backend.cinderlab.tempest import (
    NEEDS_GLANCE,
    REGEX,
    SUBSETS,
    adapter_methods,
    features,
    skip_table,
    summary,
    tempest_conf,
)
from zfs_backend.config import load_settings


def test_the_adapter_methods_are_read_from_its_source() -> None:
    methods = adapter_methods()
    assert {"create_volume", "create_snapshot", "create_cloned_volume", "extend_volume"} <= methods
    assert "manage_existing" not in methods  # not implemented: tempest must not be told it is


def test_features_claimed_only_where_implemented_or_running(tmp_path: Path) -> None:
    src = tmp_path / "adapter.py"
    src.write_text(
        "class ZfsNfsDriver:\n    def create_snapshot(self): ...\n    def manage_existing(self): ...\n"
    )
    f = features(adapter_methods(src), ["zfs-node1"], {"cinder-volume"})
    assert f["snapshot"] and f["manage_volume"]
    assert not f["clone"] and not f["manage_snapshot"] and not f["volume_revert"]
    assert not f["multi_backend"] and not f["backup"]  # one backend, no cinder-backup running
    assert not f["extend_attached_volume"]  # needs nova
    g = features(set(), ["a", "b"], {"cinder-backup"})
    assert g["multi_backend"] and g["backup"]


def test_tempest_conf_from_the_lab(tmp_path: Path) -> None:
    settings = load_settings(
        {"ZFS_BACKEND_HOME": str(tmp_path), "ZFS_BACKEND_LAB_NETWORK": "198.18.150.0/24"}
    )
    lay = CinderLayout(settings, tmp_path / "venv")
    pools = [
        {
            "name": f"h@zfs-{n}#p",
            "capabilities": {"volume_backend_name": f"zfs-{n}", "storage_protocol": "NFS"},
        }
        for n in ("node2", "node1")
    ]
    text = tempest_conf(
        lay, Account("admin", "pw", "admin"), pools, {"snapshot": True, "backup": False}, "3.71"
    )
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(text)
    assert conf["identity"]["uri_v3"] == "http://127.0.0.1:24504/v3"
    assert conf["auth"]["admin_password"] == "pw"
    assert conf["volume"]["backend_names"] == "zfs-node1,zfs-node2"
    assert conf["volume"]["storage_protocol"] == "NFS"
    assert conf["volume"]["max_microversion"] == "3.71"
    assert conf["service_available"]["nova"] == "False"
    assert conf["volume-feature-enabled"]["snapshot"] == "True"
    assert conf["volume-feature-enabled"]["backup"] == "False"


def test_glance_tests_are_excluded_and_nothing_else() -> None:
    glance = [
        "tempest.api.volume.test_volumes_get.VolumesGetTest.test_volume_create_get_update_delete_from_image"
        "[id-54a01030-c7fc-447c-86ee-c1182beae638,image,smoke]",
        "tempest.api.volume.test_image_metadata.VolumesImageMetadata.test_x[id-1]",
        "cinder_tempest_plugin.api.volume.test_create_from_image.VolumeFromImageTest.test_y[id-2]",
        "tempest.api.volume.test_volumes_extend.VolumesExtendTest.test_volume_extend[id-9a36df71]",
    ]
    kept = [
        "tempest.api.volume.test_volumes_get.VolumesGetTest.test_volume_create_get_update_delete"
        "[id-27fb0e9f-fb64-41dd-8bdb-1ffa762f0d51,smoke]",
        "tempest.api.volume.test_volumes_actions.VolumesActionsTest.test_volume_readonly_update[id-3]",
        "tempest.api.volume.test_volumes_extend.VolumesExtendTest.test_volume_extend_when_volume_has_snapshot[id-4]",
    ]
    assert all(re.search(NEEDS_GLANCE, t) for t in glance)
    assert not any(re.search(NEEDS_GLANCE, t) for t in kept)
    assert all(re.search(REGEX, t) for t in glance + kept)


def test_summary_counts_an_unexpected_success_as_a_failure() -> None:
    found = [{"status": s} for s in ("success", "success", "skip", "fail", "uxsuccess", "xfail")]
    assert summary(found) == (3, 2, 1)


def test_skip_table_groups_by_reason() -> None:
    found = [
        {
            "id": "setUpClass (tempest.api.volume.admin.test_x.BackupTest)",
            "status": "skip",
            "reason": "no backup",
        },
        {"id": "tempest.api.volume.test_y.YTest.test_a[id-1]", "status": "skip", "reason": "no backup"},
        {"id": "tempest.api.volume.test_y.YTest.test_b[id-2]", "status": "skip", "reason": "needs nova"},
        {"id": "tempest.api.volume.test_y.YTest.test_c[id-3]", "status": "success", "reason": ""},
    ]
    assert skip_table(found).splitlines()[2:] == [
        "| 2 | no backup | BackupTest (whole class), YTest.test_a |",
        "| 1 | needs nova | YTest.test_b |",
    ]


def test_the_dependency_tests_run_without_their_image_ones() -> None:
    """enable_volume_image_dep_tests gates test_volume_from_snapshot_cascade_delete (the deferred snapshot
    delete, then the volume's: its clone promoted) and the plugin's image ones, which stay excluded."""
    f = features({"create_volume_from_snapshot"}, ["a"], set())
    assert f["enable_volume_image_dep_tests"] and f["volume_image_dep_tests"]
    assert not features(set(), ["a"], set())["enable_volume_image_dep_tests"]
    image = (
        "cinder_tempest_plugin.api.volume.test_volume_dependency.VolumeImageDependencyTests"
        ".test_image_volume_dependencies_1[id-7a9fba78-2e4b-42b1-9898-bb4a60685320,image,volume]"
    )
    assert re.search(NEEDS_GLANCE, image)


def test_the_ci_subset_is_the_adapters_calls_among_the_volume_tests() -> None:
    ci = SUBSETS["ci"]
    run = [
        "tempest.api.volume.test_volumes_get.VolumesGetTest.test_volume_create_get_update_delete[id-27,smoke]",
        "tempest.api.volume.test_volumes_clone.VolumesCloneTest.test_create_from_volume[id-1]",
        "tempest.api.volume.test_volumes_extend.VolumesExtendTest.test_volume_extend_when_volume_has_snapshot[id-4]",
        "tempest.api.volume.test_volume_delete_cascade.VolumesDeleteCascade.test_volume_from_snapshot_cascade_delete[id-5]",
        "tempest.api.volume.admin.test_volume_retype.VolumeRetypeWithMigrationTest.test_available_volume_retype[id-6]",
        "cinder_tempest_plugin.api.volume.test_volume_dependency.VolumeDependencyTests.test_delete_dep_chain[id-7]",
        "cinder_tempest_plugin.api.volume.test_multiple_volume_from_resource.CreateVolumesFromSnapshotTest.test_x[id-8]",
        "cinder_tempest_plugin.api.volume.test_multiple_volume_from_resource.CreateVolumesFromSourceVolumeTest.t[id-9]",
    ]
    not_run = [
        "tempest.api.volume.test_volumes_list.VolumesListTestJSON.test_volume_list[id-0b,smoke]",
        "tempest.api.volume.test_volumes_get.VolumesSummaryTest.test_show_volume_summary[id-10]",
        "tempest.api.volume.admin.test_volume_retype.VolumeRetypeWithoutMigrationTest.test_x[id-11]",
        "cinder_tempest_plugin.api.volume.test_multiple_volume_from_resource.CreateVolumesFromImageTest.t[id-12]",
    ]
    assert all(re.search(ci, t) and re.search(REGEX, t) for t in run)
    assert not any(re.search(ci, t) for t in not_run)
