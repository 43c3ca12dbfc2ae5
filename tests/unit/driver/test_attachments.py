"""Grants counted per attachment, without a node: the attachment lines of the exports file (render,
parse, tampering, a file of an older version), the driver's connect/disconnect with two attachments
from one host, force detach, ``release_export``, the volume service's attachment records, and the
node commands the driver sends for the volume file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fake_ganesha_node import FakeNode

from zfs_backend.config import load_settings
from zfs_backend.driver import NodeOptions, Volume, ZfsNfsDriver, failover
from zfs_backend.driver.access import same_client_count
from zfs_backend.driver.errors import InvalidAttachment, UnsafeVolumeFile
from zfs_backend.driver.nfs import Attachment, ExportEntry, parse_exports, render_export
from zfs_backend.driver.service import VolumeService
from zfs_backend.errors import ConfigError
from zfs_backend.zfs import ZFS_FUSE_07, Zfs
from zfs_backend.zfs.names import parse_dataset

DS_A = parse_dataset("tank/volumes/volume-a")
PATH_A = "/tank/volumes/volume-a"
HOST = "198.18.0.13"


# ---- the file -----------------------------------------------------------------------------------


def test_entry_clients_are_its_attachments_addresses() -> None:
    e = ExportEntry(DS_A, 101, PATH_A, ("198.18.0.1",), (Attachment("a1", HOST), Attachment("a2", HOST)))
    assert e.clients == ("198.18.0.1", HOST)
    assert [a.id for a in e.attachments] == ["a1", "a2", "client-198.18.0.1"]
    assert ExportEntry(DS_A, 101, PATH_A, (HOST,)) == ExportEntry(
        DS_A, 101, PATH_A, (), (Attachment(f"client-{HOST}", HOST),)
    )
    with pytest.raises(InvalidAttachment, match="already attached from"):
        ExportEntry(DS_A, 101, PATH_A, (), (Attachment("a1", HOST), Attachment("a1", "198.18.0.1")))


@pytest.mark.parametrize("bad", ["", "a b", "-a", "a;b", "a\n", "x" * 129, "client-198.18.0.2", None, 5])
def test_bad_attachment_ids_refused(bad: Any) -> None:
    with pytest.raises(InvalidAttachment):
        Attachment(bad, HOST)


def test_attachments_round_trip_as_comments() -> None:
    e = ExportEntry(DS_A, 101, PATH_A, (), (Attachment("a1", HOST), Attachment("a2", HOST)))
    text = render_export(e, (3, 4))
    assert text.splitlines()[:3] == [
        "# zfs-backend export dataset=tank/volumes/volume-a",
        f"# zfs-backend attachment a1 {HOST}",
        f"# zfs-backend attachment a2 {HOST}",
    ]
    assert text.count("Clients = ") == 1 and f"Clients = {HOST};" in text  # one grant, two holders
    assert parse_exports(text)[0] == {str(DS_A): e}


def test_a_file_of_an_older_version_gets_default_attachments() -> None:
    old = render_export(ExportEntry(DS_A, 101, PATH_A, (HOST,)), (3,)).replace(
        f"# zfs-backend attachment client-{HOST} {HOST}\n", ""
    )
    assert "attachment" not in old
    entry = parse_exports(old)[0][str(DS_A)]
    assert entry.attachments == (Attachment(f"client-{HOST}", HOST),)


def test_parse_drops_tampered_attachment_lines() -> None:
    text = render_export(ExportEntry(DS_A, 101, PATH_A, (), (Attachment("a1", HOST),)), (3,))
    forged = text.replace(
        f"# zfs-backend attachment a1 {HOST}\n",
        f"# zfs-backend attachment a1 {HOST}\n"
        "# zfs-backend attachment a2 198.18.0.99\n"  # not granted: no attachment, no grant
        "# zfs-backend attachment a;b 198.18.0.13\n"
        "# zfs-backend attachment a3 *\n",
    )
    entry = parse_exports(forged)[0][str(DS_A)]
    assert entry.attachments == (Attachment("a1", HOST),) and entry.clients == (HOST,)
    twice = text.replace(
        f"# zfs-backend attachment a1 {HOST}\n",
        f"# zfs-backend attachment a1 {HOST}\n# zfs-backend attachment a1 198.18.0.14\n",
    ).replace(f"Clients = {HOST};", f"Clients = {HOST}, 198.18.0.14;")
    assert parse_exports(twice)[0][str(DS_A)].clients == (HOST, "198.18.0.14")  # the grants stay


# ---- the driver ---------------------------------------------------------------------------------


def driver(node: FakeNode, **options: Any) -> ZfsNfsDriver:
    d = ZfsNfsDriver(
        NodeOptions(node="node1", export_address="198.18.0.11", **options), node.host, activity_kinds=list
    )
    d.do_setup()
    d._zfs = Zfs(node.host, dialect=ZFS_FUSE_07)
    return d


def exported() -> tuple[FakeNode, ZfsNfsDriver, Volume]:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    d = driver(node)
    v = Volume(id="a", size=1)
    d.create_export(None, v)
    return node, d, v


def clients(d: ZfsNfsDriver) -> tuple[str, ...]:
    entry = d.exports.get(DS_A)
    assert entry is not None
    return entry.clients


def test_two_attachments_from_one_host() -> None:
    _node, d, v = exported()
    d.initialize_connection(v, {"ip": HOST, "attachment_id": "att-1"})
    d.initialize_connection(v, {"ip": HOST, "attachment_id": "att-2"})
    d.initialize_connection(v, {"ip": "198.18.0.14"})
    assert clients(d) == (HOST, "198.18.0.14")
    assert d.terminate_connection(v, {"ip": HOST, "attachment_id": "att-1"}) is True  # att-2 holds it
    assert clients(d) == (HOST, "198.18.0.14")
    assert d.terminate_connection(v, {"ip": HOST, "attachment_id": "att-2"}) is False
    assert clients(d) == ("198.18.0.14",)
    assert d.terminate_connection(v, None) is False  # force detach: everybody
    assert clients(d) == ()


def test_terminate_without_an_id_ends_every_attachment_of_the_address() -> None:
    _node, d, v = exported()
    d.initialize_connection(v, {"ip": HOST, "attachment_id": "att-1"})
    d.initialize_connection(v, {"ip": HOST})
    assert d.terminate_connection(v, {"ip": HOST}) is False and clients(d) == ()


def test_an_attachment_id_of_another_host_changes_nothing() -> None:
    node, d, v = exported()
    d.initialize_connection(v, {"ip": HOST, "attachment_id": "att-1"})
    text = node.text
    with pytest.raises(InvalidAttachment, match=r"att-1 is already attached from 198\.18\.0\.13"):
        d.initialize_connection(v, {"ip": "198.18.0.14", "attachment_id": "att-1"})
    assert node.text == text


@pytest.mark.parametrize("bad", ["a b", "x;y", "-x", 7])
def test_bad_attachment_id_refused_before_any_command(bad: Any) -> None:
    node, d, v = exported()
    calls = len(node.log)
    with pytest.raises(InvalidAttachment):
        d.initialize_connection(v, {"ip": HOST, "attachment_id": bad})
    with pytest.raises(InvalidAttachment):
        d.terminate_connection(v, {"ip": HOST, "attachment_id": bad})
    assert len(node.log) == calls


def test_release_export_keeps_an_attached_export() -> None:
    _node, d, v = exported()
    d.initialize_connection(v, {"ip": HOST})
    assert d.release_export(None, v) is False and d.exports.get(DS_A) is not None
    d.terminate_connection(v, {"ip": HOST})
    assert d.release_export(None, v) is True and d.exports.get(DS_A) is None


def test_remove_and_add_keep_the_attachments() -> None:
    _node, d, v = exported()
    d.initialize_connection(v, {"ip": HOST, "attachment_id": "att-1"})
    d.initialize_connection(v, {"ip": HOST, "attachment_id": "att-2"})
    removed = d.exports.remove(DS_A)
    assert removed is not None
    d.export(DS_A, (), removed.attachments)
    assert d.exports.get(DS_A) == removed


def test_cinder_counts_its_attachments_per_address() -> None:
    connectors = [{"ip": HOST}, {"ip": HOST, "host": "c1"}, {"ip": "198.18.0.14"}, None, {"ip": "bad"}]
    assert same_client_count(connectors, HOST) == 2
    assert same_client_count(connectors, "198.18.0.14") == 1


# ---- the volume file, on the node -----------------------------------------------------------------


def test_file_operations_are_node_commands_of_the_nodes_binary() -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    d = driver(node, node_bin="/opt/zfs-backend/bin/zfs-backend")
    node.stat = "1000:1000 644\n"
    d.create_export(None, Volume(id="a", size=1))
    assert (
        "/opt/zfs-backend/bin/zfs-backend",
        "volume-file",
        "access",
        PATH_A,
        "65534",
        "65534",
        "660",
    ) in node.log
    assert ("/opt/zfs-backend/bin/zfs-backend", "exports-change") in node.log
    assert not [a for a in node.log if a[0] in ("truncate", "chmod", "stat") and len(a) > 3]


def test_a_refusal_on_the_node_is_raised_as_itself() -> None:
    node = FakeNode(datasets=("tank/volumes", str(DS_A)))
    d = driver(node)
    respond = node.respond

    def planted(argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        if argv[1:2] == ("volume-file",):
            return (
                1,
                '{"error": "refusing to touch /x/volume: it is a symbolic link", "type": "UnsafeVolumeFile"}',
                "",
            )
        return respond(argv, stdin)

    node.host.responder = planted
    msg = r"^node1: refusing to touch /x/volume: it is a symbolic link$"
    with pytest.raises(UnsafeVolumeFile, match=msg):
        d.create_export(None, Volume(id="a", size=1))
    assert d.exports.get(DS_A) is None  # not exported


# ---- the volume service -------------------------------------------------------------------------


class Recording(ZfsNfsDriver):
    def __init__(self) -> None:
        super().__init__(NodeOptions(node="node1", export_address="198.18.0.11"))
        self.calls: list[tuple[str, Any]] = []

    def create_volume(self, volume: Volume) -> dict[str, Any]:
        return {"provider_location": f"198.18.0.11:/tank/volumes/{volume.name}"}

    def create_export(self, context: Any, volume: Volume, connector: Any = None) -> dict[str, Any]:
        return {}

    def initialize_connection(self, volume: Volume, connector: Any) -> dict[str, Any]:
        self.calls.append(("init", dict(connector)))
        return {}

    def terminate_connection(self, volume: Volume, connector: Any, **kwargs: Any) -> bool:
        self.calls.append(("term", connector))
        return False


def test_service_records_attachments_by_id(tmp_path: Path) -> None:
    d = Recording()
    svc = VolumeService(load_settings({"ZFS_BACKEND_HOME": str(tmp_path / "home")}), driver_for=lambda n: d)
    svc.create_volume("vol1", 1, "node1")
    svc.attach("vol1", {"ip": HOST}, attachment="vm-1")
    svc.attach("vol1", {"ip": HOST, "attachment_id": "vm-2"})
    svc.attach("vol1", {"ip": "198.18.0.14"})
    assert d.calls == [
        ("init", {"ip": HOST, "attachment_id": "vm-1"}),
        ("init", {"ip": HOST, "attachment_id": "vm-2"}),
        ("init", {"ip": "198.18.0.14", "attachment_id": "client-198.18.0.14"}),
    ]
    assert svc.attachments("vol1") == [HOST, "198.18.0.14"]
    with pytest.raises(InvalidAttachment):
        svc.attach("vol1", {"ip": HOST}, attachment="client-198.18.0.14")
    assert svc.detach("vol1", attachment="vm-1") == [HOST]
    assert d.calls[-1] == ("term", {"ip": HOST, "attachment_id": "vm-1"})
    assert svc.attachment_records("vol1") == [("vm-2", HOST), ("client-198.18.0.14", "198.18.0.14")]
    assert svc.get_volume("vol1").status == "in-use"
    assert svc.detach("vol1", {"ip": HOST}) == [HOST]  # every attachment of the address
    assert svc.detach("vol1") == ["198.18.0.14"]
    assert svc.attachment_records("vol1") == [] and svc.get_volume("vol1").status == "available"


def test_service_takes_over_attachments_of_an_older_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    svc = VolumeService(load_settings({"ZFS_BACKEND_HOME": str(home)}), driver_for=lambda n: Recording())
    vol = svc.create_volume("vol1", 1, "node1")
    with sqlite3.connect(home / "volumes.db") as db:
        db.execute("INSERT INTO attachments VALUES (?, ?, ?)", (vol.id, HOST, 1.0))
    svc = VolumeService(load_settings({"ZFS_BACKEND_HOME": str(home)}), driver_for=lambda n: Recording())
    assert svc.attachment_records("vol1") == [(f"client-{HOST}", HOST)]


# ---- failover and migration carry the attachments ----------------------------------------------------


class Promotable(FakeNode):
    """A node whose replica can be made writable (``zfs inherit``/``get readonly``) and mounted (``zfs
    mount``/``get mounted``); the volume file is there (``stat``) only while it is mounted."""

    def __init__(self, *a: Any, mounted: bool = True, **k: Any) -> None:
        super().__init__(*a, **k)
        self.mounted = mounted

    def respond(self, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        if argv[:2] == ("zfs", "get") and argv[-2] == "mounted":
            return 0, f"mounted\t{'yes' if self.mounted else 'no'}\n", ""
        if argv[:2] == ("zfs", "mount"):
            self.log.append(argv)
            self.mounted = True
            return 0, "", ""
        if argv[0] == "stat" and not self.mounted:
            return 1, "", f"stat: cannot statx '{argv[-1]}': No such file or directory"
        if argv[:3] == ("zfs", "inherit", "readonly"):
            self.log.append(argv)
            return 0, "", ""
        if argv[:2] == ("zfs", "get") and "readonly" in argv:
            self.log.append(argv)
            return 0, "readonly\toff\tdefault\n", ""
        return super().respond(argv, stdin)


def test_promote_exports_the_attachments_it_is_given() -> None:
    node = Promotable(datasets=("tank/volumes", str(DS_A)))
    d = driver(node)
    atts = [Attachment("vm-1", HOST), Attachment("vm-2", HOST)]
    failover.promote(d, Volume(id="a", size=1), ["198.18.0.14"], atts)
    entry = d.exports.get(DS_A)
    assert entry is not None
    assert [(a.id, a.client) for a in entry.attachments] == [
        ("client-198.18.0.14", "198.18.0.14"),
        ("vm-1", HOST),
        ("vm-2", HOST),
    ]
    assert d.terminate_connection(Volume(id="a", size=1), {"ip": HOST, "attachment_id": "vm-1"}) is True


def test_promote_mounts_a_replica_that_was_the_primary_before() -> None:
    """Issue 22: failing back promotes the old primary, unmounted by its quiesce; it is mounted before
    the export reads its volume file (the second failover failed with ``stat ... No such file``)."""
    node = Promotable(datasets=("tank/volumes", str(DS_A)), mounted=False)
    d = driver(node)
    failover.promote(d, Volume(id="a", size=1), [HOST])
    assert node.mounted and ("zfs", "mount", str(DS_A)) in node.log
    entry = d.exports.get(DS_A)
    assert entry is not None and entry.clients == (HOST,)


def test_setup_check_needs_the_nodes_zfs_backend() -> None:
    node = FakeNode(datasets=("tank/volumes",))
    respond = node.respond

    def answers(argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        if argv[:2] == ("zfs", "get") and argv[-2:] == ("type,mounted", "tank/volumes"):
            return 0, "type\tfilesystem\nmounted\tyes\n", ""
        if argv[1:] == ("--version",) and argv[0] == "zfs-backend":
            return 0, "zfs-backend 1\n", ""
        if argv[1:] == ("--version",):
            return 127, "", "sh: 1: exec: x: not found"
        if argv[:2] == ("kill", "-0"):
            return 0, "", ""
        return respond(argv, stdin)

    node.host.responder = answers
    ok = driver(node)
    ok.zfs._dialect = ZFS_FUSE_07  # type: ignore[attr-defined]
    ok.check_for_setup_error()
    bad = driver(node, node_bin="/opt/x/bin/x")
    bad.zfs._dialect = ZFS_FUSE_07  # type: ignore[attr-defined]
    msg = r"^node1: /opt/x/bin/x does not run there: sh: 1: exec: x: not found$"
    with pytest.raises(ConfigError, match=msg):
        bad.check_for_setup_error()
