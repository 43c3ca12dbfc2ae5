"""Keystone in the lab's Cinder, without starting anything: its files, cinder.conf behind it, the
accounts file, the database names MariaDB is asked for."""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

import pytest

from zfs_backend.cinderlab import keystone, mariadb
from zfs_backend.cinderlab.config import CinderLayout, cinder_conf
from zfs_backend.config import load_settings
from zfs_backend.errors import LabError


def layout(tmp_path: Path) -> CinderLayout:
    settings = load_settings(
        {"ZFS_BACKEND_HOME": str(tmp_path), "ZFS_BACKEND_LAB_NETWORK": "198.18.150.0/24"}
    )
    return CinderLayout(settings, tmp_path / "venv-cinder")


def parse(text: str) -> configparser.ConfigParser:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(text)
    return conf


def test_cinder_behind_keystone_with_a_service_password(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    conf = parse(cinder_conf(lay, ["node1"], "pw", db_password="db", service_password="svc"))
    assert conf["DEFAULT"]["auth_strategy"] == "keystone"
    auth = conf["keystone_authtoken"]
    assert auth["auth_url"] == auth["www_authenticate_uri"] == "http://127.0.0.1:24504/v3"
    assert (auth["username"], auth["password"], auth["project_name"]) == ("cinder", "svc", "service")
    noauth = parse(cinder_conf(lay, ["node1"], "pw", db_password="db"))
    assert noauth["DEFAULT"]["auth_strategy"] == "noauth"
    assert not noauth.has_section("keystone_authtoken")


def test_keystone_conf_on_the_private_mariadb_with_fernet_keys_under_the_root(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    conf = parse(keystone.keystone_conf(lay, "kdb"))
    sock = tmp_path / "cinder" / "run" / "mariadb.sock"
    assert conf["database"]["connection"] == (
        f"mysql+pymysql://keystone:kdb@localhost/keystone?unix_socket={sock}&charset=utf8mb4"
    )
    assert conf["token"]["provider"] == "fernet"
    assert conf["fernet_tokens"]["key_repository"] == str(tmp_path / "cinder" / "keystone" / "fernet-keys")
    assert conf["credential"]["key_repository"].startswith(str(lay.keystone_dir))


def test_gunicorn_gets_no_options_on_its_command_line(tmp_path: Path) -> None:
    """keystone parses sys.argv as its own options: gunicorn's must come from its config file."""
    lay = layout(tmp_path)
    assert keystone.argv(lay) == [str(tmp_path / ".venv-keystone" / "bin" / "gunicorn")]
    env = keystone.env(lay, {"PATH": "/usr/bin"})
    assert env["GUNICORN_CMD_ARGS"] == f"--config {lay.keystone_dir / 'gunicorn.conf.py'}"
    assert env["OS_KEYSTONE_CONFIG_FILES"] == str(lay.keystone_dir / "keystone.conf")
    text = keystone.gunicorn_conf(lay)
    assert 'bind = ["127.0.0.1:24504"]' in text
    assert 'wsgi_app = "keystone.wsgi.api:application"' in text
    compile(text, "gunicorn.conf.py", "exec")


def test_accounts_saved_private_and_read_back(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    assert keystone.load_accounts(lay) is None  # noauth: no credentials file
    lay.root.mkdir(mode=0o700)
    accounts = {"admin": keystone.Account("admin", "pw", "admin", "p1")}
    keystone.save_accounts(lay, accounts)
    assert stat.S_IMODE(lay.credentials.stat().st_mode) == 0o600
    assert keystone.load_accounts(lay) == accounts


def test_only_our_databases_are_made(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no database"):
        mariadb.ensure_database(layout(tmp_path), "x; DROP DATABASE cinder", "pw")
