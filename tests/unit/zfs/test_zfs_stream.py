"""classify_stream on real zfs-fuse 0.7 streams: ``zfs send -i @base @probe`` of a dataset whose head was
changed in one way each (captured from a lab node; see data/streams/)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from zfs_backend.zfs.stream import RECORD_SIZE, classify_stream

STREAMS = Path(__file__).parent / "data" / "streams"
SINCE = int((STREAMS / "base_creation.txt").read_text())


def classify(name: str, **kw: bool):  # type: ignore[no-untyped-def]
    return classify_stream(io.BytesIO((STREAMS / f"{name}.zstream").read_bytes()).read, SINCE, **kw)


@pytest.mark.parametrize("name", ["nochange", "atime"])
def test_noise_is_not_a_change(name: str) -> None:
    got = classify(name, stop_early=False)
    assert got.complete and not got.real, got.reasons
    assert got.describe() == "metadata only (atime)"


@pytest.mark.parametrize("name", ["write4k", "create", "remove"])
def test_data_changes_are_real(name: str) -> None:
    got = classify(name, stop_early=False)
    assert got.real and got.data_records >= 1
    assert got.complete


def test_a_truncate_to_a_block_boundary_sends_no_data_but_is_real_by_ctime() -> None:
    got = classify("truncate", stop_early=False)
    assert got.real and got.data_records == 0 and got.changed_objects == {5}


def test_write_counts_its_bytes() -> None:
    got = classify("write4k", stop_early=False)
    assert got.data_bytes == 4096
    assert "4096 bytes" in got.describe()


@pytest.mark.parametrize("name", ["chmod", "utimes"])
def test_metadata_only_changes_are_real_by_ctime(name: str) -> None:
    got = classify(name, stop_early=False)
    assert got.real and got.data_records == 0 and got.changed_objects
    # the same stream is noise for a base newer than every change (the test is the clock, not the type)
    later = classify_stream(io.BytesIO((STREAMS / f"{name}.zstream").read_bytes()).read, 2**40)
    assert not later.real


def test_stops_at_the_first_change() -> None:
    data = (STREAMS / "write4k.zstream").read_bytes()
    f = io.BytesIO(data)
    got = classify_stream(f.read, SINCE)
    assert got.real and not got.complete
    assert f.tell() < len(data)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[: RECORD_SIZE + 100],  # truncated inside a record
        lambda b: b[:-RECORD_SIZE],  # no END record
        lambda b: b[:8] + b"\0" * 8 + b[16:],  # BEGIN with a wrong magic
        lambda b: b[:RECORD_SIZE] + struct.pack("<II", 99, 0) + b"\0" * (RECORD_SIZE - 8) + b[RECORD_SIZE:],
        lambda b: b"",
    ],
)
def test_what_cannot_be_read_counts_as_a_change(mangle) -> None:  # type: ignore[no-untyped-def]
    data = mangle((STREAMS / "atime.zstream").read_bytes())
    assert classify_stream(io.BytesIO(data).read, SINCE).real


def test_stream_features_are_not_guessed() -> None:
    data = bytearray((STREAMS / "nochange.zstream").read_bytes())
    struct.pack_into("<Q", data, 16, (1 << 2) | 1)  # drr_versioninfo with a feature bit
    got = classify_stream(io.BytesIO(bytes(data)).read, SINCE)
    assert got.real and "features" in got.reasons[0]
