"""Where flows keep their logbooks and find their jobboard: settings, URLs, the logbook's file mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError
from zfs_backend.flows.jobboard import _redis_conf
from zfs_backend.flows.persistence import backend, sqlite_path


def test_settings_default_to_sqlite_in_the_home_and_no_jobboard(tmp_path: Path) -> None:
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path)})
    assert s.flow_db == f"sqlite:///{tmp_path}/flows.db" and s.jobboard == ""
    s = load_settings(
        {"ZFS_BACKEND_FLOW_DB": "mysql+pymysql://u@db/flows", "ZFS_BACKEND_JOBBOARD": "redis://h:1/2"}
    )
    assert s.flow_db == "mysql+pymysql://u@db/flows" and s.jobboard == "redis://h:1/2"


def test_urls() -> None:
    assert sqlite_path("sqlite:////var/x/flows.db") == "/var/x/flows.db"
    assert sqlite_path("sqlite://") is None and sqlite_path("postgresql://h/db") is None
    assert _redis_conf("redis://127.0.0.1:6390/3", "pw") == {
        "board": "redis",
        "host": "127.0.0.1",
        "port": 6390,
        "namespace": "zfs_backend",
        "password": "pw",
        "db": 3,
    }
    for bad in ("http://h", "redis://", "127.0.0.1:6379"):
        with pytest.raises(ConfigError):
            _redis_conf(bad, "pw")


def test_the_logbook_is_private(tmp_path: Path) -> None:
    s = load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home")})
    with backend(s) as be:
        be.get_connection().validate()
    db = tmp_path / "home" / "flows.db"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
