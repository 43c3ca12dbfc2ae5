"""The optional real-cinder adapter imports and subclasses cinder's VolumeDriver (skipped without cinder)."""

from __future__ import annotations

import pytest

cinder = pytest.importorskip("cinder", reason="the cinder package is not installed (extra 'cinder', opt-in)")


def test_adapter_is_a_cinder_volume_driver() -> None:
    from cinder.volume import configuration
    from cinder.volume import driver as cinder_driver

    from zfs_backend.cinder import ZfsNfsDriver

    conf = configuration.Configuration(None, config_group="zfs1")
    d = ZfsNfsDriver(configuration=conf)
    assert isinstance(d, cinder_driver.VolumeDriver)
    assert d.VERSION
