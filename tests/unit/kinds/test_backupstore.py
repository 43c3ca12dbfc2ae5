"""The backup node's store: entries opened by the agent, streams written only into an opened entry, a
commit that reads the file's size and SHA-256, chains, a corrupted stream refused in one line, abort
that never touches a complete backup, private modes."""

from __future__ import annotations

import io
import os
import stat

import pytest

from zfs_backend.agent.peer_exec import Refused, parse_request
from zfs_backend.errors import AlreadyRunning, BackupCorrupt, BackupError, BackupNotFound, UsageError
from zfs_backend.kinds.backupstore import BackupStore, read_stream, write_stream

H1 = "act-01M8PGT7V3D9CQNAVHM8MJ3DB5"
H2 = "act-01M8PGTPC6VKKY56B5E10RJMBV"


def backup(
    store: BackupStore, vol: str, bid: str, data: bytes, parent: str | None = None, guid: int = 1
) -> dict:
    store.begin(vol, bid, H1, parent)
    write_stream(store, vol, bid, io.BytesIO(data))
    return store.commit(vol, bid, H1, snapshot=f"backup-{bid}", guid=guid)


def test_chain_full_and_incrementals_verified(tmp_path) -> None:
    store = BackupStore(tmp_path / "backups")
    full = backup(store, "v1", "b1", b"full" * 1000, guid=11)
    assert full["size"] == 4000 and full["state"] == "complete" and len(full["sha256"]) == 64
    backup(store, "v1", "b2", b"inc1", parent="b1", guid=12)
    e3 = backup(store, "v1", "b3", b"inc2", parent="b2", guid=13)
    assert e3["base_guid"] == 12
    assert [e["id"] for e in store.verify("v1", "b3")] == ["b1", "b2", "b3"]
    assert [e["id"] for e in store.list("v1")] == ["b1", "b2", "b3"]
    out = io.BytesIO()
    assert read_stream(store, "v1", "b2", out) == 4 and out.getvalue() == b"inc1"
    d = tmp_path / "backups" / "v1"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for f in ("manifest.json", "b1.zstream"):
        assert stat.S_IMODE(os.stat(d / f).st_mode) == 0o600


def test_corrupted_stream_refused_in_one_line(tmp_path) -> None:
    store = BackupStore(tmp_path)
    backup(store, "v1", "b1", b"x" * 100)
    backup(store, "v1", "b2", b"y" * 100, parent="b1")
    path = store.stream_path("v1", "b1")
    with open(path, "r+b") as f:
        f.seek(10)
        f.write(b"Z")
    with pytest.raises(BackupCorrupt) as e:
        store.verify("v1", "b2")
    assert "b1" in str(e.value) and "corrupted" in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 16
    with pytest.raises(BackupCorrupt):
        read_stream(store, "v1", "b1", io.BytesIO())


def test_writes_only_into_an_opened_entry_and_never_over_a_file(tmp_path) -> None:
    store = BackupStore(tmp_path)
    with pytest.raises(BackupNotFound):
        write_stream(store, "v1", "b1", io.BytesIO(b"data"))
    store.begin("v1", "b1", H1)
    write_stream(store, "v1", "b1", io.BytesIO(b"data"))
    with pytest.raises(FileExistsError):
        write_stream(store, "v1", "b1", io.BytesIO(b"again"))
    with pytest.raises(AlreadyRunning):
        store.begin("v1", "b1", H2)
    store.begin("v1", "b1", H1)  # the same holder again (a restart): its partial file goes
    assert not store.stream_path("v1", "b1", partial=True).exists()
    with pytest.raises(BackupNotFound):
        store.commit("v1", "b1", H1, snapshot="s", guid=1)  # nothing written since


def test_abort_drops_only_its_own_unfinished_entry(tmp_path) -> None:
    store = BackupStore(tmp_path)
    backup(store, "v1", "b1", b"done")
    assert store.abort("v1", "b1", H1) == {"removed": False}  # complete: never touched
    store.begin("v1", "b2", H1, "b1")
    write_stream(store, "v1", "b2", io.BytesIO(b"part"))
    assert store.abort("v1", "b2", H2) == {"removed": False}
    assert store.abort("v1", "b2", H1) == {"removed": True}
    assert [e["id"] for e in store.list("v1")] == ["b1"]
    assert not store.stream_path("v1", "b2", partial=True).exists()
    with pytest.raises(BackupError):
        store.begin("v1", "b1", H1)  # exists already
    with pytest.raises(BackupNotFound):
        store.begin("v1", "b3", H1, parent="nope")


@pytest.mark.parametrize("bad", ["../x", "", "a/b", "-rf", "x" * 65])
def test_ids_validated(tmp_path, bad: str) -> None:
    store = BackupStore(tmp_path)
    with pytest.raises(UsageError):
        store.begin(bad, "b1", H1)
    with pytest.raises(UsageError):
        store.begin("v1", bad, H1)


def test_peer_exec_lets_backup_streams_through_with_valid_ids_only() -> None:
    assert parse_request("zfs-backend backup-write v-1 b.2") == ("backup-write", ["v-1", "b.2"])
    assert parse_request("/usr/bin/zfs-backend backup-read v1 b2") == ("backup-read", ["v1", "b2"])
    for bad in (
        "zfs-backend backup-write ../etc b1",
        "zfs-backend backup-read v1",
        "zfs-backend backup-rm v1 b1",
    ):
        with pytest.raises(Refused):
            parse_request(bad)
