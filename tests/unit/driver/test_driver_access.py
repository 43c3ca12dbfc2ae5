"""Unit tests of who may use a volume, without a node: the grants in the exports file (render, parse,
round trip, grant, revoke, idempotence), client and connector validation before any command, root
squashing and the volume file's owner and mode from the options, and the volume service's attachments."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from fake_ganesha_node import FakeNode

from zfs_backend.config import load_settings
from zfs_backend.driver import NodeOptions, Volume, VolumeBusy, ZfsNfsDriver
from zfs_backend.driver.access import client_address
from zfs_backend.driver.errors import InvalidClient
from zfs_backend.driver.nfs import (
    ExportEntry,
    ExportSecurity,
    GaneshaExports,
    parse_exports,
    render_export,
    validate_client,
)
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import ConfigError, UsageError
from zfs_backend.zfs import ZFS_FUSE_07, Zfs
from zfs_backend.zfs.names import parse_dataset

DS_A = parse_dataset("tank/volumes/volume-a")
DS_B = parse_dataset("tank/volumes/volume-b")

HOSTILE_CLIENTS: list[object] = [
    "",
    " 198.18.0.1",
    "198.18.0.1\n",
    "198.18.0.1; Access_Type = RW",
    "198.18.0.1}",
    "198.18.0.0/24",
    "*",
    "node1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "255.255.255.255",
    "fe80::1%eth0",
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "::ffff:198.18.0.1",
    "::ffff:127.0.0.1",
    "0.1.2.3",
    "240.0.0.1",
    "ff02::1",
    "1.2.3",
    3232235521,
    None,
    b"198.18.0.1",
]


def exports(node: FakeNode, security: ExportSecurity | None = None) -> GaneshaExports:
    return GaneshaExports(node.host, DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE, (3, 4), security)


# ---- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("198.18.0.1", "198.18.0.1"), ("2001:DB8::0:1", "2001:db8::1"), ("FD00::0:5", "fd00::5")],
)
def test_client_addresses_canonical(given: str, canonical: str) -> None:
    assert validate_client(given) == canonical


@pytest.mark.parametrize("bad", HOSTILE_CLIENTS)
def test_hostile_client_addresses_refused(bad: object) -> None:
    with pytest.raises(InvalidClient) as e:
        validate_client(bad)
    assert isinstance(e.value, UsageError) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "connector",
    [None, {}, {"ip": None}, {"ip": ""}, {"host": "h"}, {"ip": "x"}, {"ip": "10.0.0.0/8"}, "1.2.3.4"],
)
def test_connector_without_valid_ip_refused(connector: Any) -> None:
    with pytest.raises(InvalidClient, match=r"ip|address|connector"):
        client_address(connector)


def test_connector_ip() -> None:
    assert client_address({"ip": "198.18.0.1", "host": "h", "initiator": None}) == "198.18.0.1"


# ---- rendering and parsing ------------------------------------------------------------------------


def test_export_without_grants_grants_nobody() -> None:
    text = render_export(ExportEntry(DS_A, 101, "/tank/volumes/volume-a"), (3, 4))
    assert "Access_Type = None;" in text
    assert "CLIENT" not in text and "Access_Type = RW" not in text
    assert "Squash = Root_Squash;" in text  # the default: secure
    assert "Anonymous_Uid = 65534;" in text and "Anonymous_Gid = 65534;" in text


def test_grants_render_as_one_client_block() -> None:
    e = ExportEntry(DS_A, 101, "/tank/volumes/volume-a", ("198.18.0.13", "198.18.0.1", "2001:db8::1"))
    text = render_export(e, (3,), ExportSecurity(root_squash=False, anonymous_uid=64055, anonymous_gid=64055))
    export_level, client_block = text.split("    CLIENT {\n")
    assert "Access_Type = None;" in export_level and "Squash = No_Root_Squash;" in export_level
    assert "Anonymous_Uid = 64055;" in export_level
    assert client_block.startswith("        Clients = 198.18.0.1, 198.18.0.13, 2001:db8::1;\n")
    assert "        Access_Type = RW;\n    }\n}\n" in client_block


@pytest.mark.parametrize(
    "clients", [(), ("198.18.0.1",), ("10.0.0.2", "10.0.0.10", "fd00::5")], ids=["none", "one", "several"]
)
@pytest.mark.parametrize(
    "security", [ExportSecurity(), ExportSecurity(False, 0, 0)], ids=["squash", "no-squash"]
)
def test_round_trip(clients: tuple[str, ...], security: ExportSecurity) -> None:
    e = ExportEntry(DS_A, 101, "/tank/volumes/volume-a", clients)
    f = ExportEntry(DS_B, 102, "/tank/volumes/volume-b", ("198.18.0.1",))
    foreign = "# hand-written\nEXPORT { Export_Id = 7; Path = /srv; CLIENT { Clients = *; } }\n"
    text = foreign + render_export(e, (3, 4), security) + render_export(f, (3, 4), security)
    entries, rest = parse_exports(text)
    assert entries == {str(DS_A): e, str(DS_B): f}
    assert rest == foreign  # the hand-written `Clients = *` is not ours and not read as a grant
    assert render_export(entries[str(DS_A)], (3, 4), security) == render_export(e, (3, 4), security)


def test_parse_drops_tampered_grants() -> None:
    text = render_export(ExportEntry(DS_A, 101, "/tank/volumes/volume-a", ("198.18.0.1",)), (3,))
    text = text.replace("Clients = 198.18.0.1;", "Clients = 198.18.0.1, *, 10.0.0.0/8, evil, 0.0.0.0;")
    assert parse_exports(text)[0][str(DS_A)].clients == ("198.18.0.1",)


def test_render_refuses_unvalidated_clients() -> None:
    with pytest.raises(InvalidClient):
        render_export(ExportEntry(DS_A, 101, "/tank/volumes/volume-a", ("*",)), (3,))


@pytest.mark.parametrize(
    "kwargs",
    [{"anonymous_uid": -2}, {"anonymous_gid": 2**32 - 1}, {"anonymous_uid": True}, {"root_squash": 1}],
)
def test_export_security_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ExportSecurity(**kwargs)


# ---- grant / revoke on the server's file ------------------------------------------------------------


def test_grant_revoke_live() -> None:
    node = FakeNode("EXPORT { Export_Id = 100; Path = /srv; }\n")
    ex = exports(node)
    ex.add(DS_A, "/tank/volumes/volume-a")
    assert ex.get(DS_A) == ExportEntry(DS_A, 101, "/tank/volumes/volume-a")
    writes, reloads = node.writes(), node.reloads()
    entry = ex.grant(DS_A, "198.18.0.13")
    assert entry is not None and entry.clients == ("198.18.0.13",)
    assert "Clients = 198.18.0.13;" in node.text and (node.writes(), node.reloads()) == (
        writes + 1,
        reloads + 1,
    )
    assert ex.grant(DS_A, "198.18.0.13") == entry  # idempotent: no write, no reload
    assert (node.writes(), node.reloads()) == (writes + 1, reloads + 1)
    ex.grant(DS_A, "198.18.0.1")
    assert ex.get(DS_A) == ExportEntry(DS_A, 101, "/tank/volumes/volume-a", ("198.18.0.1", "198.18.0.13"))
    assert ex.add(DS_A, "/tank/volumes/volume-a").clients == (
        "198.18.0.1",
        "198.18.0.13",
    )  # ensure keeps grants
    assert ex.revoke(DS_A, "198.18.0.13") == ("198.18.0.13",)
    assert ex.revoke(DS_A, "198.18.0.13") == ()
    assert ex.get(DS_A) == ExportEntry(DS_A, 101, "/tank/volumes/volume-a", ("198.18.0.1",))
    ex.grant(DS_A, "198.18.0.12")
    assert ex.revoke_all(DS_A) == ("198.18.0.1", "198.18.0.12")  # every client (force detach)
    assert "CLIENT" not in node.text and "Path = /srv;" in node.text


def test_grant_needs_an_export_and_changes_nothing_without() -> None:
    node = FakeNode()
    ex = exports(node)
    assert ex.grant(DS_A, "198.18.0.1") is None
    assert ex.revoke(DS_A, "198.18.0.1") == ()
    assert node.writes() == 0 and node.reloads() == 0


@pytest.mark.parametrize("bad", HOSTILE_CLIENTS)
def test_hostile_grant_runs_nothing(bad: Any) -> None:
    node = FakeNode()
    ex = exports(node)
    ex.add(DS_A, "/tank/volumes/volume-a")
    before, calls = node.text, len(node.log)
    with pytest.raises(InvalidClient):
        ex.grant(DS_A, bad)
    with pytest.raises(InvalidClient):
        ex.revoke(DS_A, bad)
    assert node.text == before and len(node.log) == calls


def test_remove_returns_grants_and_add_restores_them() -> None:
    node = FakeNode()
    ex = exports(node)
    ex.add(DS_A, "/tank/volumes/volume-a")
    ex.grant(DS_A, "198.18.0.1")
    removed = ex.remove(DS_A)
    assert removed is not None and removed.clients == ("198.18.0.1",)
    assert ex.entries() == {}
    assert ex.add(DS_A, removed.path, removed.clients) == removed


def test_open_exports_of_an_older_version_are_closed_on_the_next_change() -> None:
    legacy = (
        "# zfs-backend export dataset=tank/volumes/volume-a\nEXPORT {\n    Export_Id = 100;\n"
        '    Path = "/tank/volumes/volume-a";\n    Pseudo = "/tank/volumes/volume-a";\n'
        "    Protocols = 3, 4;\n    Transports = TCP;\n    Access_Type = RW;\n    Squash = No_Root_Squash;\n"
        "    SecType = sys;\n    FSAL {\n        Name = VFS;\n    }\n}\n# end zfs-backend export\n"
    )
    node = FakeNode(legacy)
    ex = exports(node)
    assert ex.get(DS_A) == ExportEntry(DS_A, 100, "/tank/volumes/volume-a")
    ex.add(DS_B, "/tank/volumes/volume-b")
    assert "Access_Type = RW" not in node.text and node.text.count("Access_Type = None;") == 2


# ---- the driver ---------------------------------------------------------------------------------


def driver(node: FakeNode, **options: Any) -> ZfsNfsDriver:
    d = ZfsNfsDriver(
        NodeOptions(node="node1", export_address="198.18.0.11", **options), node.host, activity_kinds=list
    )
    d.do_setup()
    d._zfs = Zfs(node.host, dialect=ZFS_FUSE_07)
    return d


def test_driver_setup_passes_squashing_to_the_exports() -> None:
    node = FakeNode(datasets=("tank/volumes",))
    assert driver(node).exports.security == ExportSecurity(True, 65534, 65534)
    d = driver(node, secure_file_operations=False, anonymous_uid=64055, anonymous_gid=64056)
    assert d.exports.security == ExportSecurity(False, 64055, 64056)


@pytest.mark.parametrize(
    ("options", "owner", "mode", "squash"),
    [
        ({}, "65534:65534", "0660", "Root_Squash"),
        ({"anonymous_uid": 64055, "anonymous_gid": 64055}, "64055:64055", "0660", "Root_Squash"),
        ({"secure_file_permissions": False}, "65534:65534", "0666", "Root_Squash"),
        ({"secure_file_operations": False}, "0:0", "0660", "No_Root_Squash"),
    ],
)
def test_create_export_sets_file_access_before_exporting(
    options: dict[str, Any], owner: str, mode: str, squash: str
) -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    node.stat = "1000:1000 644\n"  # neither owner nor mode right yet
    d = driver(node, **options)
    v = Volume(id="a", size=1)
    assert d.create_export(None, v)["provider_location"] == "198.18.0.11:/tank/volumes/volume-a"
    path = "/tank/volumes/volume-a/volume"
    chown, chmod = node.log.index(("chown", owner, path)), node.log.index(("chmod", mode, path))
    assert max(chown, chmod) < next(i for i, a in enumerate(node.log) if a[0] == "tee")
    assert f"Squash = {squash};" in node.text and "CLIENT" not in node.text


def test_file_access_left_alone_when_right_already() -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    node.stat = "65534:65534 660\n"  # e.g. a replica received from a node with the same options
    driver(node).create_export(None, Volume(id="a", size=1))
    assert not [a for a in node.log if a[0] in ("chown", "chmod")]
    node.stat = "65534:65534 666\n"
    driver(node).create_export(None, Volume(id="a", size=1))
    assert [a for a in node.log if a[0] in ("chown", "chmod")] == [
        ("chmod", "0660", "/tank/volumes/volume-a/volume")
    ]


def test_initialize_and_terminate_connection_grant_and_revoke() -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    d = driver(node)
    v = Volume(id="a", size=1)
    d.create_export(None, v)
    info = d.initialize_connection(v, {"ip": "198.18.0.13", "host": "compute1"})
    assert (
        info["driver_volume_type"] == "nfs" and info["data"]["export"] == "198.18.0.11:/tank/volumes/volume-a"
    )
    assert info["data"]["options"].startswith("-o vers=3,") and info["data"]["name"] == "volume"
    d.initialize_connection(v, {"ip": "198.18.0.14"})
    assert d.exports.get(DS_A).clients == ("198.18.0.13", "198.18.0.14")  # type: ignore[union-attr]
    d.terminate_connection(v, {"ip": "198.18.0.13"})
    assert d.exports.get(DS_A).clients == ("198.18.0.14",)  # type: ignore[union-attr]
    d.terminate_connection(v, {"ip": "198.18.0.13"})  # not granted any more: not an error
    d.terminate_connection(v, None)  # force detach: everybody
    assert d.exports.get(DS_A).clients == ()  # type: ignore[union-attr]
    d.remove_export(None, v)
    with pytest.raises(ConfigError, match="not exported"):
        d.initialize_connection(v, {"ip": "198.18.0.13"})


@pytest.mark.parametrize("connector", [None, {}, {"ip": "*"}, {"ip": "198.18.0.0/24"}, {"ip": "a;b"}])
def test_bad_connector_refused_before_any_command(connector: Any) -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    d = driver(node)
    d.create_export(None, Volume(id="a", size=1))
    text, calls = node.text, len(node.log)
    with pytest.raises(InvalidClient):
        d.initialize_connection(Volume(id="a", size=1), connector)
    if connector is not None:  # None is a force detach for terminate_connection
        with pytest.raises(InvalidClient):
            d.terminate_connection(Volume(id="a", size=1), connector)
    assert node.text == text and len(node.log) == calls


# ---- options ------------------------------------------------------------------------------------


def test_secure_options_from_vars_and_defaults() -> None:
    o = NodeOptions(node="node1")
    assert (o.secure_file_operations, o.secure_file_permissions) == (True, True)
    assert (o.file_owner, o.file_mode) == ((65534, 65534), 0o660)
    o = NodeOptions.from_vars(
        "node1",
        {
            "zfs_backend_volume_secure_file_operations": False,
            "zfs_backend_volume_secure_file_permissions": False,
            "zfs_backend_volume_anonymous_uid": 64055,
        },
    )
    assert (o.file_owner, o.file_mode) == ((0, 0), 0o666)
    assert o.export_security == ExportSecurity(False, 64055, 65534)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secure_file_operations": "false"},
        {"secure_file_permissions": 0},
        {"anonymous_uid": -1},
        {"anonymous_gid": 2**32},
        {"anonymous_uid": True},
        {"anonymous_gid": "65534"},
    ],
)
def test_secure_options_refuse_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        NodeOptions(node="node1", **kwargs)


# ---- the volume service -------------------------------------------------------------------------


class RecordingDriver(ZfsNfsDriver):
    """A driver whose node calls are recorded, not run."""

    def __init__(self) -> None:
        super().__init__(NodeOptions(node="node1", export_address="198.18.0.11"))
        self.calls: list[tuple[str, Any]] = []

    def create_volume(self, volume: Volume) -> dict[str, Any]:
        self.calls.append(("create_volume", volume.id))
        return {"provider_location": f"198.18.0.11:/tank/volumes/{volume.name}"}

    def create_export(
        self, context: Any, volume: Volume, connector: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.calls.append(("create_export", volume.id))
        return {}

    def initialize_connection(self, volume: Volume, connector: dict[str, Any] | None) -> dict[str, Any]:
        self.calls.append(("initialize_connection", dict(connector or {})))
        return {"driver_volume_type": "nfs", "data": {}}

    def terminate_connection(self, volume: Volume, connector: dict[str, Any] | None, **kwargs: Any) -> bool:
        self.calls.append(("terminate_connection", connector))
        return False


def test_service_attachments_grant_and_revoke(tmp_path: Path) -> None:
    d = RecordingDriver()
    svc = VolumeService(load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home")}), driver_for=lambda n: d)
    svc.create_volume("vol1", 1, "node1")
    d.calls.clear()
    for bad in ({}, {"ip": "*"}, {"ip": "198.18.0.0/24"}):
        with pytest.raises(InvalidClient):
            svc.attach("vol1", bad)
    assert d.calls == [] and svc.get_volume("vol1").status == "available"  # nothing changed
    svc.attach("vol1", {"ip": "198.18.0.1"})
    svc.attach("vol1", {"ip": "198.18.0.13", "host": "compute1"})
    assert d.calls[:2] == [
        ("create_export", svc.get_volume("vol1").id),
        ("initialize_connection", {"ip": "198.18.0.1", "attachment_id": "client-198.18.0.1"}),
    ]
    assert svc.attachments("vol1") == ["198.18.0.1", "198.18.0.13"]
    assert svc.get_volume("vol1").status == "in-use"
    with pytest.raises(VolumeBusy):
        svc.delete_volume("vol1")
    assert svc.detach("vol1", {"ip": "198.18.0.1"}) == ["198.18.0.1"]
    assert svc.get_volume("vol1").status == "in-use"  # one attachment left
    assert svc.detach("vol1") == ["198.18.0.13"]  # every recorded client
    assert ("terminate_connection", {"ip": "198.18.0.13", "attachment_id": "client-198.18.0.13"}) in d.calls
    assert svc.attachments("vol1") == [] and svc.get_volume("vol1").status == "available"


def test_service_database_private_from_the_start(tmp_path: Path) -> None:
    old = os.umask(0)  # nothing may rely on the caller's umask
    try:
        home = tmp_path / "home" / "deeper"
        svc = VolumeService(
            load_settings({"ZFS_BACKEND_HOME": str(home)}), driver_for=lambda n: RecordingDriver()
        )
        svc.create_volume("vol1", 1, "node1")
    finally:
        os.umask(old)
    for d in (home.parent, home):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = list(home.iterdir())
    assert home / "volumes.db" in files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
