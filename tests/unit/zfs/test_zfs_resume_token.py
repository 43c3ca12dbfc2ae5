"""``receive_resume_token`` decoding: the token captured on a real OpenZFS 2.3 node, tokens built in
both encodings libnvpair reads (native, as the kernel writes them; XDR), and every way a token from
another node can be corrupt or hostile."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from zfs_backend.zfs.parse import ParseError
from zfs_backend.zfs.resume_token import ResumeToken, decode_resume_token, encode_resume_token

DATA = Path(__file__).parent / "data"
CAPTURED = json.loads((DATA / "openzfs_2_captured.json").read_text())["files"]["openzfs_2_send_nvP_token.txt"]
REAL = CAPTURED["argv"][-1]  # the token of a cut `zfs receive -s` of tank/fixture@s1 (full stream)

PAIRS: dict[str, int | str | bool] = {
    "fromguid": 0x1122334455667788,
    "object": 2,
    "offset": 786432,
    "bytes": 922248,
    "toguid": 0xB47FAFF0F17F2BD0,
    "toname": "tank/fs@s2",
    "embedok": True,
}


def test_the_captured_token() -> None:
    tok = decode_resume_token(REAL)
    assert tok == ResumeToken(
        toguid=13006307698247936976, toname="tank/fixture@s1", object=2, offset=786432, bytes=922248
    )
    assert tok.fromguid is None  # a full stream


def test_native_encoder_writes_what_the_kernel_writes() -> None:
    tok = decode_resume_token(REAL)
    mine = encode_resume_token(dict(tok.fields))
    assert mine == REAL  # byte for byte: packing, compression level, checksum


@pytest.mark.parametrize(
    ("encoding", "order"), [("native", "<"), ("native", ">"), ("xdr", "<"), ("xdr", ">")]
)
def test_round_trip(encoding: str, order: str) -> None:
    tok = decode_resume_token(encode_resume_token(PAIRS, encoding=encoding, order=order))
    assert (tok.toguid, tok.toname, tok.fromguid, tok.object, tok.offset, tok.bytes) == (
        PAIRS["toguid"],
        "tank/fs@s2",
        PAIRS["fromguid"],
        2,
        786432,
        922248,
    )
    assert tok.fields["embedok"] is True


def _checksummed(packed: bytes, declared: int | None = None) -> str:
    compressed = zlib.compress(packed)
    n = len(compressed) // 4
    word0 = sum(int.from_bytes(compressed[i * 4 : i * 4 + 4], "little") for i in range(n)) & ((1 << 64) - 1)
    return f"1-{word0:x}-{(declared or len(packed)):x}-{compressed.hex()}"


def _packed(token: str) -> bytes:
    return zlib.decompress(bytes.fromhex(token.split("-")[3]))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1-abc",
        "1-abc; rm -rf /",
        "2-" + REAL.split("-", 1)[1],  # another version
        REAL[:-2] + ("00" if not REAL.endswith("00") else "11"),  # an edited byte: checksum
        REAL.replace("-b8-", "-b9-"),  # declared length
        "1-0-10-00",  # not zlib
        _checksummed(b"\x07\x01\x00\x00" + bytes(12)),  # unknown encoding
        _checksummed(_packed(encode_resume_token({"object": 1}))),  # no toguid/toname
        _checksummed(_packed(encode_resume_token(PAIRS))[:-30]),  # a pair cut short
        _checksummed(bytes(1 << 17), declared=1 << 17),  # beyond MAX_PACKED
        "1-" + "f" * 17 + "-b8-00",
    ],
)
def test_corrupt_or_hostile_tokens_refused(bad: str) -> None:
    with pytest.raises(ParseError, match="invalid receive_resume_token"):
        decode_resume_token(bad)


def test_a_name_that_is_not_utf8_is_refused() -> None:
    packed = _packed(encode_resume_token({"toguid": 1, "toname": "tank/fs@\u00e9"}))
    with pytest.raises(ParseError):
        decode_resume_token(_checksummed(packed.replace("\u00e9".encode(), b"\xff\xfe")))
