from __future__ import annotations

import pytest

from zfs_backend.errors import UnsupportedFeature
from zfs_backend.zfs import lzc
from zfs_backend.zfs.names import parse_snapshot


@pytest.mark.skipif(lzc.available(), reason="pyzfs is importable here")
def test_without_pyzfs_every_call_says_unsupported() -> None:
    s = parse_snapshot("tank/a@s")
    for call in (lambda: lzc.exists(s), lambda: lzc.snapshot([s]), lambda: lzc.send_space(s)):
        with pytest.raises(UnsupportedFeature, match="libzfs_core"):
            call()


def test_error_mapping_by_pyzfs_exception_name() -> None:
    from zfs_backend.errors import DatasetExists, DatasetNotFound, ZfsError

    class DatasetNotFoundError(Exception):
        pass

    class SnapshotExists(Exception):
        pass

    assert isinstance(lzc._map(DatasetNotFoundError("x")), DatasetNotFound)
    assert isinstance(lzc._map(SnapshotExists("x")), DatasetExists)
    assert type(lzc._map(OSError("x"))) is ZfsError
