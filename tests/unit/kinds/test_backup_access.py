"""Backups as a peer reaches them (kinds.backup_access): begin only under a backup grant of this
peer for that volume, entries record their writer, list/verify/read only granted volumes or own
entries, write only an entry the peer opened; the controller's socket keeps the whole store."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.errors import BackupNotFound, NotGranted
from zfs_backend.kinds import backup_access
from zfs_backend.kinds.backupstore import BackupStore, write_stream
from zfs_backend.replication.authority import PeerAuthority
from zfs_backend.replication.claims import ClaimStore
from zfs_backend.replication.grants import GrantStore

H2 = "act-01M8PGT7V3D9CQNAVHM8MJ3DB5"
H3 = "act-01M8PGTPC6VKKY56B5E10RJMBV"


@pytest.fixture
def env(tmp_path: Path) -> tuple[BackupStore, PeerAuthority]:
    grants = GrantStore(tmp_path / "grants.db")
    auth = PeerAuthority(grants, ClaimStore(tmp_path / "claims.db"), ("tank",))
    return BackupStore(tmp_path / "backups"), auth


def op(env: tuple[BackupStore, PeerAuthority], peer: str | None, verb: str, **args: object) -> Any:
    store, auth = env
    return backup_access.op(store, auth, peer, verb, dict(args))


def backup_grant(env: tuple[BackupStore, PeerAuthority], peer: str, volume: str) -> str:
    return str(env[1].grant_op("add", {"peer": peer, "volume": volume, "allow": ["backup"]})["grant"])


def make_backup(env: tuple[BackupStore, PeerAuthority], peer: str, holder: str, vol: str, bid: str) -> None:
    g = backup_grant(env, peer, vol)
    e = op(env, peer, "begin", volume=vol, backup=bid, holder=holder, grant=g)
    assert isinstance(e, dict) and e["peer"] == peer and e["grant"] == g
    backup_access.admit(env[0], env[1], peer, "backup-write", {"volume": vol, "backup": bid})
    write_stream(env[0], vol, bid, io.BytesIO(b"stream of " + bid.encode()))
    op(env, peer, "commit", volume=vol, backup=bid, holder=holder, snapshot=f"backup-{bid}", guid=7)
    assert env[1].grants.get(g) is None  # consumed with the backup


def test_begin_needs_a_backup_grant_of_this_peer_for_this_volume(env) -> None:
    with pytest.raises(NotGranted, match="no backup grant"):
        op(env, "node2", "begin", volume="v1", backup="b1", holder=H2)
    g = backup_grant(env, "node3", "v1")
    with pytest.raises(NotGranted, match="no backup grant"):
        op(env, "node2", "begin", volume="v1", backup="b1", holder=H2, grant=g)  # node3's
    g2 = backup_grant(env, "node2", "v2")
    with pytest.raises(NotGranted, match="no backup grant"):
        op(env, "node2", "begin", volume="v1", backup="b1", holder=H2, grant=g2)  # another volume's
    assert env[0].list() == []


def test_a_peer_sees_and_reads_only_granted_volumes_or_its_own_entries(env) -> None:
    make_backup(env, "node2", H2, "v1", "b1")
    make_backup(env, "node3", H3, "v3", "b3")
    assert [e["id"] for e in op(env, "node2", "list")] == ["b1"]
    assert [e["id"] for e in op(env, None, "list")] == ["b1", "b3"]
    assert op(env, "node2", "list", volume="v3") == []
    with pytest.raises(NotGranted):
        op(env, "node2", "verify", volume="v3", backup="b3")
    with pytest.raises(NotGranted):
        backup_access.admit(env[0], env[1], "node2", "backup-read", {"volume": "v3", "backup": "b3"})
    backup_access.admit(env[0], env[1], "node2", "backup-read", {"volume": "v1", "backup": "b1"})  # its own
    backup_grant(env, "node2", "v3")  # a restore of v3 granted to node2
    assert [e["id"] for e in op(env, "node2", "verify", volume="v3", backup="b3")] == ["b3"]
    backup_access.admit(env[0], env[1], "node2", "backup-read", {"volume": "v3", "backup": "b3"})


def test_write_commit_and_abort_only_the_peers_own_open_entry(env) -> None:
    g = backup_grant(env, "node3", "v1")
    op(env, "node3", "begin", volume="v1", backup="b1", holder=H3, grant=g)
    with pytest.raises(BackupNotFound):
        backup_access.admit(env[0], env[1], "node2", "backup-write", {"volume": "v1", "backup": "b1"})
    with pytest.raises(BackupNotFound):
        op(env, "node2", "commit", volume="v1", backup="b1", holder=H3, snapshot="s", guid=1)
    assert op(env, "node2", "abort", volume="v1", backup="b1", holder=H3) == {"removed": False}
    g2 = backup_grant(env, "node2", "v1")
    with pytest.raises(NotGranted, match="not node2's"):
        op(env, "node2", "begin", volume="v1", backup="b1", holder=H3, grant=g2)
    assert op(env, "node3", "abort", volume="v1", backup="b1", holder=H3) == {"removed": True}
    assert env[1].grants.get(g) is None and env[0].list() == []
