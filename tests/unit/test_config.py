"""Settings read from the environment: the replica roots (what a node lets peers replicate under)."""

import pytest

from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError


def test_replica_roots_unset_means_none() -> None:
    assert load_settings({}).replica_roots == ()
    assert load_settings({"ZFS_BACKEND_REPLICA_ROOTS": " , "}).replica_roots == ()


def test_replica_roots_are_comma_separated_datasets() -> None:
    env = {"ZFS_BACKEND_REPLICA_ROOTS": "tank/replicas, tank/volumes"}
    assert load_settings(env).replica_roots == ("tank/replicas", "tank/volumes")


@pytest.mark.parametrize("bad", ["/tank", "tank/../etc", "-tank", "tank//r", "tank r"])
def test_a_bad_root_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="ZFS_BACKEND_REPLICA_ROOTS"):
        load_settings({"ZFS_BACKEND_REPLICA_ROOTS": bad})
