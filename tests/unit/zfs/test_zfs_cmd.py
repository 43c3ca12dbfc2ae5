from __future__ import annotations

import logging

import pytest

from zfs_backend.errors import (
    BackupCorrupt,
    CommandFailed,
    CommandTimeout,
    DatasetBusy,
    DatasetExists,
    DatasetHasDependents,
    DatasetNotFound,
    DestinationModified,
    HoldNotFound,
    HostKeyMismatch,
    PeerRefused,
    PoolFull,
    StreamFailed,
    StreamMismatch,
    UnsupportedFeature,
    UsageError,
    ZfsBackendError,
    ZfsError,
)
from zfs_backend.hosts.base import Host
from zfs_backend.hosts.fake import FakeHost
from zfs_backend.zfs import cmd


def scripted(table: dict[tuple[str, ...], tuple[int, str, str]]) -> FakeHost:
    def responder(argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        return table.get(argv, (99, "", f"unexpected {argv!r}"))

    return FakeHost(responder, name="n1")


# stderr texts as zfs-fuse 0.7 printed them here
CASES = [
    ("cannot open 'zprobe/nope': dataset does not exist", DatasetNotFound),
    ("cannot open 'nopool': no such pool", DatasetNotFound),
    ("could not find any snapshots to destroy; check snapshot names.", DatasetNotFound),
    ("warning: cannot send 'p/a@s2': incremental source (@s9) does not exist", DatasetNotFound),
    ("cannot create 'zprobe/a': dataset already exists", DatasetExists),
    ("cannot create snapshot 'zprobe/a@s1': dataset already exists", DatasetExists),
    (
        "cannot receive new filesystem stream: destination 'zprobe/b' exists\n"
        "must specify -F to overwrite it",
        DatasetExists,
    ),
    ("cannot destroy 'zprobe/b': dataset is busy", DatasetBusy),
    (
        "umount: /zprobe/cl: target is busy.\n"
        "cannot unmount '/zprobe/cl': umount failed: umount child process failed",
        DatasetBusy,
    ),
    ("cannot create 'zprobe/x': out of space", PoolFull),
    (
        "cannot destroy 'zprobe/b': filesystem has children\nuse '-r' to destroy the following datasets:",
        DatasetHasDependents,
    ),
    ("cannot rollback to 'zprobe/a@s1': more recent snapshots exist", DatasetHasDependents),
    ("cannot destroy 'zprobe/a@s1': snapshot has dependent clones", DatasetHasDependents),
    (
        "cannot receive incremental stream: destination zprobe/b has been modified\n"
        "since most recent snapshot",
        DestinationModified,
    ),
    ("invalid option 'n'\nusage:\n\tsend [-RDp] [-[iI] snapshot] <snapshot>", UnsupportedFeature),
    ("internal error: Function not implemented\nAborted", UnsupportedFeature),
    ("internal error: /usr/lib/zfs/pyzfs.py not found", UnsupportedFeature),
]


@pytest.mark.parametrize(("stderr", "etype"), CASES)
def test_stderr_maps_to_typed_error(stderr: str, etype: type[ZfsError]) -> None:
    host = scripted({("zfs", "x"): (1, "", stderr)})
    with pytest.raises(etype) as ei:
        cmd.run(host, ["zfs", "x"])
    err = ei.value
    assert "\n" not in str(err) and str(err).startswith("n1: ")
    assert isinstance(err.__cause__, CommandFailed)
    assert err.failure.argv == ["zfs", "x"]  # type: ignore[attr-defined]


def test_destination_modified_message_is_whole_sentence() -> None:
    host = scripted({("zfs", "x"): (1, "", CASES[13][0])})
    with pytest.raises(DestinationModified, match="has been modified since most recent snapshot"):
        cmd.run(host, ["zfs", "x"])


def test_unknown_stderr_reraises_command_failed() -> None:
    host = scripted({("zfs", "recv", "p/c"): (1, "", "cannot receive: failed to read from stream")})
    with pytest.raises(CommandFailed) as ei:
        cmd.run(host, ["zfs", "recv", "p/c"])
    assert not isinstance(ei.value, ZfsError)
    assert ei.value.returncode == 1


def test_check_false_returns_result() -> None:
    host = scripted({("zfs",): (2, "", "usage: ...")})
    res = cmd.run(host, ["zfs"], check=False)
    assert res.returncode == 2 and res.err_text == "usage: ..."


def test_only_zfs_and_zpool_run() -> None:
    host = scripted({})
    for argv in (["sh", "-c", "id"], [], ["/sbin/zfs", "list"]):
        with pytest.raises(UsageError):
            cmd.run(host, argv)
    assert host.calls == []


def test_logs_and_times(caplog: pytest.LogCaptureFixture) -> None:
    host = scripted(
        {("zfs", "list"): (0, "x\n", ""), ("zfs", "bad"): (1, "", "cannot open 'p': dataset does not exist")}
    )
    with caplog.at_level(logging.DEBUG, logger="zfs_backend.zfs"):
        cmd.run(host, ["zfs", "list"])
        with pytest.raises(DatasetNotFound):
            cmd.run(host, ["zfs", "bad"])
    msgs = [r.getMessage() for r in caplog.records]
    assert any("zfs list ok in" in m for m in msgs)
    assert any("zfs bad exited 1" in m and "does not exist" in m for m in msgs)


def test_in_flight_counts_running_commands() -> None:
    seen: list[int] = []

    def responder(argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        seen.append(cmd.in_flight("n1"))
        return 0, "", ""

    cmd.run(FakeHost(responder, name="n1"), ["zfs", "list"])
    assert seen == [1]
    assert cmd.in_flight("n1") == 0


class _Raising(Host):
    name = "r"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def run(self, argv, *, input=None, timeout=None, check=True):  # type: ignore[no-untyped-def]
        raise self.exc

    def stream_argv(self, argv):  # type: ignore[no-untyped-def]
        return list(argv)


def test_timeout_passes_through_and_counter_recovers() -> None:
    with pytest.raises(CommandTimeout):
        cmd.run(_Raising(CommandTimeout("r", ["zfs"], 1.0)), ["zfs", "list"])
    assert cmd.in_flight("r") == 0


def test_missing_binary_from_host() -> None:
    host = _Raising(CommandFailed("r", ["zfs", "list"], 127, "zfs: command not found"))
    with pytest.raises(CommandFailed):
        cmd.run(host, ["zfs", "list"])
    assert cmd.run(host, ["zfs", "list"], check=False).returncode == 127


# a failed stream's message as activity.stream.StreamRun words it (stderr lines joined on " | ")
STREAM_CASES = [
    (
        "consumer exited 1: cannot receive incremental stream: destination tank/r has been modified | "
        "since most recent snapshot",
        DestinationModified,
    ),
    ("consumer exited 1: cannot receive: out of space", PoolFull),
    (
        "consumer exited 1: cannot receive incremental stream: most recent snapshot of tank/r does not "
        "match incremental source",
        StreamMismatch,
    ),
    (
        "consumer exited 1: cannot receive new filesystem stream: destination has snapshots",
        DatasetHasDependents,
    ),
    ("consumer exited 255: Host key verification failed.", HostKeyMismatch),
    ("consumer exited 255: node2: Permission denied (publickey).", PeerRefused),
    ("consumer exited 255: Unable to negotiate: no matching cipher found", PeerRefused),
    ("consumer exited 1: zfs-backend peer-exec: refused by the peer (node1): not granted", PeerRefused),
    ("producer exited 1: backup b1 of volume v: stream file is corrupted (sha256 mismatch)", BackupCorrupt),
    ("consumer exited 1: cannot receive: destination 'tank/r' exists", DatasetExists),
    ("producer exited 1: cannot open 'tank/v@s': dataset does not exist", DatasetNotFound),
    ("consumer exited 255: Connection closed by 198.18.172.12 port 22", StreamFailed),
    ("stream ended early", StreamFailed),
]


@pytest.mark.parametrize(("message", "etype"), STREAM_CASES)
def test_one_classifier_types_a_failed_stream(message: str, etype: type[ZfsBackendError]) -> None:
    err = cmd.stream_error(message)
    assert type(err) is etype
    assert str(err) == message  # the whole message: the activity's error says what each side said


def test_stream_only_patterns_never_type_a_command() -> None:
    """What only a stream says (ssh, a receive's refusal of a stream) leaves a command's failure as it was."""
    for message, etype in STREAM_CASES:
        if cmd.classify(message, stream=True) is not cmd.classify(message):
            failure = CommandFailed("n1", ["zfs", "receive", "tank/r"], 1, message)
            assert cmd.map_failure(failure) is failure, etype


def test_the_modified_target_is_read_from_the_typed_error_only() -> None:
    err = cmd.stream_error(STREAM_CASES[0][0])
    assert cmd.modified_target(err) == "tank/r"
    assert (
        cmd.modified_target(StreamFailed("destination tank/r has been modified since most recent snapshot"))
        is None
    )


def test_a_stream_side_starts_through_cmd(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class Spawning(FakeHost):
        def spawn(self, argv: object, **kw: object) -> object:  # type: ignore[override]
            started.append(list(argv))  # type: ignore[call-overload]
            return "proc"

    host = Spawning(lambda argv, stdin: (0, "", ""), name="n1")
    assert cmd.spawn_stream(host, ["zfs", "send", "tank/v@s"], stdin=None, stdout=None, stderr=None) == "proc"
    assert started == [["zfs", "send", "tank/v@s"]]
    with pytest.raises(UsageError):
        cmd.spawn_stream(host, [], stdin=None, stdout=None, stderr=None)


def test_a_release_of_a_tag_not_held_is_typed() -> None:
    failure = CommandFailed(
        "n1",
        ["zfs", "release", "zb-x", "tank/v@s"],
        1,
        "cannot release hold from snapshot 'tank/v@s': no such tag on this dataset",
    )
    assert isinstance(cmd.map_failure(failure), HoldNotFound)
