import pytest

from zfs_backend.errors import (
    ActivityError,
    ActivityNotFound,
    CommandFailed,
    InvalidTransition,
    ProtocolError,
)
from zfs_backend.rpc import protocol as P


def test_roundtrip_and_errors():
    line = P.encode(P.request(3, "get", id="act-1"))
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert P.decode(line) == {"id": 3, "op": "get", "args": {"id": "act-1"}}
    for exc in (
        ActivityNotFound("no activity act-1"),
        InvalidTransition("cannot resume activity x: it is running"),
    ):
        back = P.error_from_payload(P.decode(P.encode(P.response(1, error=exc)))["error"])
        assert type(back) is type(exc) and str(back) == str(exc)
    cf = CommandFailed("n1", ["zfs", "recv"], 1, "boom")
    back = P.error_from_payload(P.error_payload(cf))
    assert type(back) is CommandFailed and "boom" in str(back)
    assert type(P.error_from_payload({"type": "ValueError", "message": "x"})) is ActivityError
    assert "internal error" in P.error_payload(KeyError("k"))["message"]


@pytest.mark.parametrize("bad", [b"nope\n", b"[1,2]\n", b"\xff\n"])
def test_decode_rejects(bad):
    with pytest.raises(ProtocolError):
        P.decode(bad)
